package workerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// ClientOptions configure a Client. URL, EnrollSecret and WorkerID are required.
type ClientOptions struct {
	// URL is the server's base URL, e.g. "https://ci.example.com"; the
	// client appends /worker/v1/... (a URL already ending in /worker/v1 is
	// accepted too).
	URL          string
	EnrollSecret string
	Channel      int
	// WorkerID names this worker; Host is reported when enrolling and
	// filled into heartbeats that leave it empty.
	WorkerID, Host string
	// HTTPClient sends the requests (default: a client without a global
	// timeout; each call but artifact uploads is bounded to one minute per attempt).
	HTTPClient *http.Client
	// Retries is how many times a transient failure (network error, 429,
	// 502, 503, 504) is retried (default 5; negative: never).
	Retries int
	// BackoffBase is the first retry's delay, doubled on each retry, with
	// jitter (default 200ms).
	BackoffBase time.Duration
	// MaxArtifactBytes bounds an artifact the client will send (default
	// 1 GiB, the fleet's default limit).
	MaxArtifactBytes int64
	// MemBuffer is the largest artifact buffered in memory for retries;
	// larger ones are spooled to a temporary file (default 4 MiB).
	MemBuffer int64
}

// Client is the worker's side of the worker API. It implements fleet.Backend
// over HTTP with the same error codes as the direct transport, retrying
// transient failures (every Backend call is idempotent by contract) and
// enrolling again once when the server refuses its token. Safe for
// concurrent use.
type Client struct {
	o    ClientOptions
	base string

	mu    sync.Mutex
	token string

	enrollMu sync.Mutex // one enrollment at a time
}

var _ fleet.Backend = (*Client)(nil)

const (
	callTimeout     = time.Minute
	maxBackoff      = 10 * time.Second
	maxResponseBody = 16 << 20
)

// NewClient returns a Client; InvalidArgument if an option is bad. It does
// not contact the server: call Enroll (or any call, which enrolls first).
func NewClient(o ClientOptions) (*Client, error) {
	const op = "workerapi.NewClient"
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errs.E(errs.InvalidArgument, op, "want an http or https URL, got %q", o.URL)
	}
	if o.EnrollSecret == "" {
		return nil, errs.E(errs.InvalidArgument, op, "EnrollSecret is required")
	}
	if err := fleet.ValidWorkerID(o.WorkerID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Retries == 0 {
		o.Retries = 5
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 200 * time.Millisecond
	}
	if o.MaxArtifactBytes <= 0 {
		o.MaxArtifactBytes = defaultMaxArtifact
	}
	if o.MemBuffer <= 0 {
		o.MemBuffer = 4 << 20
	}
	base := strings.TrimRight(o.URL, "/")
	base = strings.TrimSuffix(base, strings.TrimRight(Prefix, "/"))
	return &Client{o: o, base: base + Prefix}, nil
}

// request is one API call, sendable several times.
type request struct {
	op    string
	query url.Values
	// body returns a fresh body for each attempt, and its length (-1: unknown).
	body        func() (io.Reader, int64)
	contentType string
	// unbounded attempts have no per-attempt timeout (artifact uploads).
	unbounded bool
	// method is the HTTP method (default POST).
	method string
	// header holds extra request headers.
	header http.Header
	// stream leaves a 200 answer's body open for the caller
	// (response.stream) instead of reading it; use it with unbounded.
	stream bool
}

func jsonRequest(op string, v any) (*request, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, "workerapi."+op, err)
	}
	return &request{op: op, contentType: "application/json",
		body: func() (io.Reader, int64) { return bytes.NewReader(b), int64(len(b)) }}, nil
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
	stream io.ReadCloser // a streamed request's open body
}

// Enroll presents the enroll secret and keeps the token the server issues.
// A wrong secret is PermissionDenied, a channel mismatch too.
func (c *Client) Enroll(ctx context.Context) error {
	c.enrollMu.Lock()
	defer c.enrollMu.Unlock()
	return c.enrollLocked(ctx)
}

func (c *Client) enrollLocked(ctx context.Context) error {
	req, err := jsonRequest("enroll", EnrollRequest{Secret: c.o.EnrollSecret, WorkerID: c.o.WorkerID, Host: c.o.Host})
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, req, "")
	if err != nil {
		return err
	}
	if err := responseError(req.op, resp); err != nil {
		return err
	}
	var er EnrollReply
	if err := json.Unmarshal(resp.body, &er); err != nil || er.Token == "" {
		return errs.E(errs.Unavailable, "workerapi.enroll", "malformed answer: %v", err)
	}
	c.mu.Lock()
	c.token = er.Token
	c.mu.Unlock()
	return nil
}

func (c *Client) currentToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// reenroll enrolls again unless another goroutine already replaced stale.
func (c *Client) reenroll(ctx context.Context, stale string) error {
	c.enrollMu.Lock()
	defer c.enrollMu.Unlock()
	if tok := c.currentToken(); tok != "" && tok != stale {
		return nil
	}
	return c.enrollLocked(ctx)
}

// call sends an authenticated request, enrolling first if the client has no
// token, and once more if the server refuses the token, and returns the
// successful answer or the call's error.
func (c *Client) call(ctx context.Context, req *request) (*response, error) {
	tok := c.currentToken()
	if tok == "" {
		if err := c.reenroll(ctx, ""); err != nil {
			return nil, err
		}
		tok = c.currentToken()
	}
	resp, err := c.send(ctx, req, tok)
	if err != nil {
		return nil, err
	}
	if tokenRefused(resp) {
		// Revoked by a newer enrollment of this id, or the server forgot it.
		if err := c.reenroll(ctx, tok); err != nil {
			return nil, err
		}
		if resp, err = c.send(ctx, req, c.currentToken()); err != nil {
			return nil, err
		}
	}
	if err := responseError(req.op, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// tokenRefused reports whether the server refused the token itself (not
// the call: a quarantined worker's claim is 403 too, without the header).
func tokenRefused(r *response) bool {
	return r.status == http.StatusUnauthorized ||
		(r.status == http.StatusForbidden && strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token"))
}

// send sends req, retrying transient failures with exponential backoff and
// jitter. It returns the last answer, or an error if none came.
func (c *Client) send(ctx context.Context, req *request, token string) (*response, error) {
	op := "workerapi." + req.op
	for attempt := 0; ; attempt++ {
		resp, err := c.once(ctx, req, token)
		if ctx.Err() != nil {
			return nil, errs.Wrap(errs.Unavailable, op, ctx.Err())
		}
		if !transient(resp, err) || attempt >= c.o.Retries {
			if err != nil {
				return nil, errs.Wrap(errs.Unavailable, op, err)
			}
			return resp, nil
		}
		t := time.NewTimer(tasks.Backoff(attempt+1, c.o.BackoffBase, maxBackoff, rand.Float64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errs.Wrap(errs.Unavailable, op, ctx.Err())
		case <-t.C:
		}
	}
}

func transient(r *response, err error) bool {
	if err != nil {
		return true
	}
	switch r.status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// once sends req once and reads the whole answer.
func (c *Client) once(ctx context.Context, req *request, token string) (*response, error) {
	if !req.unbounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	u := c.base + req.op
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	var body io.Reader = http.NoBody
	n := int64(0)
	if req.body != nil {
		body, n = req.body()
	}
	method := req.method
	if method == "" {
		method = http.MethodPost
	}
	hr, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	hr.ContentLength = n
	if req.body != nil {
		hr.GetBody = func() (io.ReadCloser, error) { b, _ := req.body(); return io.NopCloser(b), nil }
	}
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	hr.Header.Set(HeaderChannel, strconv.Itoa(c.o.Channel))
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.o.HTTPClient.Do(hr)
	if err != nil {
		return nil, err
	}
	if req.stream && resp.StatusCode == http.StatusOK {
		return &response{status: resp.StatusCode, header: resp.Header, stream: resp.Body}, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// responseError returns nil for a 2xx answer, else an error with the code
// the server named, or the code of the status if it named none we know.
func responseError(op string, r *response) error {
	if r.status >= 200 && r.status < 300 {
		return nil
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(r.body))
	code := codeOfStatus(r.status)
	if json.Unmarshal(r.body, &eb) == nil && eb.Error.Code != "" {
		msg = eb.Error.Message
		if c, ok := codeNamed(eb.Error.Code); ok {
			code = c
		}
	}
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	return errs.E(code, "workerapi."+op, "%d %s: %s", r.status, http.StatusText(r.status), msg)
}

// codeNamed returns the code called name.
func codeNamed(name string) (errs.Code, bool) {
	for c := errs.NotFound; c <= errs.Aborted; c++ {
		if c.String() == name {
			return c, true
		}
	}
	return errs.Unknown, false
}

// codeOfStatus maps an HTTP status back to a code (the inverse of api.StatusOf).
func codeOfStatus(status int) errs.Code {
	switch status {
	case http.StatusBadRequest:
		return errs.InvalidArgument
	case http.StatusUnauthorized:
		return errs.Unauthenticated
	case http.StatusForbidden:
		return errs.PermissionDenied
	case http.StatusNotFound:
		return errs.NotFound
	case http.StatusConflict:
		return errs.FailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return errs.ResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errs.Unavailable
	}
	return errs.Unknown
}

// Heartbeat implements fleet.Backend. Empty WorkerID and Host are filled
// from the client's options.
func (c *Client) Heartbeat(ctx context.Context, hb fleet.Heartbeat) (*fleet.HeartbeatReply, error) {
	if hb.WorkerID == "" {
		hb.WorkerID = c.o.WorkerID
	}
	if hb.Host == "" {
		hb.Host = c.o.Host
	}
	req, err := jsonRequest("heartbeat", hb)
	if err != nil {
		return nil, err
	}
	resp, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	var reply fleet.HeartbeatReply
	if err := json.Unmarshal(resp.body, &reply); err != nil {
		return nil, errs.Wrap(errs.Unavailable, "workerapi.heartbeat: malformed answer", err)
	}
	return &reply, nil
}

// Claim implements fleet.Backend: NotFound when nothing is queued. An
// empty workerID means the client's.
func (c *Client) Claim(ctx context.Context, workerID string) (*fleet.Assignment, error) {
	if workerID == "" {
		workerID = c.o.WorkerID
	}
	req, err := jsonRequest("claim", ClaimRequest{WorkerID: workerID})
	if err != nil {
		return nil, err
	}
	resp, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.status == http.StatusNoContent {
		return nil, errs.E(errs.NotFound, "workerapi.claim", "no job is queued")
	}
	var a fleet.Assignment
	if err := json.Unmarshal(resp.body, &a); err != nil || a.Job == nil {
		return nil, errs.E(errs.Unavailable, "workerapi.claim", "malformed answer: %v", err)
	}
	return &a, nil
}

// AppendLog implements fleet.Backend. An empty workerID means the client's.
func (c *Client) AppendLog(ctx context.Context, workerID, jobID string, off int64, data []byte) error {
	if workerID == "" {
		workerID = c.o.WorkerID
	}
	req := &request{op: "log", contentType: "application/octet-stream",
		query: url.Values{"worker_id": {workerID}, "job_id": {jobID}, "offset": {strconv.FormatInt(off, 10)}},
		body:  func() (io.Reader, int64) { return bytes.NewReader(data), int64(len(data)) }}
	_, err := c.call(ctx, req)
	return err
}

// PutArtifact implements fleet.Backend. The content is read once and kept
// for retries: in memory up to MemBuffer bytes, else in a temporary file
// (or read again in place when r is a file-like io.ReaderAt and io.Seeker).
// An empty workerID means the client's.
func (c *Client) PutArtifact(ctx context.Context, workerID, jobID, name string, r io.Reader) error {
	if workerID == "" {
		workerID = c.o.WorkerID
	}
	body, cleanup, err := c.replayable(r)
	if err != nil {
		return fmt.Errorf("workerapi.artifact %s of %s: %w", name, jobID, err)
	}
	defer cleanup()
	req := &request{op: "artifact", contentType: "application/octet-stream", unbounded: true,
		query: url.Values{"worker_id": {workerID}, "job_id": {jobID}, "name": {name}}, body: body}
	_, err = c.call(ctx, req)
	return err
}

// replayable returns a function giving a fresh reader of r's content for
// each attempt. Each reader is independent of the others (the transport
// may still read an abandoned attempt's body while the next one starts).
func (c *Client) replayable(r io.Reader) (func() (io.Reader, int64), func(), error) {
	max := c.o.MaxArtifactBytes
	return c.replayableMax(r, max, func() error {
		return errs.E(errs.ResourceExhausted, "", "artifact exceeds %d bytes", max)
	})
}

// replayableMax is replayable for content of at most max bytes; tooLarge
// makes the error for more.
func (c *Client) replayableMax(r io.Reader, max int64, tooLarge func() error) (func() (io.Reader, int64), func(), error) {
	if ra, ok := r.(interface {
		io.ReaderAt
		io.Seeker
	}); ok {
		if start, err := ra.Seek(0, io.SeekCurrent); err == nil {
			if end, err := ra.Seek(0, io.SeekEnd); err == nil {
				if _, err := ra.Seek(start, io.SeekStart); err == nil && end >= start {
					if end-start > max {
						return nil, nil, tooLarge()
					}
					n := end - start
					return func() (io.Reader, int64) { return io.NewSectionReader(ra, start, n), n }, func() {}, nil
				}
			}
		}
	}
	mem, err := io.ReadAll(io.LimitReader(r, c.o.MemBuffer+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(mem)) <= c.o.MemBuffer {
		return func() (io.Reader, int64) { return bytes.NewReader(mem), int64(len(mem)) }, func() {}, nil
	}
	f, err := os.CreateTemp("", "tollgate-artifact-*")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	n, err := io.Copy(f, io.MultiReader(bytes.NewReader(mem), io.LimitReader(r, max+1-int64(len(mem)))))
	if err == nil && n > max {
		err = tooLarge()
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return func() (io.Reader, int64) { return io.NewSectionReader(f, 0, n), n }, cleanup, nil
}

// Finish implements fleet.Backend. An empty WorkerID means the client's.
func (c *Client) Finish(ctx context.Context, res fleet.Result) error {
	if res.WorkerID == "" {
		res.WorkerID = c.o.WorkerID
	}
	req, err := jsonRequest("finish", res)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, req)
	return err
}
