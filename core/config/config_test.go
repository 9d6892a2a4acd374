package config

import (
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

const good = `
gerrit:
  url: https://review.example.com
  project: platform/foo
  branches: [main, release/v2]
  user_env: GERRIT_USER
  password_env: GERRIT_PASSWORD
  poll_interval: 30s
trust:
  trusted_emails: '.*@example\.com|bot@partner\.org'
vote:
  ui_url: https://ci.example.com
jobs:
  linux-clang:
    command: [tools/ci, linux-clang]
    env: {CC: clang}
    timeout: 1h
  lint:
    command: [tools/lint]
    skip_voting: true
logs_ttl: 7d
tasks: {max_attempts: 8}
`

func TestParseGoodConfigWithDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Gerrit.PollInterval.D() != 30*time.Second || c.Gerrit.FullReconcileInterval.D() != time.Hour || c.Gerrit.MaxQPS != 10 {
		t.Errorf("gerrit = %+v", c.Gerrit)
	}
	if c.Trust.ReadyLabel != "Presubmit-Ready" || c.Vote.Label != "Code-Review" || !c.Vote.Enabled {
		t.Errorf("defaults not applied: %+v %+v", c.Trust, c.Vote)
	}
	if c.JobTimeout("linux-clang") != time.Hour || c.JobTimeout("lint") != 45*time.Minute {
		t.Errorf("job timeouts %v %v", c.JobTimeout("linux-clang"), c.JobTimeout("lint"))
	}
	if c.LogsTTL.D() != 7*24*time.Hour || c.Tasks.MaxAttempts != 8 {
		t.Errorf("logs_ttl %v max_attempts %d", c.LogsTTL.D(), c.Tasks.MaxAttempts)
	}
	if c2, err := Parse([]byte(strings.Replace(good, "logs_ttl: 7d", "logs_ttl: 10s", 1))); err != nil || c2.LogsTTL.D() != 10*time.Second {
		t.Errorf("logs_ttl 10s (the minimum, for tests): %v, %v", c2, err)
	}
	for email, want := range map[string]bool{"a@example.com": true, "bot@partner.org": true, "a@example.com.evil": false, "evil@partner.org": false, "": false} {
		if c.Trusted(email) != want {
			t.Errorf("Trusted(%q) = %v", email, !want)
		}
	}
	if c.Cache.MinHeadroom != 2<<30 || c.Cache.MaxHeadroom != 10<<30 || c.Cache.Bucket != "" {
		t.Errorf("cache defaults = %+v", c.Cache)
	}
	if c2, err := Parse([]byte(good + "cache: {min_headroom: 512MiB, max_headroom: 3GB, bucket: b, quota: 100GB}\n")); err != nil ||
		c2.Cache.MinHeadroom != 512<<20 || c2.Cache.MaxHeadroom != 3e9 || c2.Cache.Quota != 100e9 {
		t.Errorf("cache sizes: %+v, %v", c2.Cache, err)
	}
	if got := c.JobNames(); strings.Join(got, ",") != "lint,linux-clang" {
		t.Errorf("JobNames = %v", got)
	}
}

func TestInvalidValuesNameTheirKey(t *testing.T) {
	for _, tc := range []struct{ edit, key string }{
		{"url: https://review.example.com => url: ftp://x", "gerrit.url"},
		{"project: platform/foo => project: ''", "gerrit.project"},
		{"branches: [main, release/v2] => branches: ['../x']", "gerrit.branches[0]"},
		{"poll_interval: 30s => poll_interval: 10ms", "gerrit.poll_interval"},
		{"poll_interval: 30s => poll_interval: soon", "soon"},
		{`trusted_emails: '.*@example\.com|bot@partner\.org' => trusted_emails: '(['`, "trust.trusted_emails"},
		{"command: [tools/lint] => command: []", "jobs.lint.command"},
		{"CC: clang => TOLLGATE_JOB_ID: x", "jobs.linux-clang.env"},
		{"linux-clang: => Linux--Clang:", "jobs.Linux--Clang"},
		{"max_attempts: 8 => max_attempts: 0", "tasks.max_attempts"},
		{"logs_ttl: 7d => logs_ttl: 9s", "logs_ttl"},
		{"ui_url: https://ci.example.com => ui_url: javascript:alert(1)", "vote.ui_url"},
		{"password_env: GERRIT_PASSWORD => password_env: ''", "gerrit.user_env"},
		{"logs_ttl: 7d => logs_ttl: 7d\nsurprise: 1", "surprise"},
		{"logs_ttl: 7d => logs_ttl: 7d\ncache: {min_headroom: 5GB, max_headroom: 1GB}", "cache.max_headroom"},
		{"logs_ttl: 7d => logs_ttl: 7d\ncache: {min_headroom: lots}", "bad size"},
		{"logs_ttl: 7d => logs_ttl: 7d\ncache: {bucket: b}", "cache.quota"},
		{"skip_voting: true => skip_voting: true\n    require: {os: 'a,b'}", "jobs.lint.require.os"},
		{"skip_voting: true => skip_voting: true\n    require: {'': linux}", "jobs.lint.require."},
		{"skip_voting: true => skip_voting: true\n    expiry: 1s", "jobs.lint.expiry"},
		{"logs_ttl: 7d => logs_ttl: 7d\ntimeouts: {no_resource: 5s}", "timeouts.no_resource"},
		{"logs_ttl: 7d => logs_ttl: 7d\ntimeouts: {expiry: 0s}", "timeouts.expiry"},
	} {
		old, new, _ := strings.Cut(tc.edit, " => ")
		if !strings.Contains(good, old) {
			t.Fatalf("test edit %q does not apply", old)
		}
		_, err := Parse([]byte(strings.Replace(good, old, new, 1)))
		if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: err = %v, want InvalidArgument naming %q", tc.edit, err, tc.key)
		}
	}
}

func TestEmptyConfigListsEveryRequiredKey(t *testing.T) {
	_, err := Parse(nil)
	for _, key := range []string{"gerrit.url", "gerrit.project", "trust.trusted_emails", "jobs"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("empty config: %v, want it to name %s", err, key)
		}
	}
}

func TestCredentialsComeFromTheEnvironment(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GERRIT_USER", "bot")
	t.Setenv("GERRIT_PASSWORD", "")
	if _, _, err := c.Credentials(); !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "GERRIT_PASSWORD") {
		t.Errorf("missing password: %v", err)
	}
	t.Setenv("GERRIT_PASSWORD", "pw")
	if u, p, err := c.Credentials(); err != nil || u != "bot" || p != "pw" {
		t.Errorf("got %q %q %v", u, p, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(""))
	f.Add([]byte("gerrit: {url: 'http://x', project: p}\njobs: {a: {command: [x]}}\ntrust: {trusted_emails: '.*'}"))
	f.Add([]byte("logs_ttl: 99999999999d"))
	f.Add([]byte("jobs: {a: {timeout: -5s, command: [x]}}"))
	f.Add([]byte("jobs: {a: {command: [x], network: none, require: {os: linux, 'p=q': 'a,b'}, expiry: 1h}}"))
	f.Add([]byte("jobs: {a: {command: [x], network: host}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("error without InvalidArgument: %v", err)
			}
			return
		}
		// Whatever is accepted is usable as is.
		if len(c.Jobs) == 0 || c.Gerrit.PollInterval.D() < time.Second || c.Tasks.MaxAttempts < 1 {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
		for _, n := range c.JobNames() {
			j := c.Jobs[n]
			if len(j.Command) == 0 {
				t.Fatalf("job %s without a command", n)
			}
			if j.Network != sandbox.NetworkProxy && j.Network != sandbox.NetworkNone {
				t.Fatalf("job %s with network %q", n, j.Network)
			}
			for k, v := range j.Require {
				if strings.ContainsAny(k+v, ",=") {
					t.Fatalf("job %s requires an ambiguous label %q=%q", n, k, v)
				}
			}
		}
	})
}

func TestUIKeys(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.UI.LocalUser != "local@localhost" || c.UI.AllowListsSet() || c.UI.TrustIAP {
		t.Errorf("ui defaults: %+v", c.UI)
	}
	withUI := good + `
ui:
  admins: [ada@example.com]
  privileged: [pat@example.com]
  users: ["*"]
  local_user: me@laptop
  api_tokens_env: TOLLGATE_API_TOKENS
  trust_iap: true
  xsrf_key_env: TOLLGATE_XSRF_KEY
`
	if c, err = Parse([]byte(withUI)); err != nil {
		t.Fatal(err)
	}
	if !c.UI.AllowListsSet() || c.UI.Users[0] != "*" || !c.UI.TrustIAP || c.UI.LocalUser != "me@laptop" {
		t.Errorf("ui = %+v", c.UI)
	}
	for _, tc := range []struct{ edit, key string }{
		{"admins: [ada@example.com] => admins: ['*']", "ui.admins[0]"},
		{"privileged: [pat@example.com] => privileged: [pat]", "ui.privileged[0]"},
		{`users: ["*"] => users: ["*", "a b@c"]`, "ui.users[1]"},
		{"local_user: me@laptop => local_user: ''", "ui.local_user"},
		{"api_tokens_env: TOLLGATE_API_TOKENS => api_tokens_env: 1X", "ui.api_tokens_env"},
		{"xsrf_key_env: TOLLGATE_XSRF_KEY => xsrf_key_env: $K", "ui.xsrf_key_env"},
		{"trust_iap: true => trust_iap: true\n  roles: {}", "roles"},
	} {
		old, new, _ := strings.Cut(tc.edit, " => ")
		if !strings.Contains(withUI, old) {
			t.Fatalf("test edit %q does not apply", old)
		}
		_, err := Parse([]byte(strings.Replace(withUI, old, new, 1)))
		if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: err = %v, want InvalidArgument naming %q", tc.edit, err, tc.key)
		}
	}

	t.Setenv("TOLLGATE_API_TOKENS", "")
	if _, err := c.APITokens(); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("unset tokens variable: %v", err)
	}
	for _, bad := range []string{"[]", `{"short": "a@x"}`, `{"0123456789abcdef": "nobody"}`} {
		t.Setenv("TOLLGATE_API_TOKENS", bad)
		if _, err := c.APITokens(); !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "ui.api_tokens_env") {
			t.Errorf("tokens %s: %v", bad, err)
		}
	}
	t.Setenv("TOLLGATE_API_TOKENS", `{"0123456789abcdef": "bot@example.com"}`)
	if m, err := c.APITokens(); err != nil || m["0123456789abcdef"] != "bot@example.com" {
		t.Errorf("tokens: %v, %v", m, err)
	}
	t.Setenv("TOLLGATE_XSRF_KEY", "short")
	if _, err := c.XSRFKey(); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("short xsrf key: %v", err)
	}
	t.Setenv("TOLLGATE_XSRF_KEY", "a-long-enough-secret-key")
	if k, err := c.XSRFKey(); err != nil || string(k) != "a-long-enough-secret-key" {
		t.Errorf("xsrf key: %q, %v", k, err)
	}
}

func TestRequireAndExpiry(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeouts.NoResource.D() != 10*time.Minute || c.Timeouts.Expiry.D() != 24*time.Hour || c.JobExpiry("lint") != 24*time.Hour {
		t.Errorf("defaults: no_resource %v, expiry %v", c.Timeouts.NoResource.D(), c.Timeouts.Expiry.D())
	}
	withLabels := strings.Replace(good, "    skip_voting: true\n", `    skip_voting: true
    require: {os: linux, pool: large}
    expiry: 2h
  mac:
    command: [tools/ci, mac]
    require: {os: mac}
timeouts: {no_resource: 5m, expiry: 12h}
`, 1)
	if c, err = Parse([]byte(withLabels)); err != nil {
		t.Fatal(err)
	}
	if c.Jobs["lint"].Require["pool"] != "large" || c.JobExpiry("lint") != 2*time.Hour || c.JobExpiry("mac") != 12*time.Hour ||
		c.JobExpiry("gone") != 12*time.Hour || c.Timeouts.NoResource.D() != 5*time.Minute {
		t.Errorf("require %v, expiries %v %v, no_resource %v", c.Jobs["lint"].Require, c.JobExpiry("lint"), c.JobExpiry("mac"), c.Timeouts.NoResource.D())
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""}, // linux-clang requires nothing
		{map[string]string{"os": "linux"}, ""},
		{map[string]string{"os": "linux", "pool": "large", "zone": "b"}, ",os=linux,pool=large"},
		{map[string]string{"os": "mac"}, ",os=mac"},
	} {
		if got := strings.Join(c.PoolsFor(tc.labels), ","); got != tc.want {
			t.Errorf("PoolsFor(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}
