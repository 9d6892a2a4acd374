package sandbox_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/sandbox"
	"github.com/tollgate-ci/tollgate/core/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

// probeScript tries each way out of the sandbox and prints one line per
// attempt: "NAME: ok" when it got through, "NAME: blocked" when not.
const probeScript = `
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: ok"; else echo "$name: blocked"; fi; }
try read-token cat "$SECRET_FILE"
try list-state ls "$STATE_DIR"
if env | grep -q TOLLGATE_WORKER_SECRET; then echo "env-secret: ok"; else echo "env-secret: blocked"; fi
try metadata-direct curl -sf --noproxy '*' -m 3 "http://$METADATA/computeMetadata/v1/"
# The stand-ins listen on loopback, which NO_PROXY sends direct: go
# through the proxy (when the job has one) by dropping NO_PROXY.
px() { env -u NO_PROXY -u no_proxy "$@"; }
try metadata-proxy px curl -sf -m 3 "http://$METADATA/computeMetadata/v1/"
try metadata-ip px curl -sf -m 3 -H 'Metadata-Flavor: Google' http://169.254.169.254/computeMetadata/v1/
try worker-api curl -sf --noproxy '*' -m 3 "http://$WORKER_API/healthz"
try worker-api-proxy px curl -sf -m 3 "http://$WORKER_API/healthz"
try internet px curl -sf -m 5 "http://$INTERNET/"
try internet-tls-tunnel px curl -sf -m 5 -p "http://$INTERNET/"
try service curl -sf -m 3 "http://$SERVICE/"
echo "uid: $(id -u)"
echo built > output.txt && echo "work: ok"
`

func TestBwrapKeepsTheWorkerOut(t *testing.T) {
	sb, root := newBwrap(t)
	got := runProbes(t, sb, root, sandbox.NetworkProxy)
	want := map[string]string{
		"read-token": "blocked", "list-state": "blocked", "env-secret": "blocked",
		"metadata-direct": "blocked", "metadata-proxy": "blocked", "metadata-ip": "blocked",
		"worker-api": "blocked", "worker-api-proxy": "blocked",
		"internet": "ok", "internet-tls-tunnel": "ok", "service": "ok", "work": "ok",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if got["uid"] == "0" {
		t.Errorf("the job ran as uid 0")
	}
}

func TestNetworkNoneCutsEverythingButServices(t *testing.T) {
	sb, root := newBwrap(t)
	got := runProbes(t, sb, root, sandbox.NetworkNone)
	for k, v := range map[string]string{"internet": "blocked", "internet-tls-tunnel": "blocked",
		"metadata-ip": "blocked", "service": "ok", "work": "ok", "read-token": "blocked"} {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}

// newBwrap returns a bwrap sandbox rooted in a new directory.
func newBwrap(t *testing.T) (*sandbox.Sandbox, string) {
	t.Helper()
	sandboxtest.NeedBwrap(t)
	root := sandboxtest.Dir(t)
	sb, err := sandbox.New(sandbox.Options{Mode: sandbox.ModeBwrap, Root: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	return sb, root
}

// TestNoSandboxLeaks is the control: the same probes without a sandbox
// get through, so the tests above would notice a leak.
func TestNoSandboxLeaks(t *testing.T) {
	root := sandboxtest.Dir(t)
	sb, err := sandbox.New(sandbox.Options{Mode: sandbox.ModeNone, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	got := runProbes(t, sb, root, sandbox.NetworkProxy)
	for _, k := range []string{"read-token", "list-state", "metadata-direct", "worker-api"} {
		if got[k] != "ok" {
			t.Errorf("unsandboxed %s: %q, want ok", k, got[k])
		}
	}
}

// runProbes runs probeScript in a job of sb and returns its answers.
func runProbes(t *testing.T, sb *sandbox.Sandbox, root, network string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	// The worker's private state: a token file the job must not read.
	state := t.TempDir()
	secret := filepath.Join(state, "worker-token")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOLLGATE_WORKER_SECRET", "s3cret")
	metadata := serve(t, "metadata: the service account token")
	workerAPI := serve(t, "ok")
	internet := serve(t, "hello from the internet")

	dir := filepath.Join(root, "job")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := sb.Chown(dir); err != nil {
		t.Fatal(err)
	}
	j, err := sb.NewJob(sandbox.JobSpec{Dir: dir, Network: network})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// A service the worker offers the job (like the artifact cache).
	sln, service, err := j.Listen(48101)
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(sln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "service") }))
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "SECRET_FILE=" + secret, "STATE_DIR=" + state,
		"METADATA=" + metadata, "WORKER_API=" + workerAPI, "INTERNET=" + internet, "SERVICE=" + service}
	if network == sandbox.NetworkProxy && sb.Mode() == sandbox.ModeBwrap {
		pln, paddr, err := j.Listen(sandbox.ProxyPort)
		if err != nil {
			t.Fatal(err)
		}
		p := &sandbox.EgressProxy{Allow: []string{internet}}
		go http.Serve(pln, p)
		env = append(env, sandbox.ProxyEnv(paddr)...)
	}
	cmd := j.Command([]string{"/bin/sh", "-c", probeScript}, env, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	t.Logf("probe output:\n%s", out)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			got[k] = v
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "output.txt")); err != nil || string(b) != "built\n" {
		t.Errorf("the job's own output: %q, %v", b, err)
	}
	return got
}

func serve(t *testing.T, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

// TestStopSignals: SIGTERM to the job's process group reaches the job,
// which gets to clean up, and the sandbox reports its status.
func TestStopSignals(t *testing.T) {
	sb, root := newBwrap(t)
	dir := filepath.Join(root, "job")
	os.MkdirAll(dir, 0o755)
	sb.Chown(dir)
	j, err := sb.NewJob(sandbox.JobSpec{Dir: dir, Network: sandbox.NetworkNone})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	script := `trap 'echo cleaned > cleanup.txt; exit 7' TERM; echo ready > ready.txt; while :; do sleep 0.05; done`
	cmd := j.Command([]string{"/bin/sh", "-c", script}, []string{"PATH=/usr/bin:/bin"}, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready.txt")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("exit code %d (%v), want the job's own 7", code, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "cleanup.txt")); string(b) != "cleaned\n" {
		t.Errorf("the job's TERM trap did not run: %q", b)
	}
}

func TestUnreachableRootIsRefused(t *testing.T) {
	sandboxtest.NeedBwrap(t)
	if os.Geteuid() != 0 {
		t.Skip("only a root worker switches users")
	}
	private := t.TempDir() // 0700, root's
	_, err := sandbox.New(sandbox.Options{Mode: sandbox.ModeBwrap, Root: filepath.Join(private, "work"), UID: -1, GID: -1})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("New in a private directory: %v, want a clear refusal", err)
	}
}

func TestEgressProxyRefusesForbiddenDestinations(t *testing.T) {
	internet := serve(t, "hello")
	var refused []string
	p := &sandbox.EgressProxy{Allow: []string{internet}, Refused: func(dest, why string) { refused = append(refused, dest) }}
	srv := httptest.NewServer(p)
	defer srv.Close()
	pu, _ := url.Parse(srv.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 10 * time.Second}
	_, port, _ := net.SplitHostPort(internet)
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"http://" + internet + "/", 200},
		{"http://localhost:" + port + "/", 403}, // the same server by a name: not on the allow-list
		{"http://169.254.169.254/computeMetadata/v1/", 403},
		{"http://[::ffff:169.254.169.254]/", 403},
		{"http://0.0.0.0:" + port + "/", 403},
	} {
		resp, err := client.Get(tc.url)
		if err != nil {
			t.Errorf("GET %s: %v", tc.url, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, resp.StatusCode, tc.want)
		}
	}
	// CONNECT to a forbidden address is refused before any tunnel exists.
	c, err := net.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("CONNECT to the metadata server: %v %v, want 403", resp, err)
	}
	if len(refused) < 4 {
		t.Errorf("refusals reported: %q", refused)
	}
}
