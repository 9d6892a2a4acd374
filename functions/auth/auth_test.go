package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

const token = "0123456789abcdef-token"

var lists = config.UI{
	Admins:     []string{"ada@example.com"},
	Privileged: []string{"pat@example.com"},
	Users:      []string{"uma@example.com"},
	LocalUser:  "me@laptop",
}

func req(host string, hdr map[string]string) *http.Request {
	r := httptest.NewRequest("GET", "http://"+host+"/", nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

func TestIdentify(t *testing.T) {
	everyone := lists
	everyone.Users = []string{"*"}
	tests := []struct {
		name  string
		o     auth.Options
		r     *http.Request
		email string
		via   string
		roles []auth.Role
		code  errs.Code
	}{
		{"local user, no lists: every role", auth.Options{Local: true}, req("127.0.0.1:8080", nil),
			"local@localhost", auth.ViaLocal, []auth.Role{auth.User, auth.Privileged, auth.Admin}, 0},
		{"local user by name", auth.Options{Local: true}, req("localhost:8080", nil), "local@localhost", auth.ViaLocal, []auth.Role{auth.User, auth.Privileged, auth.Admin}, 0},
		{"local user on ::1", auth.Options{Local: true}, req("[::1]:8080", nil), "local@localhost", auth.ViaLocal, []auth.Role{auth.User, auth.Privileged, auth.Admin}, 0},
		{"local user with lists: the lists decide", auth.Options{Local: true, UI: lists}, req("127.0.0.1", nil), "me@laptop", auth.ViaLocal, []auth.Role{}, 0},
		{"rebound host name is not local", auth.Options{Local: true}, req("evil.example:8080", nil), "", "", []auth.Role{}, 0},
		{"not local: anonymous", auth.Options{}, req("127.0.0.1", nil), "", "", []auth.Role{}, 0},
		{"anonymous reads with *", auth.Options{UI: everyone}, req("ci.example.com", nil), "", "", []auth.Role{auth.User}, 0},
		{"admin by token", auth.Options{UI: lists, Tokens: map[string]string{token: "ADA@example.com"}}, req("ci", map[string]string{"Authorization": "Bearer " + token}),
			"ADA@example.com", auth.ViaToken, []auth.Role{auth.User, auth.Privileged, auth.Admin}, 0},
		{"unknown token", auth.Options{UI: lists, Tokens: map[string]string{token: "ada@example.com"}}, req("ci", map[string]string{"Authorization": "Bearer nope"}), "", "", nil, errs.PermissionDenied},
		{"token beats local", auth.Options{Local: true, Tokens: map[string]string{token: "uma@example.com"}, UI: lists}, req("127.0.0.1", map[string]string{"Authorization": "bearer " + token}),
			"uma@example.com", auth.ViaToken, []auth.Role{auth.User}, 0},
		{"basic auth refused", auth.Options{}, req("ci", map[string]string{"Authorization": "Basic YTpi"}), "", "", nil, errs.PermissionDenied},
		{"trusted IAP", auth.Options{UI: func() config.UI { u := lists; u.TrustIAP = true; return u }()},
			req("ci", map[string]string{auth.HeaderIAPEmail: "accounts.google.com:pat@example.com"}), "pat@example.com", auth.ViaIAP, []auth.Role{auth.User, auth.Privileged}, 0},
		{"untrusted IAP header is ignored", auth.Options{UI: lists}, req("ci", map[string]string{auth.HeaderIAPEmail: "accounts.google.com:ada@example.com"}), "", "", []auth.Role{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := auth.New(tc.o).Identify(tc.r)
			if tc.code != 0 {
				if !errs.Is(err, tc.code) {
					t.Fatalf("err = %v, want %v", err, tc.code)
				}
				return
			}
			if err != nil || id.Email != tc.email || id.Via != tc.via || !slices.Equal(id.Roles, tc.roles) {
				t.Fatalf("Identify = %+v, %v; want %s via %q with %v", id, err, tc.email, tc.via, tc.roles)
			}
		})
	}
}

func withID(a *auth.Authenticator, r *http.Request) context.Context {
	id, err := a.Identify(r)
	return auth.WithIdentity(r.Context(), id, err)
}

func TestRequire(t *testing.T) {
	a := auth.New(auth.Options{UI: lists, Tokens: map[string]string{token: "pat@example.com"}})
	ctx := withID(a, req("ci", map[string]string{"Authorization": "Bearer " + token}))
	if err := auth.Require(ctx, auth.Privileged); err != nil {
		t.Fatal(err)
	}
	if err := auth.Require(ctx, auth.Admin); !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "pat@example.com lacks the admin role") {
		t.Fatalf("privileged asking for admin: %v", err)
	}
	if err := auth.Require(context.Background(), auth.User); !errs.Is(err, errs.PermissionDenied) {
		t.Fatalf("no identity: %v", err)
	}
	bad := withID(a, req("ci", map[string]string{"Authorization": "Bearer wrong"}))
	if err := auth.Require(bad, auth.User); !errs.Is(err, errs.PermissionDenied) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestXSRF(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	u := lists
	u.TrustIAP = true
	a := auth.New(auth.Options{UI: u, Clock: fc})
	as := func(email string) context.Context {
		return withID(a, req("ci", map[string]string{auth.HeaderIAPEmail: "accounts.google.com:" + email}))
	}
	ada, pat := as("ada@example.com"), as("pat@example.com")
	tok := a.XSRFToken(ada)
	if err := a.CheckXSRF(ada, tok); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		tok  string
	}{
		{"another user's token", pat, tok},
		{"no token", ada, ""},
		{"garbage", ada, "v1.x.y"},
		{"tampered", ada, tok[:len(tok)-1] + "0"},
		{"other key", ada, auth.New(auth.Options{UI: u, Clock: fc}).XSRFToken(ada)},
	} {
		if err := a.CheckXSRF(tc.ctx, tc.tok); !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("%s: %v, want PermissionDenied", tc.name, err)
		}
	}
	fc.Advance(11 * time.Hour)
	if err := a.CheckXSRF(ada, tok); err != nil {
		t.Fatalf("within the window: %v", err)
	}
	fc.Advance(2 * time.Hour)
	if err := a.CheckXSRF(ada, tok); !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("after the window: %v", err)
	}
}

func TestCheckMutation(t *testing.T) {
	a := auth.New(auth.Options{Local: true, Tokens: map[string]string{token: "bot@example.com"},
		UI: config.UI{Privileged: []string{"bot@example.com", "local@localhost"}}})
	post := func(hdr map[string]string, form url.Values) *http.Request {
		r := httptest.NewRequest("POST", "http://127.0.0.1/x", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		return r.WithContext(withID(a, r))
	}
	local := post(nil, nil)
	tok := a.XSRFToken(local.Context())
	for _, tc := range []struct {
		name string
		r    *http.Request
		role auth.Role
		ok   bool
	}{
		{"form with token", post(nil, url.Values{auth.FormXSRF: {tok}}), auth.Privileged, true},
		{"header with token", post(map[string]string{auth.HeaderXSRF: tok}, nil), auth.Privileged, true},
		{"no token", post(nil, nil), auth.Privileged, false},
		{"role missing", post(nil, url.Values{auth.FormXSRF: {tok}}), auth.Admin, false},
		{"bearer needs no token", post(map[string]string{"Authorization": "Bearer " + token}, nil), auth.Privileged, true},
	} {
		err := a.CheckMutation(tc.r, tc.role)
		if tc.ok != (err == nil) || (err != nil && !errs.Is(err, errs.PermissionDenied)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// Instances sharing a store accept each other's tokens.
func TestStoreKey(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := auth.Options{Local: true, KeyFrom: auth.StoreKey(st)}
	a, b := auth.New(o), auth.New(o)
	ctx := withID(a, req("127.0.0.1", nil))
	if err := b.CheckXSRF(ctx, a.XSRFToken(ctx)); err != nil {
		t.Fatal(err)
	}
	if v, _ := st.GetMeta(ctx, "ui.xsrf-key"); len(v) != 64 {
		t.Fatalf("stored key %q", v)
	}
}
