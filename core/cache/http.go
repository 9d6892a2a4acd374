package cache

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// The HTTP protocol of the cache, spoken by the worker API (under
// /worker/v1/cache/, behind its token) and by the worker's local proxy for
// jobs (under TOLLGATE_CACHE_URL). Paths are relative to that base:
//
//	POST find_missing          {"digests": ["hash/size", ...]} → {"missing": [...]}
//	GET  cas/{hash}/{size}     → 200 the content (application/octet-stream)
//	PUT  cas/{hash}/{size}     the content → 204
//	GET  refs/{name}           → {"digest": "hash/size"}
//	PUT  refs/{name}           {"digest": "hash/size"} → 204
//
// Errors answer {"error": {"code", "message"}} (the shape of the other
// APIs) with the status of the code; ResourceExhausted is 413, so clients
// that retry 429 do not retry an object that will never fit.

// MaxFindMissing bounds the digests of one find_missing request; clients
// send larger sets in batches.
const MaxFindMissing = 10000

// FindMissingRequest is the body of find_missing.
type FindMissingRequest struct {
	Digests []Digest `json:"digests"`
}

// FindMissingReply is its answer.
type FindMissingReply struct {
	Missing []Digest `json:"missing"`
}

// RefBody is the body of a ref read or write.
type RefBody struct {
	Digest Digest `json:"digest"`
}

const (
	maxFindMissingBody = 2 << 20
	maxRefBody         = 4 << 10
)

// NewHandler serves a over the protocol. The request path must be relative
// to the protocol's base (mount it with http.StripPrefix); authentication
// is the mounting code's job. log may be nil.
func NewHandler(a Access, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{a: a, log: log}
}

type handler struct {
	a   Access
	log *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case p == "find_missing":
		if !allow(w, r, http.MethodPost) {
			return
		}
		h.findMissing(w, r)
	case strings.HasPrefix(p, "cas/"):
		if !allow(w, r, http.MethodGet, http.MethodHead, http.MethodPut) {
			return
		}
		d, err := digestFromPath(strings.TrimPrefix(p, "cas/"))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if r.Method == http.MethodPut {
			h.put(w, r, d)
		} else {
			h.get(w, r, d)
		}
	case strings.HasPrefix(p, "refs/"):
		if !allow(w, r, http.MethodGet, http.MethodPut) {
			return
		}
		name := strings.TrimPrefix(p, "refs/")
		if err := ValidRefName(name); err != nil {
			h.fail(w, r, err)
			return
		}
		if r.Method == http.MethodPut {
			h.setRef(w, r, name)
		} else {
			h.resolveRef(w, r, name)
		}
	default:
		h.fail(w, r, errs.E(errs.NotFound, "cache", "no such endpoint: %s", r.URL.Path))
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	WriteError(w, http.StatusMethodNotAllowed, errs.InvalidArgument.String(), "use "+strings.Join(methods, " or "))
	return false
}

// digestFromPath parses "{hash}/{size}".
func digestFromPath(p string) (Digest, error) {
	d, err := ParseDigest(p)
	if err != nil {
		return Digest{}, errs.E(errs.InvalidArgument, "cache", "want cas/{hash}/{size}: %v", err)
	}
	return d, nil
}

func (h *handler) findMissing(w http.ResponseWriter, r *http.Request) {
	var req FindMissingRequest
	if err := decodeJSON(r, maxFindMissingBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(req.Digests) > MaxFindMissing {
		h.fail(w, r, errs.E(errs.InvalidArgument, "cache.find_missing", "%d digests; send at most %d per request", len(req.Digests), MaxFindMissing))
		return
	}
	missing, err := h.a.FindMissing(r.Context(), req.Digests)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if missing == nil {
		missing = []Digest{}
	}
	writeJSON(w, http.StatusOK, FindMissingReply{Missing: missing})
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, d Digest) {
	rc, err := h.a.Get(r.Context(), d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(d.Size, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// Past the header, a failure can only cut the body short: the
	// Content-Length tells the client, which also checks the digest.
	if n, err := io.Copy(w, rc); err != nil || n != d.Size {
		h.log.WarnContext(r.Context(), "cache download cut short", "digest", d.String(), "sent", n, "err", err)
	}
}

func (h *handler) put(w http.ResponseWriter, r *http.Request, d Digest) {
	if r.ContentLength >= 0 && r.ContentLength != d.Size {
		h.fail(w, r, errs.E(errs.InvalidArgument, "cache.put", "body of %d bytes for an object of %d", r.ContentLength, d.Size))
		return
	}
	body := &bodyReader{r: r.Body}
	err := h.a.Put(r.Context(), d, body)
	if err != nil && body.err != nil && !errs.Is(err, errs.InvalidArgument) {
		// The upload broke off: the client's side, worth a retry.
		err = errs.Wrap(errs.Unavailable, "cache.put: read body", body.err)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// bodyReader remembers a failure to read the request body.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (h *handler) setRef(w http.ResponseWriter, r *http.Request, name string) {
	var body RefBody
	if err := decodeJSON(r, maxRefBody, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if body.Digest.Hash == "" {
		h.fail(w, r, errs.E(errs.InvalidArgument, "cache.set_ref", "the body needs a digest"))
		return
	}
	if err := h.a.SetRef(r.Context(), name, body.Digest); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) resolveRef(w http.ResponseWriter, r *http.Request, name string) {
	d, err := h.a.ResolveRef(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RefBody{Digest: d})
}

// decodeJSON reads one JSON value of at most limit bytes into v.
func decodeJSON(r *http.Request, limit int64, v any) error {
	const op = "cache: decode body"
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	if int64(len(b)) > limit {
		return errs.E(errs.InvalidArgument, op, "body exceeds %d bytes", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		// A bad digest inside keeps its own message.
		return errs.Wrap(errs.InvalidArgument, op, err)
	}
	if dec.More() {
		return errs.E(errs.InvalidArgument, op, "trailing data after the JSON value")
	}
	return nil
}

// StatusOf returns the HTTP status the protocol answers for err's code:
// errs.HTTPStatus, except that an object too large is 413, which clients
// do not retry (429 would ask them to).
func StatusOf(err error) int {
	if errs.CodeOf(err) == errs.ResourceExhausted {
		return http.StatusRequestEntityTooLarge
	}
	return errs.HTTPStatus(err)
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := StatusOf(err)
	code, msg := errs.CodeOf(err).String(), err.Error()
	if st >= 500 {
		h.log.ErrorContext(r.Context(), "cache call failed", "path", r.URL.Path, "status", st, "err", err)
		if st == http.StatusInternalServerError {
			msg = "internal error"
		}
	}
	if code == errs.Unknown.String() {
		code = "Internal"
	}
	WriteError(w, st, code, msg)
}

// ErrorBody is the JSON shape of an error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError answers an error in the shared shape.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ResponseError turns a non-2xx answer into an error with the code the
// server named (or the status's, if it named none this version knows).
func ResponseError(op string, status int, body []byte) error {
	code := codeOfStatus(status)
	msg := strings.TrimSpace(string(body))
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		msg = eb.Error.Message
		if c, ok := codeNamed(eb.Error.Code); ok {
			code = c
		}
	}
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	return errs.E(code, op, "%d %s: %s", status, http.StatusText(status), msg)
}

func codeNamed(name string) (errs.Code, bool) {
	for c := errs.NotFound; c <= errs.Aborted; c++ {
		if c.String() == name {
			return c, true
		}
	}
	return errs.Unknown, false
}

func codeOfStatus(status int) errs.Code {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return errs.InvalidArgument
	case http.StatusUnauthorized:
		return errs.Unauthenticated
	case http.StatusForbidden:
		return errs.PermissionDenied
	case http.StatusNotFound:
		return errs.NotFound
	case http.StatusConflict:
		return errs.FailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusInsufficientStorage:
		return errs.ResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errs.Unavailable
	}
	return errs.Unknown
}
