// Package webhook is the Gerrit webhook endpoint: the webhooks plugin posts
// each Gerrit event here, and the handler defers check_new_cl for the change
// it names. It is platform-neutral (an http.Handler).
//
// The plugin signs nothing, so an event is a hint, never a fact: the request
// is authenticated only by a secret token in the URL (?token=...), and the
// controller re-reads the change from Gerrit's REST API before acting on it.
// The answer comes fast (Gerrit gives a webhook 5 s): 202 once the task is
// durably deferred, or 202 at once for an event that cannot matter (another
// project or branch, or a type that changes nothing Tollgate looks at).
//
// Refusals use the API's JSON error shape: 401 without a token, 403 with a
// wrong one (or when no token is configured), 400 for a body that is not a
// Gerrit event, 413 for one over the size limit, 405 for a method other
// than POST; a failure to defer answers 503 so the plugin may retry, and the
// periodic poll catches the change anyway.
package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// Options configure the handler. Tasks is required.
type Options struct {
	Tasks tasks.Tasks
	// Token is the secret every request must carry as ?token=. Empty
	// refuses every request (403): an open webhook would let anyone make
	// Tollgate read Gerrit on their behalf.
	Token string
	// Project and Branches select the changes that can matter (config
	// gerrit.project and gerrit.branches); empty accepts all.
	Project  string
	Branches []string
	// ReadyLabel is the opt-in label (config trust.ready_label): a comment
	// matters only if it changes this label's vote. Empty: any vote change.
	ReadyLabel string
	// MaxBody bounds the request body (default 1 MiB).
	MaxBody int64
	// DeferTimeout bounds the deferral, within Gerrit's patience (default 4s).
	DeferTimeout time.Duration
	Log          *slog.Logger // default slog.Default()
}

// Event is the part of a Gerrit event the webhook reads.
type Event struct {
	Type     string
	Change   int    // 0 when the event names no change
	Project  string // of the change
	Branch   string // of the change, without refs/heads/
	Patchset int    // 0 when absent
	// Approvals are the label votes a comment-added event carries; Changed
	// is set when the vote differs from the previous one (Gerrit sends
	// oldValue only then).
	Approvals []Approval
}

// Approval is one label vote of a comment.
type Approval struct {
	Label   string
	Value   string
	Changed bool
}

// changeTypes are the event types that can make a change a new candidate or
// change its opt-in: a new patchset, a comment that may approve the ready
// label, a change back from abandoned, out of work-in-progress or private.
var changeTypes = []string{"patchset-created", "comment-added", "change-restored", "wip-state-changed", "private-state-changed"}

// Response is the body of a 202.
type Response struct {
	Status string `json:"status"` // "deferred" or "ignored"
	Change int    `json:"change,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// New returns the webhook handler. It panics without Tasks (a composition
// error).
func New(o Options) http.Handler {
	if o.Tasks == nil {
		panic("webhook.New: Tasks is required")
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.DeferTimeout <= 0 {
		o.DeferTimeout = 4 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	h := &handler{o: o}
	if o.Token != "" {
		sum := sha256.Sum256([]byte(o.Token))
		h.tokenSum = sum[:]
	}
	return h
}

type handler struct {
	o        Options
	tokenSum []byte
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const op = "webhook"
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST only")
		return
	}
	if err := h.authenticate(r); err != nil {
		h.o.Log.WarnContext(r.Context(), "gerrit webhook refused", "err", err.Error(), "remote", r.RemoteAddr)
		api.WriteError(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, errs.ResourceExhausted.String(),
				"body over "+strconv.FormatInt(h.o.MaxBody, 10)+" bytes")
			return
		}
		api.WriteError(w, errs.Wrap(errs.InvalidArgument, op, err))
		return
	}
	ev, err := ParseEvent(body)
	if err != nil {
		h.o.Log.WarnContext(r.Context(), "gerrit webhook: malformed event", "err", err.Error())
		api.WriteError(w, err)
		return
	}
	log := h.o.Log.With("type", ev.Type, "change", ev.Change, "patchset", ev.Patchset)
	if reason := h.irrelevant(ev); reason != "" {
		log.InfoContext(r.Context(), "gerrit webhook", "outcome", "ignored", "reason", reason)
		writeJSON(w, http.StatusAccepted, Response{Status: "ignored", Change: ev.Change, Reason: reason})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.DeferTimeout)
	defer cancel()
	if err := h.o.Tasks.Defer(ctx, controller.CheckNewCL, controller.CheckNewCLArgs{Change: ev.Change}); err != nil {
		log.ErrorContext(r.Context(), "gerrit webhook", "outcome", "error", "err", err.Error())
		api.WriteError(w, errs.Wrap(errs.Unavailable, op, err))
		return
	}
	log.InfoContext(r.Context(), "gerrit webhook", "outcome", "deferred")
	writeJSON(w, http.StatusAccepted, Response{Status: "deferred", Change: ev.Change})
}

// authenticate compares the token in constant time (over hashes, so the
// length leaks nothing either).
func (h *handler) authenticate(r *http.Request) error {
	const op = "webhook"
	tok := r.URL.Query().Get("token")
	switch {
	case tok == "":
		return errs.E(errs.Unauthenticated, op, "missing ?token=")
	case h.tokenSum == nil:
		return errs.E(errs.PermissionDenied, op, "no webhook token is configured")
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum) != 1 {
		return errs.E(errs.PermissionDenied, op, "wrong token")
	}
	return nil
}

// irrelevant says why ev cannot matter, or "".
func (h *handler) irrelevant(ev Event) string {
	switch {
	case !slices.Contains(changeTypes, ev.Type):
		return "event type " + ev.Type
	case h.o.Project != "" && ev.Project != h.o.Project:
		return "project " + ev.Project
	case len(h.o.Branches) > 0 && !slices.Contains(h.o.Branches, ev.Branch):
		return "branch " + ev.Branch
	case ev.Type == "comment-added" && !h.votesReady(ev):
		return "comment without a ready label vote"
	}
	return ""
}

func (h *handler) votesReady(ev Event) bool {
	for _, a := range ev.Approvals {
		if a.Changed && (h.o.ReadyLabel == "" || a.Label == h.o.ReadyLabel) {
			return true
		}
	}
	return false
}

// wire is the JSON of a Gerrit event (the stream-events format the webhooks
// plugin posts). Numbers are strings in some Gerrit versions.
type wire struct {
	Type   *string `json:"type"`
	Change *struct {
		Number  flexInt `json:"number"`
		Project string  `json:"project"`
		Branch  string  `json:"branch"`
	} `json:"change"`
	PatchSet *struct {
		Number flexInt `json:"number"`
	} `json:"patchSet"`
	Approvals []struct {
		Type     string  `json:"type"`
		Value    string  `json:"value"`
		OldValue *string `json:"oldValue"`
	} `json:"approvals"`
}

// flexInt is a JSON number or a string holding one.
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" {
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not an integer: " + string(b))
	}
	*n = flexInt(v)
	return nil
}

// ParseEvent decodes a Gerrit event. InvalidArgument if it is not a JSON
// object with a type, or if it has a change without a positive number.
// Unknown fields are fine: Gerrit adds them freely.
func ParseEvent(b []byte) (Event, error) {
	const op = "webhook.ParseEvent"
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, errs.Wrap(errs.InvalidArgument, op, err)
	}
	if w.Type == nil || *w.Type == "" {
		return Event{}, errs.E(errs.InvalidArgument, op, "no event type")
	}
	ev := Event{Type: *w.Type}
	if w.Change != nil {
		if w.Change.Number <= 0 {
			return Event{}, errs.E(errs.InvalidArgument, op, "%s event without a positive change number", ev.Type)
		}
		ev.Change, ev.Project = int(w.Change.Number), w.Change.Project
		ev.Branch = strings.TrimPrefix(w.Change.Branch, "refs/heads/")
	}
	if w.PatchSet != nil {
		ev.Patchset = int(w.PatchSet.Number)
	}
	for _, a := range w.Approvals {
		ev.Approvals = append(ev.Approvals, Approval{Label: a.Type, Value: a.Value, Changed: a.OldValue != nil && *a.OldValue != a.Value})
	}
	if ev.Change == 0 && slices.Contains(changeTypes, ev.Type) {
		return Event{}, errs.E(errs.InvalidArgument, op, "%s event without a change", ev.Type)
	}
	return ev, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the API's error shape with a status api.StatusOf has no
// code for.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b api.ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}
