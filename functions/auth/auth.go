// Package auth says who makes a request to the web UI or the JSON API and
// what they may do, and guards forms against cross-site request forgery.
//
// Identity comes, in order, from a bearer token (ui.api_tokens_env maps
// tokens to emails; scripts use it), from Identity-Aware Proxy's
// X-Goog-Authenticated-User-Email header when ui.trust_iap is set (the
// deployment must send every request through IAP: the header is otherwise
// anyone's to forge), or, for `tollgate up` on a loopback listener, the
// configured local user. Anything else is anonymous. Google ID tokens are
// not verified here (that needs Google's keys over the network): behind
// Google Cloud, IAP verifies them and passes the email on.
//
// Roles follow from the email and the config's allow-lists: admin (every
// action, including quarantining and deleting workers), privileged
// (cancel, retry, recheck), user (read). ui.users may hold "*": anyone may
// read. Workers authenticate to the worker API with tokens of their own;
// those are unknown here and refused.
//
// Every mutating request carries an XSRF token bound to the identity and
// to a time window (a form field, or a header for JSON clients), unless it
// came with a bearer token, which a browser never attaches on its own.
package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/store"
)

// Role is a set of permissions.
type Role string

const (
	// User reads every page and /api/v1 listing.
	User Role = "user"
	// Privileged also cancels and retries jobs and rechecks patchsets.
	Privileged Role = "privileged"
	// Admin also quarantines, unquarantines and deletes workers.
	Admin Role = "admin"
)

// Ways an identity is established.
const (
	ViaToken = "token"
	ViaIAP   = "iap"
	ViaLocal = "local"
)

// Identity is who makes a request and what they may do.
type Identity struct {
	Email string `json:"email,omitempty"` // "" when anonymous
	Via   string `json:"via,omitempty"`   // ViaToken, ViaIAP, ViaLocal; "" when anonymous
	Roles []Role `json:"roles"`
}

// Can reports whether the identity holds role.
func (id Identity) Can(r Role) bool { return slices.Contains(id.Roles, r) }

// Name is how the identity is shown and recorded (an email, or "anonymous").
func (id Identity) Name() string {
	if id.Email == "" {
		return "anonymous"
	}
	return id.Email
}

// Headers the package reads.
const (
	HeaderIAPEmail = "X-Goog-Authenticated-User-Email"
	// HeaderXSRF carries the XSRF token of a JSON request made by a
	// browser session (no bearer token).
	HeaderXSRF = "X-Tollgate-XSRF"
	// FormXSRF is the form field of the XSRF token.
	FormXSRF = "xsrf"
)

// Options configure an Authenticator.
type Options struct {
	UI config.UI
	// Tokens maps bearer tokens to emails (config.APITokens).
	Tokens map[string]string
	// Local makes requests that name nobody, sent to a loopback host name,
	// the local user: for `tollgate up` listening on loopback only.
	Local bool
	// Key signs XSRF tokens. Nil: KeyFrom, or a random key per process.
	Key []byte
	// KeyFrom supplies the key when Key is nil (StoreKey shares one between
	// instances); it is read again every KeyRefresh.
	KeyFrom func(context.Context) ([]byte, error)
	// XSRFWindow is how long an XSRF token stays good (default 12h).
	XSRFWindow time.Duration
	Clock      clock.Clock // default: real
}

// KeyRefresh is how often a key from Options.KeyFrom is read again, so
// instances that raced to create it agree within that time.
const KeyRefresh = time.Minute

// Authenticator identifies requests and checks XSRF tokens. Safe for
// concurrent use.
type Authenticator struct {
	o      Options
	tokens map[[32]byte]string // sha256(token) → email

	mu      sync.Mutex
	key     []byte
	keyRead time.Time
}

// New returns an Authenticator.
func New(o Options) *Authenticator {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.XSRFWindow <= 0 {
		o.XSRFWindow = 12 * time.Hour
	}
	if o.UI.LocalUser == "" {
		o.UI.LocalUser = config.Defaults().UI.LocalUser
	}
	a := &Authenticator{o: o, tokens: map[[32]byte]string{}}
	for tok, email := range o.Tokens {
		a.tokens[sha256.Sum256([]byte(tok))] = email
	}
	if o.Key == nil && o.KeyFrom == nil {
		a.key = make([]byte, 32)
		_, _ = rand.Read(a.key)
	} else if o.Key != nil {
		a.key = o.Key
	}
	return a
}

// Identify says who sent r. A bearer token that is not one of the
// configured tokens is PermissionDenied (as the worker API answers unknown
// tokens), and so is an Authorization header of another scheme.
func (a *Authenticator) Identify(r *http.Request) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return Identity{}, errs.E(errs.PermissionDenied, "auth", "the Authorization header must be \"Bearer TOKEN\"")
		}
		email, ok := a.tokens[sha256.Sum256([]byte(tok))]
		if !ok {
			return Identity{}, errs.E(errs.PermissionDenied, "auth", "unknown bearer token")
		}
		return a.identity(email, ViaToken), nil
	}
	if a.o.UI.TrustIAP {
		if v := r.Header.Get(HeaderIAPEmail); v != "" {
			// "accounts.google.com:alice@example.com"
			if i := strings.LastIndexByte(v, ':'); i >= 0 {
				v = v[i+1:]
			}
			if v != "" {
				return a.identity(v, ViaIAP), nil
			}
		}
	}
	if a.o.Local && loopbackHost(r.Host) {
		return a.identity(a.o.UI.LocalUser, ViaLocal), nil
	}
	return a.identity("", ""), nil
}

// loopbackHost reports whether the Host header names this machine. A local
// server refuses the local identity to other names, so a page whose name
// resolves to 127.0.0.1 (DNS rebinding) cannot act as the local user.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// identity maps an email to its roles.
func (a *Authenticator) identity(email, via string) Identity {
	id := Identity{Email: email, Via: via, Roles: []Role{}}
	ui := a.o.UI
	in := func(list []string) bool {
		return email != "" && slices.ContainsFunc(list, func(e string) bool { return strings.EqualFold(e, email) })
	}
	admin, priv, user := in(ui.Admins), in(ui.Privileged), in(ui.Users) || slices.Contains(ui.Users, "*")
	if via == ViaLocal && !ui.AllowListsSet() {
		admin = true
	}
	priv = priv || admin
	user = user || priv
	for _, r := range []struct {
		ok   bool
		role Role
	}{{user, User}, {priv, Privileged}, {admin, Admin}} {
		if r.ok {
			id.Roles = append(id.Roles, r.role)
		}
	}
	return id
}

type ctxKey struct{}

type identified struct {
	id  Identity
	err error
}

// Middleware identifies every request and puts the identity (or why it
// could not be established) in its context, for FromContext and Require.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Value(ctxKey{}).(identified); ok {
			next.ServeHTTP(w, r) // identified by an outer handler already
			return
		}
		id, err := a.Identify(r)
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id, err)))
	})
}

// WithIdentity returns ctx carrying id (or err, when identification failed).
func WithIdentity(ctx context.Context, id Identity, err error) context.Context {
	return context.WithValue(ctx, ctxKey{}, identified{id, err})
}

// FromContext returns the identity Middleware found; anonymous, with no
// role, when there is none.
func FromContext(ctx context.Context) (Identity, error) {
	v, ok := ctx.Value(ctxKey{}).(identified)
	if !ok {
		return Identity{Roles: []Role{}}, nil
	}
	return v.id, v.err
}

// Require returns nil if the request's identity holds role, and a
// PermissionDenied error saying who lacks what otherwise.
func Require(ctx context.Context, role Role) error {
	id, err := FromContext(ctx)
	if err != nil {
		return err
	}
	if id.Can(role) {
		return nil
	}
	hint := ""
	if id.Email == "" {
		hint = " (sign in, or use a bearer token)"
	}
	return errs.E(errs.PermissionDenied, "auth", "%s lacks the %s role%s", id.Name(), role, hint)
}

// signingKey returns the XSRF key, reading Options.KeyFrom again after
// KeyRefresh.
func (a *Authenticator) signingKey(ctx context.Context) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.o.KeyFrom == nil || (a.key != nil && a.o.Clock.Now().Sub(a.keyRead) < KeyRefresh) {
		return a.key, nil
	}
	k, err := a.o.KeyFrom(ctx)
	if err != nil {
		if a.key != nil {
			return a.key, nil // keep the last good key through a blip
		}
		return nil, err
	}
	a.key, a.keyRead = k, a.o.Clock.Now()
	return k, nil
}

// xsrfStep is the granularity of token times.
const xsrfStep = time.Minute

func mac(key []byte, email string, step int64) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "tollgate-xsrf\x00%s\x00%d", strings.ToLower(email), step)
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// XSRFToken returns a token for forms of the request's identity; "" if the
// key cannot be read (forms then fail their check, which is safe).
func (a *Authenticator) XSRFToken(ctx context.Context) string {
	id, _ := FromContext(ctx)
	key, err := a.signingKey(ctx)
	if err != nil {
		return ""
	}
	step := a.o.Clock.Now().Unix() / int64(xsrfStep/time.Second)
	return "v1." + strconv.FormatInt(step, 10) + "." + mac(key, id.Email, step)
}

// CheckXSRF returns nil if token was made for the request's identity
// within the XSRF window, and PermissionDenied otherwise.
func (a *Authenticator) CheckXSRF(ctx context.Context, token string) error {
	refuse := func(why string) error {
		return errs.E(errs.PermissionDenied, "auth", "XSRF check failed: %s; reload the page and try again", why)
	}
	if token == "" {
		return refuse("no token")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return refuse("malformed token")
	}
	step, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return refuse("malformed token")
	}
	now := a.o.Clock.Now().Unix() / int64(xsrfStep/time.Second)
	if step > now+1 || now-step > int64(a.o.XSRFWindow/xsrfStep) {
		return refuse("the token expired")
	}
	key, err := a.signingKey(ctx)
	if err != nil {
		return errs.Wrap(errs.Unavailable, "auth: XSRF key", err)
	}
	id, _ := FromContext(ctx)
	if !hmac.Equal([]byte(parts[2]), []byte(mac(key, id.Email, step))) {
		return refuse("the token is not this user's")
	}
	return nil
}

// CheckMutation guards a request that changes something: the identity
// must hold role, and a request without a bearer token must carry a valid
// XSRF token (the form field, or the header for JSON clients). Both
// refusals are PermissionDenied.
func (a *Authenticator) CheckMutation(r *http.Request, role Role) error {
	if err := Require(r.Context(), role); err != nil {
		return err
	}
	if id, _ := FromContext(r.Context()); id.Via == ViaToken {
		return nil
	}
	tok := r.Header.Get(HeaderXSRF)
	if tok == "" {
		tok = r.PostFormValue(FormXSRF)
	}
	return a.CheckXSRF(r.Context(), tok)
}

// metaXSRFKey is the Store meta key of the shared XSRF key.
const metaXSRFKey = "ui.xsrf-key"

// StoreKey returns a KeyFrom that keeps one random XSRF key in the Store's
// meta, created on first use, so every instance serving the UI (and a
// restarted `tollgate up`) accepts the others' tokens. Two instances that
// race to create it agree after KeyRefresh: the last write wins.
func StoreKey(st store.Store) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		v, err := st.GetMeta(ctx, metaXSRFKey)
		if err != nil {
			return nil, err
		}
		if v != "" {
			return hex.DecodeString(v)
		}
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := st.SetMeta(ctx, metaXSRFKey, hex.EncodeToString(k)); err != nil {
			return nil, err
		}
		return k, nil
	}
}

// FromConfig returns the Authenticator the config describes: its ui
// allow-lists, the bearer tokens of ui.api_tokens_env, and the XSRF key of
// ui.xsrf_key_env or else one kept in st (StoreKey). local is for a server
// listening on loopback only (LoopbackAddr).
func FromConfig(cfg *config.Config, st store.Store, local bool) (*Authenticator, error) {
	tokens, err := cfg.APITokens()
	if err != nil {
		return nil, err
	}
	key, err := cfg.XSRFKey()
	if err != nil {
		return nil, err
	}
	o := Options{UI: cfg.UI, Tokens: tokens, Local: local, Key: key}
	if key == nil {
		o.KeyFrom = StoreKey(st)
	}
	return New(o), nil
}

// LoopbackAddr reports whether a listen address ("127.0.0.1:8080",
// "localhost:8080", "[::1]:0") accepts connections from this machine only.
// An address without a host (":8080") listens everywhere: false.
func LoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return loopbackHost(host)
}
