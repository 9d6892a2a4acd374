// Package workerapi is the worker API over HTTP: the server that puts a
// fleet.Backend (normally *fleet.Service) in front of workers on other
// machines, and the client that implements fleet.Backend again on the
// worker's side, so one worker runs on either transport.
//
// The protocol (all POST, under /worker/v1/):
//
//	enroll                    {secret, worker_id, host} → {token, worker_id, heartbeat_every, poll_every}
//	heartbeat                 fleet.Heartbeat → fleet.HeartbeatReply
//	claim                     {worker_id} → fleet.Assignment, or 204 No Content when nothing is queued
//	log?job_id=J&offset=N     raw bytes (application/octet-stream) → 204
//	artifact?job_id=J&name=N  raw bytes → 204
//	finish                    fleet.Result → 204
//
// and the artifact cache, when the server has one (Options.Cache; without
// it these answer 404), in the cache's own protocol (cache.NewHandler):
//
//	POST cache/find_missing        {"digests": ["hash/size", ...]} → {"missing": [...]}
//	GET  cache/cas/{hash}/{size}   → the content
//	PUT  cache/cas/{hash}/{size}   the content → 204
//	GET  cache/refs/{name}         → {"digest": "hash/size"}
//	PUT  cache/refs/{name}         {"digest": "hash/size"} → 204
//
// Every request carries the header X-Tollgate-Channel: N, which must equal
// the server's channel (so workers of one deployment never talk to another).
// Enroll is authenticated by the shared enroll secret and issues a bearer
// token bound to the worker id and the channel; every other call carries
// "Authorization: Bearer TOKEN". Only a SHA-256 hash of a token is stored
// (Store meta "worker-token:{hex hash}"), and re-enrolling a worker id
// revokes its previous token. A worker_id named in a call must be the
// token's worker.
//
// Refusals happen before the backend is touched and answer the shared JSON
// error shape {"error": {"code", "message"}}: 401 Unauthenticated (no
// token or no secret), 403 PermissionDenied (unknown or revoked token, wrong
// secret, wrong channel, another worker's id; token refusals also carry
// "WWW-Authenticate: Bearer error=invalid_token", which tells the client to
// enroll again), 503 ShuttingDown after Drain. Backend errors answer the
// status of their code (api.StatusOf), except that a body over its size
// limit answers 413 ResourceExhausted, which is not worth retrying.
package workerapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// Prefix is the path under which the handler serves; mount it there.
const Prefix = "/worker/v1/"

// HeaderChannel carries the channel on every request.
const HeaderChannel = "X-Tollgate-Channel"

// Store meta keys of tokens.
const (
	// tokenKeyPrefix + hex(sha256(token)) → JSON tokenRecord.
	tokenKeyPrefix = "worker-token:"
	// tokenOfKeyPrefix + worker id → hex(sha256(token)) of its current token.
	tokenOfKeyPrefix = "worker-token-of:"
)

// codeShuttingDown is the error code of calls refused after Drain.
const codeShuttingDown = "ShuttingDown"

const (
	defaultMaxBody     = 1 << 20
	defaultMaxArtifact = 1 << 30 // fleet's default MaxArtifactBytes
	// maxLogBody bounds one log chunk request: fleet's default chunk limit
	// plus slack, so the fleet (not the transport) refuses oversized chunks.
	maxLogBody = 1<<20 + 64<<10
)

// Options configure a Handler. Backend, Store and EnrollSecret are required.
type Options struct {
	// Backend serves the calls, normally a *fleet.Service.
	Backend fleet.Backend
	// Store keeps the tokens (GetMeta/SetMeta).
	Store store.Store
	// EnrollSecret is the shared secret workers present to enroll. If it is
	// empty, enrollment is refused (tokens issued before keep working).
	EnrollSecret string
	// Channel must match every request's X-Tollgate-Channel header.
	Channel int
	Clock   clock.Clock  // default: real
	Log     *slog.Logger // default: slog.Default()
	// MaxBody bounds JSON request bodies (default 1 MiB).
	MaxBody int64
	// MaxArtifactBytes bounds one artifact upload (default 1 GiB, the
	// fleet's default); set it to the Service's MaxArtifactBytes.
	MaxArtifactBytes int64
	// HeartbeatEvery and PollEvery are the intervals the enroll answer
	// suggests until the first heartbeat answer gives the server's own
	// (default 10s and 2s, the fleet's defaults).
	HeartbeatEvery time.Duration
	PollEvery      time.Duration
	// Cache, if set, is served to workers under cache/ (normally the
	// deployment's cache.Cache). Without it, those calls answer 404.
	Cache cache.Access
}

// Handler serves the worker API. It is safe for concurrent use.
type Handler struct {
	o        Options
	draining atomic.Bool
	// enrollMu serialises enrollments in this process, so two concurrent
	// enrollments of one worker id cannot both keep their token.
	enrollMu sync.Mutex
	cache    http.Handler // nil without Options.Cache
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the worker API handler. It panics if Backend or Store
// is nil (a composition error, not a runtime condition).
func NewHandler(o Options) *Handler {
	if o.Backend == nil || o.Store == nil {
		panic("workerapi.NewHandler: Backend and Store are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MaxBody <= 0 {
		o.MaxBody = defaultMaxBody
	}
	if o.MaxArtifactBytes <= 0 {
		o.MaxArtifactBytes = defaultMaxArtifact
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = 10 * time.Second
	}
	if o.PollEvery <= 0 {
		o.PollEvery = 2 * time.Second
	}
	if o.EnrollSecret == "" {
		o.Log.Warn("workerapi: no enroll secret configured; enrollment is refused")
	}
	h := &Handler{o: o}
	if o.Cache != nil {
		h.cache = http.StripPrefix(Prefix+"cache", cache.NewHandler(o.Cache, o.Log))
	}
	return h
}

// Drain makes every later call answer 503 ShuttingDown, so workers back off
// (and retry elsewhere or later) while the server stops.
func (h *Handler) Drain() { h.draining.Store(true) }

// EnrollRequest is the body of enroll.
type EnrollRequest struct {
	Secret   string `json:"secret"`
	WorkerID string `json:"worker_id"`
	Host     string `json:"host,omitempty"`
}

// EnrollReply is the answer of enroll.
type EnrollReply struct {
	Token          string        `json:"token"`
	WorkerID       string        `json:"worker_id"`
	HeartbeatEvery time.Duration `json:"heartbeat_every"`
	PollEvery      time.Duration `json:"poll_every"`
}

// ClaimRequest is the body of claim. An empty WorkerID means the token's worker.
type ClaimRequest struct {
	WorkerID string `json:"worker_id,omitempty"`
}

// tokenRecord is what the Store keeps of an issued token.
type tokenRecord struct {
	WorkerID string    `json:"worker_id"`
	Channel  int       `json:"channel"`
	Created  time.Time `json:"created"`
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.draining.Load() {
		w.Header().Set("Retry-After", "5")
		writeErr(w, http.StatusServiceUnavailable, codeShuttingDown, "the server is shutting down; retry later")
		return
	}
	op, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.fail(w, r, errs.E(errs.NotFound, "workerapi", "no such endpoint: %s", r.URL.Path))
		return
	}
	if strings.HasPrefix(op, "cache/") {
		h.serveCache(w, r)
		return
	}
	var serve func(http.ResponseWriter, *http.Request, string)
	switch op {
	case "enroll":
		if r.Method != http.MethodPost {
			h.methodNotAllowed(w)
			return
		}
		h.enroll(w, r)
		return
	case "heartbeat":
		serve = h.heartbeat
	case "claim":
		serve = h.claim
	case "log":
		serve = h.appendLog
	case "artifact":
		serve = h.putArtifact
	case "finish":
		serve = h.finish
	default:
		h.fail(w, r, errs.E(errs.NotFound, "workerapi", "no such endpoint: %s", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		h.methodNotAllowed(w)
		return
	}
	worker, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	serve(w, r, worker)
}

// serveCache authenticates a cache call like any other and hands it to the
// cache's protocol handler. Every enrolled worker shares the cache: objects
// are named by their content, so none can change what another reads under
// a digest, and refs are shared by design (a job type's keys).
func (h *Handler) serveCache(w http.ResponseWriter, r *http.Request) {
	if h.cache == nil {
		h.fail(w, r, errs.E(errs.NotFound, "workerapi", "this server has no cache"))
		return
	}
	if _, ok := h.authenticate(w, r); !ok {
		return
	}
	h.cache.ServeHTTP(w, r)
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", http.MethodPost)
	writeErr(w, http.StatusMethodNotAllowed, errs.InvalidArgument.String(), "use POST")
}

// checkChannel reports whether the request's channel header is the server's.
func (h *Handler) checkChannel(r *http.Request) error {
	v := r.Header.Get(HeaderChannel)
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if v == "" || err != nil {
		return errs.E(errs.PermissionDenied, "workerapi", "missing or malformed %s header", HeaderChannel)
	}
	if n != h.o.Channel {
		return errs.E(errs.PermissionDenied, "workerapi", "channel %d does not match the server's", n)
	}
	return nil
}

// authenticate checks the bearer token and the channel and returns the
// token's worker id. On refusal it has answered.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	refuse := func(err error) (string, bool) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-worker", error="invalid_token"`)
		h.fail(w, r, err)
		return "", false
	}
	auth := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(auth, " ")
	token = strings.TrimSpace(token)
	if auth == "" || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return refuse(errs.E(errs.Unauthenticated, "workerapi", "missing bearer token"))
	}
	if err := h.checkChannel(r); err != nil {
		return refuse(err)
	}
	v, err := h.o.Store.GetMeta(r.Context(), tokenKeyPrefix+hashToken(token))
	if err != nil {
		h.fail(w, r, err)
		return "", false
	}
	var rec tokenRecord
	if v == "" || json.Unmarshal([]byte(v), &rec) != nil || rec.WorkerID == "" {
		return refuse(errs.E(errs.PermissionDenied, "workerapi", "unknown or revoked token"))
	}
	if rec.Channel != h.o.Channel {
		return refuse(errs.E(errs.PermissionDenied, "workerapi", "the token was issued for channel %d", rec.Channel))
	}
	return rec.WorkerID, true
}

// sameWorker fills an empty id with the token's worker and refuses another one.
func sameWorker(id *string, worker string) error {
	if *id == "" {
		*id = worker
		return nil
	}
	if *id != worker {
		return errs.E(errs.PermissionDenied, "workerapi", "the token belongs to worker %s, not %s", worker, *id)
	}
	return nil
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (h *Handler) enroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	if err := h.decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Secret == "" {
		h.fail(w, r, errs.E(errs.Unauthenticated, "workerapi.enroll", "missing enroll secret"))
		return
	}
	// Compare hashes, so the comparison takes the same time whatever the lengths.
	got, want := sha256.Sum256([]byte(req.Secret)), sha256.Sum256([]byte(h.o.EnrollSecret))
	if h.o.EnrollSecret == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		h.fail(w, r, errs.E(errs.PermissionDenied, "workerapi.enroll", "wrong enroll secret"))
		return
	}
	if err := h.checkChannel(r); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := fleet.ValidWorkerID(req.WorkerID); err != nil {
		h.fail(w, r, err)
		return
	}
	token, err := newToken()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.issue(r.Context(), req.WorkerID, token); err != nil {
		h.fail(w, r, err)
		return
	}
	h.o.Log.InfoContext(r.Context(), "worker enrolled", "worker", req.WorkerID, "host", req.Host, "channel", h.o.Channel)
	writeJSON(w, http.StatusOK, EnrollReply{Token: token, WorkerID: req.WorkerID,
		HeartbeatEvery: h.o.HeartbeatEvery, PollEvery: h.o.PollEvery})
}

// issue stores token for worker and revokes the worker's previous token.
// The new token is written before the old one is revoked, so a crash in
// between leaves at worst the old token valid too, never neither.
func (h *Handler) issue(ctx context.Context, worker, token string) error {
	h.enrollMu.Lock()
	defer h.enrollMu.Unlock()
	rec, err := json.Marshal(tokenRecord{WorkerID: worker, Channel: h.o.Channel, Created: h.o.Clock.Now().UTC()})
	if err != nil {
		return err
	}
	hash := hashToken(token)
	prev, err := h.o.Store.GetMeta(ctx, tokenOfKeyPrefix+worker)
	if err != nil {
		return err
	}
	if err := h.o.Store.SetMeta(ctx, tokenKeyPrefix+hash, string(rec)); err != nil {
		return err
	}
	if err := h.o.Store.SetMeta(ctx, tokenOfKeyPrefix+worker, hash); err != nil {
		return err
	}
	if prev != "" && prev != hash {
		// The Store has no delete: an empty value reads as missing.
		if err := h.o.Store.SetMeta(ctx, tokenKeyPrefix+prev, ""); err != nil {
			return err
		}
	}
	return nil
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", errs.Wrap(errs.Unavailable, "workerapi: token", err)
	}
	return hex.EncodeToString(b), nil
}

func (h *Handler) heartbeat(w http.ResponseWriter, r *http.Request, worker string) {
	var hb fleet.Heartbeat
	if err := h.decode(r, &hb); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := sameWorker(&hb.WorkerID, worker); err != nil {
		h.fail(w, r, err)
		return
	}
	reply, err := h.o.Backend.Heartbeat(r.Context(), hb)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

func (h *Handler) claim(w http.ResponseWriter, r *http.Request, worker string) {
	var req ClaimRequest
	if err := h.decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := sameWorker(&req.WorkerID, worker); err != nil {
		h.fail(w, r, err)
		return
	}
	a, err := h.o.Backend.Claim(r.Context(), req.WorkerID)
	if errs.Is(err, errs.NotFound) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (h *Handler) appendLog(w http.ResponseWriter, r *http.Request, worker string) {
	q := r.URL.Query()
	id := q.Get("worker_id")
	if err := sameWorker(&id, worker); err != nil {
		h.fail(w, r, err)
		return
	}
	off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil || off < 0 {
		h.fail(w, r, errs.E(errs.InvalidArgument, "workerapi.log", "offset must be a non-negative integer, got %q", q.Get("offset")))
		return
	}
	if r.ContentLength > maxLogBody {
		h.tooLarge(w, r, "log chunk", maxLogBody)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLogBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.tooLarge(w, r, "log chunk", maxLogBody)
			return
		}
		h.fail(w, r, errs.Wrap(errs.Unavailable, "workerapi.log: read body", err))
		return
	}
	if err := h.o.Backend.AppendLog(r.Context(), id, q.Get("job_id"), off, data); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) putArtifact(w http.ResponseWriter, r *http.Request, worker string) {
	q := r.URL.Query()
	id := q.Get("worker_id")
	if err := sameWorker(&id, worker); err != nil {
		h.fail(w, r, err)
		return
	}
	limit := h.o.MaxArtifactBytes
	if r.ContentLength > limit {
		h.tooLarge(w, r, "artifact", limit)
		return
	}
	body := &capReader{r: r.Body, left: limit}
	err := h.o.Backend.PutArtifact(r.Context(), id, q.Get("job_id"), q.Get("name"), body)
	switch {
	case body.over || (err != nil && errs.Is(err, errs.ResourceExhausted)):
		// Over our limit or the fleet's: a size refusal, not worth retrying.
		h.tooLarge(w, r, "artifact", limit)
	case body.readErr != nil:
		// The upload broke off; the fleet wrote nothing.
		h.fail(w, r, errs.Wrap(errs.Unavailable, "workerapi.artifact: read body", body.readErr))
	case err != nil:
		h.fail(w, r, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// capReader fails once more than left bytes were read, and remembers a
// failure to read the request body.
type capReader struct {
	r       io.Reader
	left    int64
	over    bool
	readErr error
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.over {
		return 0, errs.E(errs.ResourceExhausted, "workerapi", "body too large")
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	c.left -= int64(n)
	if c.left < 0 {
		c.over = true
		return n, errs.E(errs.ResourceExhausted, "workerapi", "body too large")
	}
	return n, err
}

func (h *Handler) finish(w http.ResponseWriter, r *http.Request, worker string) {
	var res fleet.Result
	if err := h.decode(r, &res); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := sameWorker(&res.WorkerID, worker); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.o.Backend.Finish(r.Context(), res); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a JSON body of at most MaxBody bytes into v, refusing
// trailing data. An empty body leaves v as it is.
func (h *Handler) decode(r *http.Request, v any) error {
	const op = "workerapi: decode body"
	if r.ContentLength > h.o.MaxBody {
		return errs.E(errs.InvalidArgument, op, "body of %d bytes exceeds %d", r.ContentLength, h.o.MaxBody)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, h.o.MaxBody+1))
	if err != nil {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	if int64(len(b)) > h.o.MaxBody {
		return errs.E(errs.InvalidArgument, op, "body exceeds %d bytes", h.o.MaxBody)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	// Unknown fields are ignored, so a newer worker can talk to an older server.
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return errs.Wrap(errs.InvalidArgument, op, err)
	}
	if dec.More() {
		return errs.E(errs.InvalidArgument, op, "trailing data after the JSON value")
	}
	return nil
}

func (h *Handler) tooLarge(w http.ResponseWriter, r *http.Request, what string, limit int64) {
	h.o.Log.WarnContext(r.Context(), "worker api call refused", "path", r.URL.Path, "status", http.StatusRequestEntityTooLarge,
		"err", fmt.Sprintf("%s exceeds %d bytes", what, limit))
	writeErr(w, http.StatusRequestEntityTooLarge, errs.ResourceExhausted.String(), fmt.Sprintf("%s exceeds %d bytes", what, limit))
}

// fail answers err with the status of its code, in the shared error shape.
// Internal errors are logged and answered without their details.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := api.StatusOf(err)
	code, msg := errs.CodeOf(err).String(), err.Error()
	switch {
	case st >= 500:
		h.o.Log.ErrorContext(r.Context(), "worker api call failed", "path", r.URL.Path, "status", st, "err", err)
		if st == http.StatusInternalServerError {
			msg = "internal error"
		}
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		h.o.Log.WarnContext(r.Context(), "worker api call refused", "path", r.URL.Path, "status", st, "err", err,
			"remote", r.RemoteAddr)
	default:
		h.o.Log.DebugContext(r.Context(), "worker api call failed", "path", r.URL.Path, "status", st, "err", err)
	}
	if code == errs.Unknown.String() {
		code = "Internal"
	}
	writeErr(w, st, code, msg)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	var b api.ErrorBody
	b.Error.Code = code
	b.Error.Message = msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
