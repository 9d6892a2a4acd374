package workerapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// pattern returns n bytes of a repeating, position-dependent pattern.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (i*7+i/251)%26)
	}
	return b
}

// onlyReader hides every method of r but Read, so the client must buffer it.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func (e *env) artifact(jobID, name string) []byte {
	e.t.Helper()
	b, err := blob.ReadAll(e.ctx, e.blobs, fleet.ArtifactPrefix(jobID)+name)
	if err != nil {
		e.t.Fatalf("artifact %s of %s: %v", name, jobID, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	ids := e.queue(1, 1, "build")
	c := e.client("w1")
	if err := c.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	hb, err := c.Heartbeat(e.ctx, fleet.Heartbeat{Version: "v1", Labels: map[string]string{"os": "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	if hb.HeartbeatEvery != 10*time.Second || hb.PollEvery != 2*time.Second || hb.Quarantined || len(hb.Cancel) != 0 {
		t.Errorf("heartbeat reply = %+v", hb)
	}
	w, err := e.st.GetWorker(e.ctx, "w1")
	if err != nil || w.Host != "w1.example" || w.Version != "v1" || w.Labels["os"] != "linux" {
		t.Fatalf("worker record = %+v, %v", w, err)
	}

	a, err := c.Claim(e.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if a.Job.ID != ids[0] || a.Job.State != model.Started || a.Job.Worker != "w1" ||
		!slices.Equal(a.Command, []string{"make"}) || a.Env["TOLLGATE_CHANGE"] != "1" || a.Timeout != 30*time.Minute {
		t.Fatalf("assignment = %+v", a)
	}
	if hb, err := c.Heartbeat(e.ctx, fleet.Heartbeat{Version: "v1", CurrentJob: a.Job.ID}); err != nil || len(hb.Cancel) != 0 {
		t.Fatalf("busy heartbeat = %+v, %v", hb, err)
	}

	id := a.Job.ID
	for _, chunk := range []struct {
		off  int64
		data string
	}{{0, "hello "}, {6, "world\n"}, {0, "hello "}} { // the last one repeats: a no-op
		if err := c.AppendLog(e.ctx, "", id, chunk.off, []byte(chunk.data)); err != nil {
			t.Fatalf("append at %d: %v", chunk.off, err)
		}
	}
	if err := c.AppendLog(e.ctx, "", id, 100, []byte("gap")); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("append with a gap: %v, want FailedPrecondition", err)
	}
	if got := e.log(id); got != "hello world\n" {
		t.Errorf("log = %q", got)
	}

	// Three artifacts: small (in memory), large and unseekable (spooled to
	// a temp file), and a file (read in place).
	big := pattern(5<<20 + 123)
	fpath := filepath.Join(t.TempDir(), "trace.bin")
	if err := os.WriteFile(fpath, pattern(70000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fpath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.PutArtifact(e.ctx, "", id, "out/report.txt", strings.NewReader("all good")); err != nil {
		t.Fatal(err)
	}
	if err := c.PutArtifact(e.ctx, "", id, "out/big.bin", onlyReader{bytes.NewReader(big)}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutArtifact(e.ctx, "", id, "trace.bin", f); err != nil {
		t.Fatal(err)
	}
	if err := c.PutArtifact(e.ctx, "", id, "../escape", strings.NewReader("x")); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("bad artifact name: %v, want InvalidArgument", err)
	}
	if got := string(e.artifact(id, "out/report.txt")); got != "all good" {
		t.Errorf("report = %q", got)
	}
	if got := e.artifact(id, "out/big.bin"); !bytes.Equal(got, big) {
		t.Errorf("big artifact: %d bytes, want %d, equal=%v", len(got), len(big), bytes.Equal(got, big))
	}
	if got := e.artifact(id, "trace.bin"); !bytes.Equal(got, pattern(70000)) {
		t.Errorf("file artifact: %d bytes differ", len(got))
	}

	exit := 0
	res := fleet.Result{JobID: id, State: model.Completed, ExitCode: &exit}
	if err := c.Finish(e.ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(e.ctx, res); err != nil {
		t.Errorf("second finish: %v, want a no-op", err)
	}
	j := e.job(id)
	if j.State != model.Completed || j.Worker != "w1" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("job = %+v", j)
	}
	want := []deferred{{controller.CheckPendingCL, `{"id":"1-1"}`}}
	if got := e.tq.tasks(); !slices.Equal(got, want) {
		t.Errorf("deferred = %v, want %v", got, want)
	}
	if _, err := c.Claim(e.ctx, ""); !errs.Is(err, errs.NotFound) {
		t.Errorf("claim of an empty queue: %v, want NotFound", err)
	}
	// The job is no longer w1's to end otherwise.
	res.State = model.Failed
	if err := c.Finish(e.ctx, res); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("finish as FAILED after COMPLETED: %v, want FailedPrecondition", err)
	}
}

func TestClaimNothingQueued(t *testing.T) {
	e := newEnv(t)
	c := e.client("w1")
	// The first call enrolls on its own.
	if _, err := c.Heartbeat(e.ctx, fleet.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	a, err := c.Claim(e.ctx, "")
	if !errs.Is(err, errs.NotFound) {
		t.Fatalf("claim = %+v, %v; want NotFound", a, err)
	}
}

// TestRefusals sends every call with every kind of bad credential and
// checks the status, the code, and that nothing was written.
func TestRefusals(t *testing.T) {
	e := newEnv(t)
	ids := e.queue(1, 1, "build", "test")
	claimed, err := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	started := claimed.ID
	queued := ids[0]
	if queued == started {
		queued = ids[1]
	}
	tokW1, tokW2 := e.enroll("w1"), e.enroll("w2")
	drained := workerapi.NewHandler(e.opts)
	drained.Drain()
	dsrv := httptest.NewServer(drained)
	defer dsrv.Close()

	jq := url.Values{"job_id": {started}}
	jsonOf := func(v any) []byte { b, _ := json.Marshal(v); return b }
	exit := 0
	// calls as w1 would make them.
	calls := []struct {
		op   string
		body []byte
		// as w2 names w1 explicitly, to test the mismatch.
		asOther rawReq
	}{
		{"heartbeat", jsonOf(fleet.Heartbeat{WorkerID: "w1", Host: "h"}),
			rawReq{op: "heartbeat", body: jsonOf(fleet.Heartbeat{WorkerID: "w1"})}},
		{"claim", jsonOf(workerapi.ClaimRequest{}),
			rawReq{op: "claim", body: jsonOf(workerapi.ClaimRequest{WorkerID: "w1"})}},
		{"log?offset=0&" + jq.Encode(), []byte("secret output"),
			rawReq{op: "log?offset=0&worker_id=w1&" + jq.Encode(), body: []byte("secret output")}},
		{"artifact?name=a.txt&" + jq.Encode(), []byte("artifact"),
			rawReq{op: "artifact?name=a.txt&worker_id=w1&" + jq.Encode(), body: []byte("artifact")}},
		{"finish", jsonOf(fleet.Result{JobID: started, State: model.Completed, ExitCode: &exit}),
			rawReq{op: "finish", body: jsonOf(fleet.Result{WorkerID: "w1", JobID: started, State: model.Completed, ExitCode: &exit})}},
	}

	unchanged := func(what string) {
		t.Helper()
		if j := e.job(started); j.State != model.Started || j.Worker != "w1" {
			t.Errorf("%s: started job is now %s by %q", what, j.State, j.Worker)
		}
		if j := e.job(queued); j.State != model.Queued {
			t.Errorf("%s: queued job is now %s", what, j.State)
		}
		if l := e.log(started); l != "" {
			t.Errorf("%s: log = %q", what, l)
		}
		if a := e.artifacts(started); len(a) != 0 {
			t.Errorf("%s: artifacts %v", what, a)
		}
		for _, w := range []string{"w1", "w2"} {
			if e.workerExists(w) {
				t.Errorf("%s: worker %s was recorded", what, w)
			}
		}
		if d := e.tq.tasks(); len(d) != 0 {
			t.Errorf("%s: deferred %v", what, d)
		}
	}

	for _, c := range calls {
		name := strings.Split(c.op, "?")[0]
		mismatch := c.asOther
		mismatch.token, mismatch.channel = tokW2, ch
		for _, tc := range []struct {
			kind   string
			base   string
			req    rawReq
			status int
			code   string
		}{
			{"missing token", e.srv.URL, rawReq{op: c.op, channel: ch, body: c.body}, 401, "Unauthenticated"},
			{"malformed authorization", e.srv.URL, rawReq{op: c.op, channel: ch, body: c.body, token: " "}, 401, "Unauthenticated"},
			{"unknown token", e.srv.URL, rawReq{op: c.op, token: "0123456789abcdef", channel: ch, body: c.body}, 403, "PermissionDenied"},
			{"wrong channel", e.srv.URL, rawReq{op: c.op, token: tokW1, channel: "7", body: c.body}, 403, "PermissionDenied"},
			{"missing channel", e.srv.URL, rawReq{op: c.op, token: tokW1, body: c.body}, 403, "PermissionDenied"},
			{"worker id mismatch", e.srv.URL, mismatch, 403, "PermissionDenied"},
			{"drained", dsrv.URL, rawReq{op: c.op, token: tokW1, channel: ch, body: c.body}, 503, "ShuttingDown"},
			{"GET", e.srv.URL, rawReq{op: c.op, token: tokW1, channel: ch, method: http.MethodGet}, 405, "InvalidArgument"},
		} {
			r := do(t, tc.base, tc.req)
			if r.status != tc.status || r.code != tc.code {
				t.Errorf("%s, %s: %d %q, want %d %q (%s)", name, tc.kind, r.status, r.code, tc.status, tc.code, r.body)
			}
			if tc.status == 401 || (tc.status == 403 && tc.kind != "worker id mismatch") {
				if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
					t.Errorf("%s, %s: no WWW-Authenticate invalid_token header", name, tc.kind)
				}
			}
			unchanged(name + ", " + tc.kind)
		}
	}

	// Malformed input with a good token: 400, nothing written.
	for _, q := range []rawReq{
		{op: "heartbeat", body: []byte(`{"worker_id": `)},
		{op: "claim", body: []byte(`[1, 2]`)},
		{op: "finish", body: []byte(`{"job_id": "x"} trailing`)},
		{op: "log?offset=-1&" + jq.Encode(), body: []byte("x")},
		{op: "log?offset=zero&" + jq.Encode(), body: []byte("x")},
		{op: "artifact?name=../x&" + jq.Encode(), body: []byte("x")},
		{op: "heartbeat", body: bytes.Repeat([]byte(" "), 2<<20)},
	} {
		q.token, q.channel = tokW1, ch
		if r := do(t, e.srv.URL, q); r.status != 400 || r.code != "InvalidArgument" {
			t.Errorf("%s %.20q: %d %q, want 400 InvalidArgument", q.op, q.body, r.status, r.code)
		}
		unchanged("malformed " + q.op)
	}
	if r := do(t, e.srv.URL, rawReq{op: "nope", token: tokW1, channel: ch}); r.status != 404 || r.code != "NotFound" {
		t.Errorf("unknown endpoint: %d %q", r.status, r.code)
	}

	// Enrollment refusals store no token.
	enrollBody := func(sec, id string) []byte {
		return jsonOf(workerapi.EnrollRequest{Secret: sec, WorkerID: id, Host: "h"})
	}
	for _, tc := range []struct {
		kind   string
		base   string
		req    rawReq
		status int
		code   string
	}{
		{"wrong secret", e.srv.URL, rawReq{channel: ch, body: enrollBody("guess", "w9")}, 403, "PermissionDenied"},
		{"secret prefix", e.srv.URL, rawReq{channel: ch, body: enrollBody(secret[:4], "w9")}, 403, "PermissionDenied"},
		{"missing secret", e.srv.URL, rawReq{channel: ch, body: enrollBody("", "w9")}, 401, "Unauthenticated"},
		{"wrong channel", e.srv.URL, rawReq{channel: "0", body: enrollBody(secret, "w9")}, 403, "PermissionDenied"},
		{"missing channel", e.srv.URL, rawReq{body: enrollBody(secret, "w9")}, 403, "PermissionDenied"},
		{"drained", dsrv.URL, rawReq{channel: ch, body: enrollBody(secret, "w9")}, 503, "ShuttingDown"},
		{"malformed", e.srv.URL, rawReq{channel: ch, body: []byte(`{"secret":`)}, 400, "InvalidArgument"},
	} {
		tc.req.op = "enroll"
		r := do(t, tc.base, tc.req)
		if r.status != tc.status || r.code != tc.code {
			t.Errorf("enroll, %s: %d %q, want %d %q (%s)", tc.kind, r.status, r.code, tc.status, tc.code, r.body)
		}
		if v, err := e.st.GetMeta(e.ctx, "worker-token-of:w9"); err != nil || v != "" {
			t.Errorf("enroll, %s: token of w9 = %q, %v", tc.kind, v, err)
		}
		unchanged("enroll, " + tc.kind)
	}
	// An id that cannot name a worker is refused even with the secret.
	if r := do(t, e.srv.URL, rawReq{op: "enroll", channel: ch, body: enrollBody(secret, "../w9")}); r.status != 400 {
		t.Errorf("enroll of a bad id: %d %s", r.status, r.body)
	}

	// The same token still works: the refusals were about the requests.
	r := do(t, e.srv.URL, rawReq{op: "log?offset=0&" + jq.Encode(), token: tokW1, channel: ch, body: []byte("ok\n")})
	if r.status != http.StatusNoContent || e.log(started) != "ok\n" {
		t.Errorf("good append after the refusals: %d %s, log %q", r.status, r.body, e.log(started))
	}

	// A client on a drained server gives up with Unavailable.
	c := e.client("w1", func(o *workerapi.ClientOptions) { o.URL = dsrv.URL; o.Retries = 1 })
	if err := c.Enroll(e.ctx); !errs.Is(err, errs.Unavailable) {
		t.Errorf("enroll with a drained server: %v, want Unavailable", err)
	}
}

// TestFlakyProxy puts a proxy that fails requests in front of the server:
// some fail before reaching it, some after it acted (the answer is lost).
// Retries must leave the log without duplicate or missing bytes.
func TestFlakyProxy(t *testing.T) {
	e := newEnv(t)
	ids := e.queue(1, 1, "build")
	c := e.client("w1", viaProxy(e))
	e.proxy.set("enroll", "503", "lost")
	e.proxy.set("heartbeat", "503", "429", "lost")
	// chunk 0: 503, lost, ok; chunk 1: 503, 503, lost, ok; chunk 2: lost, 429, ok.
	e.proxy.set("log", "503", "lost", "ok", "503", "503", "lost", "ok", "lost", "429")
	e.proxy.set("artifact", "503", "lost", "503")
	e.proxy.set("finish", "lost", "503")
	e.proxy.set("claim", "503", "503")

	if err := c.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heartbeat(e.ctx, fleet.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	a, err := c.Claim(e.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	id := a.Job.ID
	if id != ids[0] {
		t.Fatalf("claimed %s, want %s", id, ids[0])
	}
	var want bytes.Buffer
	for i := 0; i < 6; i++ {
		chunk := []byte(strings.Repeat(string(rune('a'+i)), 1000+i*37) + "\n")
		if err := c.AppendLog(e.ctx, "", id, int64(want.Len()), chunk); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		want.Write(chunk)
	}
	if got := e.log(id); got != want.String() {
		t.Errorf("log: %d bytes, want %d; equal=%v", len(got), want.Len(), got == want.String())
	}
	big := pattern(5 << 20)
	if err := c.PutArtifact(e.ctx, "", id, "big.bin", onlyReader{bytes.NewReader(big)}); err != nil {
		t.Fatal(err)
	}
	if got := e.artifact(id, "big.bin"); !bytes.Equal(got, big) {
		t.Errorf("artifact after retries: %d bytes, want %d", len(got), len(big))
	}
	if err := c.Finish(e.ctx, fleet.Result{JobID: id, State: model.Failed}); err != nil {
		t.Fatal(err)
	}
	if j := e.job(id); j.State != model.Failed {
		t.Errorf("job = %s", j.State)
	}
	if d := e.tq.tasks(); len(d) != 1 || d[0].Action != controller.CheckPendingCL {
		t.Errorf("deferred = %v, want one check_pending_cl", d)
	}
	for op, n := range map[string]int{"enroll": 3, "heartbeat": 4, "claim": 3, "log": 6 + 7, "artifact": 4, "finish": 3} {
		if got := e.proxy.n(op); got != n {
			t.Errorf("%s: %d requests, want %d", op, got, n)
		}
	}

	// Retries end: the call fails with Unavailable after 1+Retries attempts.
	c2 := e.client("w1", viaProxy(e), func(o *workerapi.ClientOptions) { o.Retries = 2 })
	if err := c2.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	before := e.proxy.n("heartbeat")
	e.proxy.set("heartbeat", "503", "503", "503", "503")
	if _, err := c2.Heartbeat(e.ctx, fleet.Heartbeat{}); !errs.Is(err, errs.Unavailable) {
		t.Errorf("heartbeat through a dead proxy: %v, want Unavailable", err)
	}
	if got := e.proxy.n("heartbeat") - before; got != 3 {
		t.Errorf("heartbeat attempts = %d, want 3", got)
	}
}

func TestReenrollRevokesOldToken(t *testing.T) {
	e := newEnv(t)
	hbBody, _ := json.Marshal(fleet.Heartbeat{})
	heartbeat := func(tok string) int {
		return do(t, e.srv.URL, rawReq{op: "heartbeat", token: tok, channel: ch, body: hbBody}).status
	}
	tok1 := e.enroll("w1")
	if st := heartbeat(tok1); st != http.StatusOK {
		t.Fatalf("heartbeat with a fresh token: %d", st)
	}
	// The Store keeps a hash of the token, never the token.
	v, err := e.st.GetMeta(e.ctx, tokenKey(tok1))
	if err != nil || !strings.Contains(v, `"worker_id":"w1"`) || strings.Contains(v, tok1) {
		t.Errorf("token record = %q, %v", v, err)
	}

	c := e.client("w1", viaProxy(e))
	if err := c.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	if st := heartbeat(tok1); st != http.StatusForbidden {
		t.Errorf("heartbeat with a revoked token: %d, want 403", st)
	}
	if v, _ := e.st.GetMeta(e.ctx, tokenKey(tok1)); v != "" {
		t.Errorf("revoked token record = %q", v)
	}
	if _, err := c.Heartbeat(e.ctx, fleet.Heartbeat{}); err != nil {
		t.Fatal(err)
	}

	// Another enrollment of w1 revokes the client's token: the client
	// enrolls again, once, and its call goes through.
	tok3 := e.enroll("w1")
	enrolls := e.proxy.n("enroll")
	if _, err := c.Heartbeat(e.ctx, fleet.Heartbeat{}); err != nil {
		t.Fatalf("heartbeat after a revocation: %v", err)
	}
	if got := e.proxy.n("enroll") - enrolls; got != 1 {
		t.Errorf("re-enrollments = %d, want 1", got)
	}
	if st := heartbeat(tok3); st != http.StatusForbidden {
		t.Errorf("heartbeat with the token the client's re-enrollment revoked: %d, want 403", st)
	}

	// A quarantined worker's claim is refused by the fleet, not the token:
	// no re-enrollment.
	if _, err := e.st.SetWorkerQuarantined(e.ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	enrolls = e.proxy.n("enroll")
	if _, err := c.Claim(e.ctx, ""); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("quarantined claim: %v, want PermissionDenied", err)
	}
	if got := e.proxy.n("enroll") - enrolls; got != 0 {
		t.Errorf("re-enrollments after a quarantined claim = %d, want 0", got)
	}

	// A client on the wrong channel cannot enroll: its calls fail.
	bad := e.client("w3", viaProxy(e), func(o *workerapi.ClientOptions) { o.Channel = 7 })
	if _, err := bad.Heartbeat(e.ctx, fleet.Heartbeat{}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("heartbeat on the wrong channel: %v, want PermissionDenied", err)
	}
	if e.workerExists("w3") {
		t.Error("worker w3 on the wrong channel was recorded")
	}
	wrong := e.client("w4", func(o *workerapi.ClientOptions) { o.EnrollSecret = "guess" })
	if err := wrong.Enroll(e.ctx); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("enroll with a wrong secret: %v, want PermissionDenied", err)
	}
	// A token of another worker cannot act for w1 through the client either.
	other := e.client("w5")
	if _, err := other.Claim(e.ctx, "w1"); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("claim for another worker: %v, want PermissionDenied", err)
	}
}

func TestArtifactTooLarge(t *testing.T) {
	e := newEnv(t, func(o *workerapi.Options) { o.MaxArtifactBytes = 4096 })
	e.queue(1, 1, "build")
	c := e.client("w1", viaProxy(e))
	if _, err := c.Heartbeat(e.ctx, fleet.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	a, err := c.Claim(e.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// Known length (413 before reading) and unknown length (counted while streaming).
	for _, r := range []io.Reader{bytes.NewReader(pattern(5000)), onlyReader{bytes.NewReader(pattern(5000))}} {
		before := e.proxy.n("artifact")
		if err := c.PutArtifact(e.ctx, "", a.Job.ID, "huge.bin", r); !errs.Is(err, errs.ResourceExhausted) {
			t.Errorf("oversized artifact: %v, want ResourceExhausted", err)
		}
		if n := e.proxy.n("artifact") - before; n != 1 {
			t.Errorf("oversized artifact sent %d times, want once", n)
		}
	}
	// Streamed without a length, the server must count.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+workerapi.Prefix+"artifact?name=x&job_id="+url.QueryEscape(a.Job.ID),
		io.MultiReader(bytes.NewReader(pattern(5000))))
	req.ContentLength = -1
	tok := e.enroll("w1")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(workerapi.HeaderChannel, ch)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversized artifact: %d, want 413", resp.StatusCode)
	}
	if names := e.artifacts(a.Job.ID); len(names) != 0 {
		t.Errorf("artifacts written: %v", names)
	}
	if err := c.PutArtifact(e.ctx, "", a.Job.ID, "ok.bin", bytes.NewReader(pattern(4096))); err != nil {
		t.Errorf("artifact at the limit: %v", err)
	}
}

func TestNewClientValidates(t *testing.T) {
	for _, o := range []workerapi.ClientOptions{
		{URL: "ftp://x", EnrollSecret: "s", WorkerID: "w"},
		{URL: "http://x", WorkerID: "w"},
		{URL: "http://x", EnrollSecret: "s", WorkerID: "bad id"},
	} {
		if _, err := workerapi.NewClient(o); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("NewClient(%+v): %v, want InvalidArgument", o, err)
		}
	}
}

func TestEnrollDisabledWithoutSecret(t *testing.T) {
	e := newEnv(t, func(o *workerapi.Options) { o.EnrollSecret = "" })
	for sec, want := range map[string]int{"": 401, "anything": 403} {
		body, _ := json.Marshal(workerapi.EnrollRequest{Secret: sec, WorkerID: "w1"})
		if r := do(t, e.srv.URL, rawReq{op: "enroll", channel: ch, body: body}); r.status != want {
			t.Errorf("enroll with secret %q on a server without one: %d, want %d", sec, r.status, want)
		}
	}
	if v, _ := e.st.GetMeta(e.ctx, "worker-token-of:w1"); v != "" {
		t.Errorf("token issued: %q", v)
	}
}
