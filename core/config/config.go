// Package config parses and validates Tollgate's YAML configuration. Every
// invalid value is refused at start with the key's path and the reason.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/sandbox"
)

// Config is the whole configuration. The YAML keys are part of Tollgate's
// interface: operators rely on them.
type Config struct {
	Gerrit     Gerrit         `yaml:"gerrit"`
	Trust      Trust          `yaml:"trust"`
	Vote       Vote           `yaml:"vote"`
	Jobs       map[string]Job `yaml:"jobs"`
	Timeouts   Timeouts       `yaml:"timeouts"`
	LogsTTL    Duration       `yaml:"logs_ttl"`
	Postsubmit Postsubmit     `yaml:"postsubmit"`
	Tasks      Tasks          `yaml:"tasks"`
	UI         UI             `yaml:"ui"`
	Cache      Cache          `yaml:"cache"`

	trusted *regexp.Regexp
}

// UI says who may use the web UI and the JSON API, and how. Roles: admin
// (everything, including quarantining and deleting workers), privileged
// (cancel, retry, recheck), user (read). Workers use the worker API, with
// tokens of their own.
type UI struct {
	Admins     []string `yaml:"admins"`     // emails with every role
	Privileged []string `yaml:"privileged"` // emails that may cancel, retry and recheck
	// Users may read; "*" lets anyone who reaches the server read, signed
	// in or not.
	Users []string `yaml:"users"`
	// LocalUser is who a request is when `tollgate up` listens on loopback
	// and the request names nobody. With no allow-list set it has every
	// role; otherwise it gets the roles the lists give its email.
	LocalUser string `yaml:"local_user"`
	// APITokensEnv names an environment variable holding a JSON object
	// mapping bearer tokens to emails, for scripts using the JSON API.
	APITokensEnv string `yaml:"api_tokens_env"`
	// TrustIAP takes the identity from Identity-Aware Proxy's
	// X-Goog-Authenticated-User-Email header. Set it only when every
	// request passes through IAP (the header is otherwise forgeable).
	TrustIAP bool `yaml:"trust_iap"`
	// XSRFKeyEnv names an environment variable holding the key of the
	// forms' XSRF tokens; unset, a random key is kept in the Store.
	XSRFKeyEnv string `yaml:"xsrf_key_env"`
}

// AllowListsSet reports whether any of the UI's allow-lists names someone.
func (u UI) AllowListsSet() bool { return len(u.Admins)+len(u.Privileged)+len(u.Users) > 0 }

// APITokens reads the bearer tokens of ui.api_tokens_env: token → email.
// None when the key is unset; an error when the variable is unset or is
// not a JSON object of non-empty tokens (at least 16 bytes) to emails.
func (c *Config) APITokens() (map[string]string, error) {
	const op = "config"
	if c.UI.APITokensEnv == "" {
		return nil, nil
	}
	raw := os.Getenv(c.UI.APITokensEnv)
	if raw == "" {
		return nil, errs.E(errs.InvalidArgument, op, "ui.api_tokens_env: %s is not set in the environment", c.UI.APITokensEnv)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, errs.E(errs.InvalidArgument, op, "ui.api_tokens_env: %s is not a JSON object of token to email: %v", c.UI.APITokensEnv, err)
	}
	for tok, email := range m {
		if len(tok) < 16 {
			return nil, errs.E(errs.InvalidArgument, op, "ui.api_tokens_env: %s holds a token shorter than 16 bytes", c.UI.APITokensEnv)
		}
		if !emailRE.MatchString(email) {
			return nil, errs.E(errs.InvalidArgument, op, "ui.api_tokens_env: %s maps a token to %q, not an email", c.UI.APITokensEnv, email)
		}
	}
	return m, nil
}

// XSRFKey returns the key of ui.xsrf_key_env, or nil when the key is unset.
func (c *Config) XSRFKey() ([]byte, error) {
	if c.UI.XSRFKeyEnv == "" {
		return nil, nil
	}
	v := os.Getenv(c.UI.XSRFKeyEnv)
	if len(v) < 16 {
		return nil, errs.E(errs.InvalidArgument, "config", "ui.xsrf_key_env: %s must hold at least 16 bytes", c.UI.XSRFKeyEnv)
	}
	return []byte(v), nil
}

// emailRE is a plausible email: what allow-lists and tokens name.
var emailRE = regexp.MustCompile(`^[^\s@]+@[^\s@]+$`)

// Gerrit says which Gerrit to watch and how.
type Gerrit struct {
	URL                   string   `yaml:"url"`
	Project               string   `yaml:"project"`
	Branches              []string `yaml:"branches"`
	UserEnv               string   `yaml:"user_env"`     // env var holding the HTTP user
	PasswordEnv           string   `yaml:"password_env"` // env var holding the HTTP password
	PollInterval          Duration `yaml:"poll_interval"`
	FullReconcileInterval Duration `yaml:"full_reconcile_interval"`
	MaxQPS                float64  `yaml:"max_qps"`
}

// Trust says whose patchsets get jobs.
type Trust struct {
	TrustedEmails string `yaml:"trusted_emails"` // a regular expression matched against the whole email
	ReadyLabel    string `yaml:"ready_label"`
}

// Vote says whether and how to vote.
type Vote struct {
	Enabled bool   `yaml:"enabled"`
	Label   string `yaml:"label"`
	UIURL   string `yaml:"ui_url"`
}

// Job is one job type.
type Job struct {
	Command    []string          `yaml:"command"`
	Env        map[string]string `yaml:"env"`
	Timeout    Duration          `yaml:"timeout"` // default: timeouts.job
	SkipVoting bool              `yaml:"skip_voting"`
	// Network is "" (the default: egress only through the worker's
	// filtering proxy, never to the metadata server or loopback) or "none"
	// (no network at all; the artifact cache stays reachable).
	Network string `yaml:"network"`
	// Require is the labels a worker must advertise (with these values)
	// to run the job type; none: any worker.
	Require map[string]string `yaml:"require"`
	// Expiry is how long a job may wait, queued, before it ends EXPIRED
	// (default: timeouts.expiry).
	Expiry Duration `yaml:"expiry"`
}

// Timeouts bound jobs, patchsets and workers.
type Timeouts struct {
	Job         Duration `yaml:"job"`
	CL          Duration `yaml:"cl"`
	WorkerDeath Duration `yaml:"worker_death"`
	// NoResource is the grace of a queued job no live worker could run: once
	// it has waited this long and no worker whose labels meet its
	// requirements has sent a heartbeat for this long, it ends NO_RESOURCE.
	NoResource Duration `yaml:"no_resource"`
	// Expiry is how long a job may wait, queued, before it ends EXPIRED
	// (jobs.NAME.expiry overrides it per job type).
	Expiry Duration `yaml:"expiry"`
}

// Postsubmit says how often branch heads are checked.
type Postsubmit struct {
	Interval Duration `yaml:"interval"`
}

// Tasks configures deferred task delivery.
type Tasks struct {
	MaxAttempts int `yaml:"max_attempts"`
}

// Cache configures the artifact cache shared by jobs: on the embedded
// runtime a directory under --data governed by the disk's free space, on
// Google Cloud a bucket governed by Quota.
type Cache struct {
	// Disabled turns the cache off (no TOLLGATE_CACHE_URL for jobs).
	Disabled bool `yaml:"disabled"`
	// When free space (or the quota's remainder) falls below MinHeadroom,
	// least recently used objects are evicted until it is MaxHeadroom.
	MinHeadroom Bytes `yaml:"min_headroom"`
	MaxHeadroom Bytes `yaml:"max_headroom"`
	// CleanupInterval is how often cache_cleanup runs from the tick.
	CleanupInterval Duration `yaml:"cleanup_interval"`
	// Bucket, Prefix, Quota and TouchInterval apply on Google Cloud; without
	// Bucket there is no cache there.
	Bucket        string   `yaml:"bucket"`
	Prefix        string   `yaml:"prefix"`
	Quota         Bytes    `yaml:"quota"`
	TouchInterval Duration `yaml:"touch_interval"`
}

// Bytes is a size written as "10GB", "512MiB" or a plain number of bytes.
type Bytes int64

// UnmarshalYAML parses a size.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("want a size such as 10GB or 512MiB")
	}
	v, err := humanize.ParseBytes(s)
	if err != nil || v > math.MaxInt64 {
		return fmt.Errorf("bad size %q: want a size such as 10GB or 512MiB", s)
	}
	*b = Bytes(v)
	return nil
}

// Duration is a time.Duration written as "90s", "15m", "3h" or "7d".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("want a duration such as 90s, 15m, 3h or 7d")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// ParseDuration is time.ParseDuration plus a "d" (24 h) suffix.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want a duration such as 90s, 15m, 3h or 7d", s)
	}
	return v, nil
}

// Defaults returns the values used for keys a file leaves out.
func Defaults() Config {
	return Config{
		Gerrit: Gerrit{
			Branches:              []string{"main"},
			PollInterval:          Duration(15 * time.Second),
			FullReconcileInterval: Duration(time.Hour),
			MaxQPS:                10,
		},
		Trust:      Trust{ReadyLabel: "Presubmit-Ready"},
		Vote:       Vote{Enabled: true, Label: "Code-Review"},
		Timeouts:   defaultTimeouts,
		LogsTTL:    Duration(30 * 24 * time.Hour),
		Postsubmit: Postsubmit{Interval: Duration(time.Hour)},
		Tasks:      Tasks{MaxAttempts: 5},
		UI:         UI{LocalUser: "local@localhost"},
		Cache: Cache{MinHeadroom: 2 << 30, MaxHeadroom: 10 << 30, CleanupInterval: Duration(15 * time.Minute),
			Prefix: "cache/", TouchInterval: Duration(time.Hour)},
	}
}

var defaultTimeouts = Timeouts{Job: Duration(45 * time.Minute), CL: Duration(3 * time.Hour), WorkerDeath: Duration(5 * time.Minute),
	NoResource: Duration(10 * time.Minute), Expiry: Duration(24 * time.Hour)}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, "config.Load", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse parses YAML over the defaults, refusing unknown keys, and validates.
func Parse(b []byte) (*Config, error) {
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, errs.Wrap(errs.InvalidArgument, "config", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every key; the error lists every problem, each with its key path.
func (c *Config) Validate() error {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }

	if c.Gerrit.URL == "" {
		bad("gerrit.url", "required")
	} else if u, err := url.Parse(c.Gerrit.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("gerrit.url", "want an http or https URL, got %q", c.Gerrit.URL)
	}
	if c.Gerrit.Project == "" {
		bad("gerrit.project", "required")
	}
	if len(c.Gerrit.Branches) == 0 {
		bad("gerrit.branches", "at least one branch is required")
	}
	for i, b := range c.Gerrit.Branches {
		if !model.ValidBranch(b) {
			bad(fmt.Sprintf("gerrit.branches[%d]", i), "%q is not a valid branch name", b)
		}
	}
	if c.Gerrit.PollInterval.D() < time.Second {
		bad("gerrit.poll_interval", "must be at least 1s")
	}
	if c.Gerrit.FullReconcileInterval.D() < c.Gerrit.PollInterval.D() {
		bad("gerrit.full_reconcile_interval", "must be at least gerrit.poll_interval")
	}
	if c.Gerrit.MaxQPS <= 0 || c.Gerrit.MaxQPS > 1000 {
		bad("gerrit.max_qps", "must be in (0, 1000]")
	}
	for _, k := range []struct{ key, v string }{{"gerrit.user_env", c.Gerrit.UserEnv}, {"gerrit.password_env", c.Gerrit.PasswordEnv}} {
		if k.v != "" && !envNameRE.MatchString(k.v) {
			bad(k.key, "%q is not an environment variable name", k.v)
		}
	}
	if (c.Gerrit.UserEnv == "") != (c.Gerrit.PasswordEnv == "") {
		bad("gerrit.user_env", "user_env and password_env go together")
	}

	if c.Trust.TrustedEmails == "" {
		bad("trust.trusted_emails", "required (a regular expression; '.*' trusts everyone)")
	} else if re, err := regexp.Compile("^(?:" + c.Trust.TrustedEmails + ")$"); err != nil {
		bad("trust.trusted_emails", "bad regular expression: %v", err)
	} else {
		c.trusted = re
	}
	if c.Trust.ReadyLabel == "" {
		bad("trust.ready_label", "required")
	}

	if c.Vote.Label == "" {
		bad("vote.label", "required")
	}
	if c.Vote.UIURL != "" {
		if u, err := url.Parse(c.Vote.UIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("vote.ui_url", "want an http or https URL, got %q", c.Vote.UIURL)
		}
	}

	if len(c.Jobs) == 0 {
		bad("jobs", "at least one job type is required")
	}
	for _, name := range c.JobNames() {
		j := c.Jobs[name]
		key := "jobs." + name
		if !model.ValidJobType(name) {
			bad(key, "job type names are lower-case letters, digits, '.', '_' and single '-'")
		}
		if len(j.Command) == 0 || j.Command[0] == "" {
			bad(key+".command", "required: the argv to run")
		}
		for k := range j.Env {
			if !envNameRE.MatchString(k) {
				bad(key+".env", "%q is not an environment variable name", k)
			} else if strings.HasPrefix(k, "TOLLGATE_") {
				bad(key+".env", "%q: TOLLGATE_ variables are set by the worker", k)
			}
		}
		if j.Timeout < 0 {
			bad(key+".timeout", "must not be negative")
		}
		if j.Network != sandbox.NetworkProxy && j.Network != sandbox.NetworkNone {
			bad(key+".network", "want none, or leave it unset for egress through the worker's proxy; got %q", j.Network)
		}
		for _, k := range slices.Sorted(maps.Keys(j.Require)) {
			if !model.ValidLabel(k) || !model.ValidLabel(j.Require[k]) {
				bad(key+".require."+k, "label keys and values are 1-63 of letters, digits, '_', '.', ':', '/' and '-', starting with a letter or digit; got %q: %q", k, j.Require[k])
			}
		}
		if j.Expiry != 0 && j.Expiry.D() < 10*time.Second {
			bad(key+".expiry", "must be at least 10s")
		}
	}

	if c.Timeouts.Job.D() <= 0 {
		bad("timeouts.job", "must be positive")
	}
	if c.Timeouts.CL.D() <= 0 {
		bad("timeouts.cl", "must be positive")
	}
	if c.Timeouts.WorkerDeath.D() < 10*time.Second {
		bad("timeouts.worker_death", "must be at least 10s (workers heartbeat every 10s)")
	}
	if c.Timeouts.NoResource.D() < 30*time.Second {
		bad("timeouts.no_resource", "must be at least 30s (workers heartbeat every 10s)")
	}
	if c.Timeouts.Expiry.D() < 10*time.Second {
		bad("timeouts.expiry", "must be at least 10s")
	}
	// Short TTLs are for tests and demos (the end-to-end suite expires
	// logs in seconds); production keeps days.
	if c.LogsTTL.D() < 10*time.Second {
		bad("logs_ttl", "must be at least 10s")
	}
	if c.Postsubmit.Interval.D() < time.Minute {
		bad("postsubmit.interval", "must be at least 1m")
	}
	if c.Tasks.MaxAttempts < 1 || c.Tasks.MaxAttempts > 100 {
		bad("tasks.max_attempts", "must be 1 to 100")
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"ui.admins", c.UI.Admins}, {"ui.privileged", c.UI.Privileged}, {"ui.users", c.UI.Users}} {
		for i, e := range l.list {
			if e == "*" && l.key == "ui.users" {
				continue
			}
			if !emailRE.MatchString(e) {
				hint := ""
				if e == "*" {
					hint = " (\"*\" is allowed in ui.users only)"
				}
				bad(fmt.Sprintf("%s[%d]", l.key, i), "%q is not an email%s", e, hint)
			}
		}
	}
	if !emailRE.MatchString(c.UI.LocalUser) {
		bad("ui.local_user", "%q is not an email", c.UI.LocalUser)
	}
	for _, k := range []struct{ key, v string }{{"ui.api_tokens_env", c.UI.APITokensEnv}, {"ui.xsrf_key_env", c.UI.XSRFKeyEnv}} {
		if k.v != "" && !envNameRE.MatchString(k.v) {
			bad(k.key, "%q is not an environment variable name", k.v)
		}
	}
	if c.Cache.MinHeadroom < 0 || c.Cache.MaxHeadroom <= c.Cache.MinHeadroom {
		bad("cache.max_headroom", "must exceed cache.min_headroom")
	}
	if c.Cache.CleanupInterval.D() < time.Minute {
		bad("cache.cleanup_interval", "must be at least 1m")
	}
	if c.Cache.Bucket != "" && c.Cache.Quota <= c.Cache.MaxHeadroom {
		bad("cache.quota", "required with cache.bucket, and larger than cache.max_headroom")
	}
	if c.Cache.TouchInterval.D() < time.Second {
		bad("cache.touch_interval", "must be at least 1s (Cloud Storage allows one metadata update per object per second)")
	}
	if len(p) > 0 {
		sort.Strings(p)
		return errs.E(errs.InvalidArgument, "config", "invalid configuration:\n  %s", strings.Join(p, "\n  "))
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// JobNames returns the job types in sorted order.
func (c *Config) JobNames() []string {
	names := make([]string, 0, len(c.Jobs))
	for n := range c.Jobs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Trusted reports whether email matches trust.trusted_emails.
func (c *Config) Trusted(email string) bool {
	if c.trusted == nil {
		if re, err := regexp.Compile("^(?:" + c.Trust.TrustedEmails + ")$"); err == nil {
			c.trusted = re
		}
	}
	return email != "" && c.trusted != nil && c.trusted.MatchString(email)
}

// JobTimeout returns the timeout of job type name.
func (c *Config) JobTimeout(name string) time.Duration {
	if j, ok := c.Jobs[name]; ok && j.Timeout > 0 {
		return j.Timeout.D()
	}
	return c.Timeouts.Job.D()
}

// JobExpiry returns how long a job of type name may wait, queued.
func (c *Config) JobExpiry(name string) time.Duration {
	if j, ok := c.Jobs[name]; ok && j.Expiry > 0 {
		return j.Expiry.D()
	}
	return c.Timeouts.Expiry.D()
}

// PoolsFor returns the pools (model.PoolOf of a job type's require) of
// the configured job types whose requirements labels meet, sorted: the
// queue pools a worker with these labels claims from.
func (c *Config) PoolsFor(labels map[string]string) []string {
	var out []string
	for _, j := range c.Jobs {
		if model.Meets(labels, j.Require) {
			out = append(out, model.PoolOf(j.Require))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Credentials returns the Gerrit user and password from the environment
// variables the config names ("" when none are named).
func (c *Config) Credentials() (user, password string, err error) {
	if c.Gerrit.UserEnv == "" {
		return "", "", nil
	}
	user, password = os.Getenv(c.Gerrit.UserEnv), os.Getenv(c.Gerrit.PasswordEnv)
	if user == "" || password == "" {
		return "", "", errs.E(errs.InvalidArgument, "config", "gerrit.user_env %s and gerrit.password_env %s must both be set in the environment", c.Gerrit.UserEnv, c.Gerrit.PasswordEnv)
	}
	return user, password, nil
}
