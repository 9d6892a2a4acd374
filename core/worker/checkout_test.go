//go:build linux

package worker

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"github.com/tollgate-ci/tollgate/core/sandbox/sandboxtest"
	"github.com/tollgate-ci/tollgate/emulators/gerrit"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

// gitHost is a fake Gerrit serving real git, behind a proxy that counts
// the bytes fetched.
type gitHost struct {
	g       *gerrit.Server
	url     string
	fetched atomic.Int64
	// stall, while set, holds every git request until it is closed.
	stall atomic.Pointer[chan struct{}]
	// down answers every git request 503 while set.
	down atomic.Bool
}

func newGitHost(t testing.TB) *gitHost {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	g := gerrit.New(gerrit.Options{User: "tollgate", Password: "gerrit-pw"})
	addr, err := g.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	h := &gitHost{g: g}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	target, _ := url.Parse(addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		r.Body = &countingBody{r.Body, &h.fetched}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.down.Load() {
			http.Error(w, "Gerrit is restarting", http.StatusServiceUnavailable)
			return
		}
		if c := h.stall.Load(); c != nil {
			select {
			case <-*c:
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// change creates a change of project "demo" on main writing files, and
// returns an assignment for it running script.
func (h *gitHost) change(t *testing.T, files map[string]string, script string) *fleet.Assignment {
	t.Helper()
	ps, err := h.g.CreateChange(gerrit.ChangeSpec{Project: "demo", Branch: "main", Subject: "a change",
		OwnerEmail: "dev@example.com", Files: files})
	if err != nil {
		t.Fatal(err)
	}
	a := assign("build", script, 0)
	a.Job.ID = model.JobID(t0, model.PatchsetSrc(ps.Change, ps.Number), "build")
	a.Job.Src = model.PatchsetSrc(ps.Change, ps.Number)
	a.Checkout = &fleet.Checkout{
		Checkout: model.Checkout{Project: "demo", Branch: "main", Ref: ps.Ref, Revision: ps.Revision, Merge: true},
		URL:      h.url + "/demo", AuthURL: h.url + "/a/demo"}
	return a
}

func (h *gitHost) branch(t *testing.T, files map[string]string) string {
	t.Helper()
	rev, err := h.g.CreateBranch("demo", "main", gerrit.CommitSpec{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func (h *gitHost) move(t *testing.T, files map[string]string) string {
	t.Helper()
	rev, err := h.g.MoveBranch("demo", "main", gerrit.CommitSpec{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestCheckoutMergesOntoBranchHead: the job runs in a work tree holding
// the change merged onto the branch as it is now (which moved since the
// change was uploaded), and its env names both commits.
func TestCheckoutMergesOntoBranchHead(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	a := h.change(t, map[string]string{"feature.txt": "the change\n"}, `set -e
cat feature.txt later.txt
test "$(git rev-parse HEAD^1)" = "$TOLLGATE_BASE_REVISION"
test "$(git rev-parse HEAD^2)" = "$TOLLGATE_REVISION"
test "$(pwd)" = "$TOLLGATE_SRC_DIR"
echo "url=$TOLLGATE_GIT_URL ref=$TOLLGATE_GIT_REF"
git status --porcelain | wc -l`)
	head := h.move(t, map[string]string{"later.txt": "landed after the upload\n"})
	f := newFake(a)
	start(t, f, nil)
	r := waitResult(t, f, a.Job.ID, 30*time.Second)
	log := f.log(a.Job.ID)
	if r.State != model.Completed {
		t.Fatalf("ended %s (%s), log:\n%s", r.State, r.Reason, log)
	}
	for _, want := range []string{"the change\nlanded after the upload\n", "url=" + h.url + "/demo ref=" + a.Checkout.Ref,
		"patchset " + a.Checkout.Ref + " onto main at " + head[:12], "\n0\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestCheckoutConflictFailsTheJob: a change that does not merge ends
// FAILED, naming the files, without running the command.
func TestCheckoutConflictFailsTheJob(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	a := h.change(t, map[string]string{"main.txt": "the change's version\n"}, `echo RAN`)
	h.move(t, map[string]string{"main.txt": "the branch's version\n"})
	f := newFake(a)
	start(t, f, nil)
	r := waitResult(t, f, a.Job.ID, 30*time.Second)
	log := f.log(a.Job.ID)
	if r.State != model.Failed || !strings.Contains(r.Reason, "merge conflict") || !strings.Contains(r.Reason, "main.txt") {
		t.Fatalf("ended %s (%q), want FAILED with a merge conflict in main.txt; log:\n%s", r.State, r.Reason, log)
	}
	if strings.Contains(log, "RAN") || !strings.Contains(log, "conflicting files:\n[tollgate]   main.txt") {
		t.Errorf("log:\n%s", log)
	}
}

// TestCheckoutPostsubmit: a branch commit is tested as it is.
func TestCheckoutPostsubmit(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	rev := h.move(t, map[string]string{"next.txt": "next\n"})
	h.move(t, map[string]string{"after.txt": "moved on since\n"})
	a := assign("post", `test "$(git rev-parse HEAD)" = "$TOLLGATE_REVISION" && test -f next.txt && test ! -f after.txt && echo OK`, 0)
	a.Checkout = &fleet.Checkout{Checkout: model.Checkout{Project: "demo", Branch: "main", Ref: "refs/heads/main", Revision: rev},
		URL: h.url + "/demo", AuthURL: h.url + "/a/demo"}
	f := newFake(a)
	start(t, f, nil)
	if r := waitResult(t, f, a.Job.ID, 30*time.Second); r.State != model.Completed {
		t.Fatalf("ended %s (%s), log:\n%s", r.State, r.Reason, f.log(a.Job.ID))
	}
}

// TestCheckoutMirrorMovesOnlyNewObjects: the second job of a worker
// fetches the new change, not the repository again.
func TestCheckoutMirrorMovesOnlyNewObjects(t *testing.T) {
	h := newGitHost(t)
	big := make([]byte, 1<<20)
	rand.Read(big)
	h.branch(t, map[string]string{"big.bin": hex.EncodeToString(big)}) // 2 MiB that compress badly
	a1 := h.change(t, map[string]string{"one.txt": "1\n"}, `test -f one.txt`)
	a2 := h.change(t, map[string]string{"two.txt": "2\n"}, `test -f two.txt && test ! -f one.txt`)
	f := newFake(a1)
	w, _, _ := start(t, f, func(o *Options) { o.KeepWorkDirs = true })
	if r := waitResult(t, f, a1.Job.ID, 30*time.Second); r.State != model.Completed {
		t.Fatalf("first job %s, log:\n%s", r.State, f.log(a1.Job.ID))
	}
	first := h.fetched.Swap(0)
	f.do(func(f *fakeFleet) { f.queue = append(f.queue, a2) })
	if r := waitResult(t, f, a2.Job.ID, 30*time.Second); r.State != model.Completed {
		t.Fatalf("second job %s, log:\n%s", r.State, f.log(a2.Job.ID))
	}
	second := h.fetched.Load()
	t.Logf("fetched %d bytes for the first job, %d for the second; second log:\n%s", first, second, f.log(a2.Job.ID))
	if first < 1<<20 || second > first/20 {
		t.Errorf("fetched %d then %d bytes: the second checkout should move only the new change", first, second)
	}
	// Each job got a clean work tree of its own.
	if _, err := os.Stat(filepath.Join(w.workDir, a2.Job.ID+"-a1", "src", "one.txt")); !os.IsNotExist(err) {
		t.Errorf("the first job's file is in the second's tree: %v", err)
	}
}

// TestCancelDuringCheckout: a job cancelled while its fetch hangs ends
// CANCELLED at once, without waiting for Gerrit or running the command.
func TestCancelDuringCheckout(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	a := h.change(t, nil, `echo RAN`)
	stall := make(chan struct{})
	h.stall.Store(&stall)
	defer close(stall)
	f := newFake(a)
	start(t, f, nil)
	eventually(t, 10*time.Second, func() bool { return strings.Contains(f.log(a.Job.ID), "$ git fetch") }, "the fetch to start")
	began := time.Now()
	f.do(func(f *fakeFleet) { f.cancel = append(f.cancel, a.Job.ID) })
	r := waitResult(t, f, a.Job.ID, 10*time.Second)
	if r.State != model.Cancelled || strings.Contains(f.log(a.Job.ID), "RAN") {
		t.Fatalf("ended %s (%q), want CANCELLED without running; log:\n%s", r.State, r.Reason, f.log(a.Job.ID))
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("cancelled after %v", d)
	}
}

// TestCheckoutWaitsOutAGerritOutage: a fetch failing while Gerrit is down
// is retried, and the job passes once Gerrit is back, in its first attempt.
func TestCheckoutWaitsOutAGerritOutage(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	a := h.change(t, map[string]string{"feature.txt": "x\n"}, `test -f feature.txt`)
	h.down.Store(true)
	f := newFake(a)
	start(t, f, nil)
	eventually(t, 10*time.Second, func() bool { return strings.Contains(f.log(a.Job.ID), "git fetch failed") }, "a failed fetch")
	h.down.Store(false)
	r := waitResult(t, f, a.Job.ID, 60*time.Second)
	if r.State != model.Completed {
		t.Fatalf("ended %s (%q), log:\n%s", r.State, r.Reason, f.log(a.Job.ID))
	}
	if !strings.Contains(f.log(a.Job.ID), "503") {
		t.Errorf("the log does not say why the fetch failed:\n%s", f.log(a.Job.ID))
	}

	// Past its patience the attempt ends INTERRUPTED, naming the fetch.
	b := h.change(t, nil, `echo RAN`)
	h.down.Store(true)
	f2 := newFake(b)
	start(t, f2, func(o *Options) { o.FetchPatience = time.Second })
	r = waitResult(t, f2, b.Job.ID, 30*time.Second)
	if r.State != model.Interrupted || !strings.Contains(r.Reason, "cannot fetch") {
		t.Fatalf("Gerrit down for good: %s (%q), want INTERRUPTED: cannot fetch", r.State, r.Reason)
	}
}

// TestCheckoutCredentials: with Gerrit credentials the worker fetches from
// /a/; bad ones are an infrastructure failure, and never reach the job.
func TestCheckoutCredentials(t *testing.T) {
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	a := h.change(t, nil, `env; cat "$TOLLGATE_WORK_DIR"/.home/.gitconfig 2>/dev/null; git config --list --show-origin`)
	f := newFake(a)
	start(t, f, func(o *Options) { o.GitUser, o.GitPassword = "tollgate", "gerrit-pw" })
	r := waitResult(t, f, a.Job.ID, 30*time.Second)
	log := f.log(a.Job.ID)
	if r.State != model.Completed {
		t.Fatalf("ended %s (%s), log:\n%s", r.State, r.Reason, log)
	}
	if strings.Contains(log, "gerrit-pw") || strings.Contains(log, "Authorization") || strings.Contains(log, "dG9sbGdhdGU6") {
		t.Errorf("the Gerrit credentials reached the job:\n%s", log)
	}

	b := h.change(t, nil, `echo RAN`)
	f2 := newFake(b)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log with the wrong password:\n%s", f2.log(b.Job.ID))
		}
	})
	start(t, f2, func(o *Options) { o.GitUser, o.GitPassword = "tollgate", "wrong" })
	r = waitResult(t, f2, b.Job.ID, 30*time.Second)
	if r.State != model.Interrupted || !strings.Contains(r.Reason, "cannot fetch") {
		t.Fatalf("with a wrong password: %s (%q), want INTERRUPTED: cannot fetch", r.State, r.Reason)
	}
}

// TestSandboxedJob runs a job with a checkout in the bwrap sandbox: it
// builds its files and uses the cache, while each attempt to reach the
// worker's secrets fails.
func TestSandboxedJob(t *testing.T) {
	sandboxtest.NeedBwrap(t)
	h := newGitHost(t)
	h.branch(t, map[string]string{"main.txt": "base\n"})
	root := sandboxtest.Dir(t)
	sb, err := sandbox.New(sandbox.Options{Mode: sandbox.ModeBwrap, Root: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	token := filepath.Join(state, "worker-token")
	os.WriteFile(token, []byte("s3cret"), 0o600)
	t.Setenv("TOLLGATE_WORKER_TOKEN", "s3cret")
	metadata := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "sa-token") }))
	defer metadata.Close()
	script := `
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: ok"; else echo "$name: blocked"; fi; }
try token cat ` + token + `
if env | grep -q s3cret; then echo "env: ok"; else echo "env: blocked"; fi
try metadata curl -sf -m 3 ` + metadata.URL + `
try metadata-proxy env -u NO_PROXY -u no_proxy curl -sf -m 3 ` + metadata.URL + `
try metadata-ip curl -sf -m 3 http://169.254.169.254/
try gerrit curl -sf -m 3 ` + h.url + `/a/demo/info/refs
echo "uid: $(id -u)"
set -e
d=$(printf cached | sha256sum | cut -d' ' -f1)
curl -sf -X PUT --data-binary cached "$TOLLGATE_CACHE_URL/cas/$d/6"
echo "cache: $(curl -sf "$TOLLGATE_CACHE_URL/cas/$d/6")"
grep -q change feature.txt && git log --oneline -1 >/dev/null && echo "build: ok"
echo result > "$TOLLGATE_ARTIFACTS_DIR/result.txt"`
	a := h.change(t, map[string]string{"feature.txt": "change\n"}, script)
	f := newFake(a)
	start(t, f, func(o *Options) {
		o.Sandbox, o.WorkDir, o.Cache = sb, root, cachetest.NewMem()
		o.GitUser, o.GitPassword = "tollgate", "gerrit-pw"
	})
	r := waitResult(t, f, a.Job.ID, 60*time.Second)
	log := f.log(a.Job.ID)
	if r.State != model.Completed {
		t.Fatalf("ended %s (%s), log:\n%s", r.State, r.Reason, log)
	}
	for _, want := range []string{"token: blocked", "env: blocked", "metadata: blocked", "metadata-proxy: blocked",
		"metadata-ip: blocked", "gerrit: blocked", "build: ok", "sandbox: refused a connection to 169.254.169.254:80"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "left processes running") {
		t.Errorf("the sandbox's own processes were taken for leftovers:\n%s", log)
	}
	if strings.Contains(log, "uid: 0\n") {
		t.Errorf("the job ran as root:\n%s", log)
	}
	if !strings.Contains(log, "cache: cached\n") {
		t.Errorf("the job could not use the cache:\n%s", log)
	}
	f.do(func(f *fakeFleet) {
		if hb := f.heartbeats[len(f.heartbeats)-1]; hb.Labels[SandboxLabel] != "bwrap" {
			t.Errorf("heartbeat labels %v, want sandbox=bwrap", hb.Labels)
		}
		if f.artifacts[a.Job.ID+"/result.txt"] != "result\n" {
			t.Errorf("artifacts: %v", f.artifacts)
		}
	})
}
