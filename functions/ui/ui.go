// Package ui is Tollgate's web UI: server-rendered pages (html/template,
// assets embedded from package web) over the JSON API's views, for the
// people who use and run the CI. It serves, on one handler:
//
//	/                    overview: queue, workers, running jobs, recent patchsets and postsubmits, dead letters
//	/cls, /cls/{id}      patchsets (filters: change, owner, state) and one patchset with its jobs and vote
//	/jobs, /jobs/{id}    jobs (state filters with 24 h counts, sorted by created, started or ended) and one
//	                     job with its live log, artifacts, worker, cancel and retry
//	/workers, /workers/{id}  workers (sorted by last seen, state or id, with counts) and one worker with its
//	                     jobs, idle and run time, quarantine and delete
//	/branches            postsubmit runs per branch
//	/stats               queue length, workers, queue and run time per job type, completion time, pass rate
//	/api/v1/...          the JSON API (functions/api), the same views under the same names
//	/static/...          CSS, JS, icon
//	/healthz
//
// Every page needs the user role; actions are form POSTs that need the
// privileged role (cancel, retry, recheck) or admin (workers), and an XSRF
// token, or they answer 403 and change nothing. Pages carry a strict
// Content-Security-Policy: scripts and styles only from /static/, no inline
// script, no framing.
package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/functions/api"
	"github.com/tollgate-ci/tollgate/functions/auth"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
	"github.com/tollgate-ci/tollgate/web"
)

// Options configure the UI. Config and Store are required.
type Options struct {
	Config *config.Config
	Store  store.Store
	// Dead lists dead-lettered tasks (the task queue); nil: none shown.
	Dead tasks.DeadLetters
	// Blobs holds job artifacts; nil: none shown.
	Blobs blob.Bucket
	// Actions cancels, retries and rechecks: the controller. Nil: those
	// actions answer 503.
	Actions api.Actions
	// Auth identifies people. Nil: built from Config by auth.FromConfig,
	// with Local.
	Auth *auth.Authenticator
	// Local says the server listens on loopback only (`tollgate up`
	// without --listen elsewhere): requests naming nobody are the local
	// user (auth.LoopbackAddr tells).
	Local bool
	// RevokeWorker revokes a deleted worker's token; nil: workerapi.Revoke
	// on Store.
	RevokeWorker func(ctx context.Context, workerID string) error
	// Version is shown in the footer.
	Version string
	Clock   clock.Clock  // default: real
	Log     *slog.Logger // default: slog.Default()
}

// UI is the web UI's handler.
type UI struct {
	o      Options
	api    *api.Server
	auth   *auth.Authenticator
	gerrit string
	pages  map[string]*template.Template
	asset  string // a hash of the static files, for cache busting
	static http.Handler
	mux    *http.ServeMux
	bufs   sync.Pool
}

var _ http.Handler = (*UI)(nil)

// New returns the UI, or an error when the options or the ui config
// (tokens, keys) are unusable.
func New(o Options) (*UI, error) {
	if o.Config == nil || o.Store == nil {
		return nil, errs.E(errs.InvalidArgument, "ui.New", "Config and Store are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Auth == nil {
		a, err := auth.FromConfig(o.Config, o.Store, o.Local)
		if err != nil {
			return nil, err
		}
		o.Auth = a
	}
	if o.RevokeWorker == nil {
		st := o.Store
		o.RevokeWorker = func(ctx context.Context, id string) error { return workerapi.Revoke(ctx, st, id) }
	}
	u := &UI{o: o, auth: o.Auth, gerrit: strings.TrimRight(o.Config.Gerrit.URL, "/")}
	u.bufs.New = func() any { return new(bytes.Buffer) }
	u.api = api.NewServer(api.Options{Store: o.Store, Dead: o.Dead, Blobs: o.Blobs, Clock: o.Clock,
		WorkerDeath: o.Config.Timeouts.WorkerDeath.D(), Auth: o.Auth, Actions: o.Actions,
		RevokeWorker: o.RevokeWorker, Branches: o.Config.Gerrit.Branches, Log: o.Log})
	if err := u.parse(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(web.Static, "static")
	if err != nil {
		return nil, err
	}
	u.asset = assetHash(static)
	u.static = http.StripPrefix("/static/", http.FileServerFS(static))
	u.routes()
	return u, nil
}

// assetHash fingerprints the static files: their URLs carry it, so
// browsers may cache them for good and still get a new release's.
func assetHash(fsys fs.FS) string {
	h := sha256.New()
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(fsys, p)
			fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// parse builds one template set per page: the layout, the partials and
// the page's "content".
func (u *UI) parse() error {
	base, err := template.New("layout").Funcs(u.funcs()).ParseFS(web.Templates, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return err
	}
	u.pages = map[string]*template.Template{}
	for _, name := range []string{"overview", "patchsets", "patchset", "jobs", "job", "workers", "worker", "branches", "stats", "error"} {
		t, err := base.Clone()
		if err != nil {
			return err
		}
		if _, err := t.ParseFS(web.Templates, "templates/"+name+".html"); err != nil {
			return err
		}
		u.pages[name] = t
	}
	return nil
}

func (u *UI) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", u.overview)
	m.HandleFunc("GET /cls", u.patchsets)
	m.HandleFunc("GET /cls/{id}", u.patchset)
	m.HandleFunc("POST /cls/{id}/recheck", u.act(auth.Privileged, u.recheck))
	m.HandleFunc("GET /jobs", u.jobs)
	m.HandleFunc("GET /jobs/{id}", u.job)
	m.HandleFunc("POST /jobs/{id}/cancel", u.act(auth.Privileged, u.cancel))
	m.HandleFunc("POST /jobs/{id}/retry", u.act(auth.Privileged, u.retry))
	m.HandleFunc("GET /workers", u.workers)
	m.HandleFunc("GET /workers/{id}", u.worker)
	m.HandleFunc("POST /workers/{id}/quarantine", u.act(auth.Admin, u.quarantine(true)))
	m.HandleFunc("POST /workers/{id}/unquarantine", u.act(auth.Admin, u.quarantine(false)))
	m.HandleFunc("POST /workers/{id}/delete", u.act(auth.Admin, u.deleteWorker))
	m.HandleFunc("GET /branches", u.branches)
	m.HandleFunc("GET /stats", u.stats)
	m.HandleFunc("GET /static/", u.serveStatic)
	apiH := u.api.Handler()
	m.Handle("/api/", apiH)
	m.Handle("GET /healthz", apiH)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.fail(w, r, errs.E(errs.NotFound, "ui", "no page at %s", r.URL.Path))
	})
	u.mux = m
}

// ServeHTTP identifies the caller and serves the request.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.auth.Middleware(u.mux).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), startKey{}, time.Now())))
}

type startKey struct{}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("v") == u.asset {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if path.Ext(r.URL.Path) == ".svg" {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	}
	u.static.ServeHTTP(w, r)
}

// page is what every template gets.
type page struct {
	Title    string
	Project  string
	Version  string
	Nav      []navItem
	Identity auth.Identity
	XSRF     string
	Can      struct{ Act, Admin bool }
	Notice   string
	Query    url.Values
	Body     any
	Now      time.Time
	Elapsed  string
	Asset    string
}

type navItem struct {
	Name, Href string
	Active     bool
}

var navItems = []navItem{
	{"Overview", "/", false}, {"Patchsets", "/cls", false}, {"Jobs", "/jobs", false},
	{"Workers", "/workers", false}, {"Postsubmit", "/branches", false}, {"Stats", "/stats", false},
}

// notices are the messages an action's redirect asks for (?done=...):
// fixed texts, so a link cannot make the page say something else.
var notices = map[string]string{
	"cancelled":     "Job cancelled. Its worker stops it within one heartbeat.",
	"retried":       "Retry queued: this is the new run. The patchset votes again when it ends.",
	"rechecked":     "Recheck queued: the jobs that did not pass run again, and the patchset votes again when they end.",
	"quarantined":   "Worker quarantined: it finishes its job and takes no new one.",
	"unquarantined": "Quarantine lifted: the worker takes jobs again.",
	"deleted":       "Worker deleted and its token revoked.",
}

// securityHeaders are set on every page.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// render writes page name with body, or the error page if rendering fails.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, body any) {
	id, _ := auth.FromContext(r.Context())
	p := page{Title: title, Project: u.o.Config.Gerrit.Project, Version: u.o.Version, Identity: id,
		XSRF: u.auth.XSRFToken(r.Context()), Query: r.URL.Query(), Body: body, Now: u.o.Clock.Now(), Asset: u.asset}
	p.Can.Act, p.Can.Admin = id.Can(auth.Privileged), id.Can(auth.Admin)
	p.Notice = notices[r.URL.Query().Get("done")]
	p.Query.Del("done")
	for _, n := range navItems {
		n.Active = n.Name == nav
		p.Nav = append(p.Nav, n)
	}
	if start, ok := r.Context().Value(startKey{}).(time.Time); ok {
		p.Elapsed = time.Since(start).Round(10 * time.Microsecond).String()
	}
	buf := u.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer u.bufs.Put(buf)
	if err := u.pages[name].ExecuteTemplate(buf, "layout", p); err != nil {
		u.o.Log.ErrorContext(r.Context(), "ui: render", "page", name, "err", err)
		if name != "error" {
			u.render(w, r, http.StatusInternalServerError, "error", "Error", "", errorBody(errors.New("internal error")))
			return
		}
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type errBody struct {
	Status     int
	StatusText string
	Message    string
}

func errorBody(err error) errBody {
	st := api.StatusOf(err)
	return errBody{Status: st, StatusText: http.StatusText(st), Message: api.PublicMessage(err)}
}

// fail answers err as an error page with its status.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	b := errorBody(err)
	u.render(w, r, b.Status, "error", b.StatusText, "", b)
}

// show renders a page from a view, or the error that kept it from being built.
func (u *UI) show(w http.ResponseWriter, r *http.Request, name, title, nav string, body any, err error) {
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, name, title, nav, body)
}

func (u *UI) overview(w http.ResponseWriter, r *http.Request) {
	v, err := u.api.Overview(r.Context())
	u.show(w, r, "overview", "Overview", "Overview", v, err)
}

func (u *UI) patchsets(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParsePatchsetsQuery(r.URL.Query())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	v, err := u.api.Patchsets(r.Context(), q)
	u.show(w, r, "patchsets", "Patchsets", "Patchsets", v, err)
}

func (u *UI) patchset(w http.ResponseWriter, r *http.Request) {
	v, err := u.api.Patchset(r.Context(), r.PathValue("id"))
	title := "Patchset " + r.PathValue("id")
	u.show(w, r, "patchset", title, "Patchsets", v, err)
}

func (u *UI) jobs(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParseJobsQuery(r.URL.Query())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	v, err := u.api.Jobs(r.Context(), q)
	u.show(w, r, "jobs", "Jobs", "Jobs", v, err)
}

func (u *UI) job(w http.ResponseWriter, r *http.Request) {
	v, err := u.api.Job(r.Context(), r.PathValue("id"))
	title := "Job"
	if v != nil {
		title = v.Type + " · " + strings.TrimPrefix(strings.TrimPrefix(v.Src, "cls/"), "branches/")
	}
	u.show(w, r, "job", title, "Jobs", v, err)
}

func (u *UI) workers(w http.ResponseWriter, r *http.Request) {
	v, err := u.api.Workers(r.Context(), r.URL.Query().Get("sort"))
	u.show(w, r, "workers", "Workers", "Workers", v, err)
}

func (u *UI) worker(w http.ResponseWriter, r *http.Request) {
	v, err := u.api.Worker(r.Context(), r.PathValue("id"))
	u.show(w, r, "worker", "Worker "+r.PathValue("id"), "Workers", v, err)
}

func (u *UI) branches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := u.api.Postsubmits(r.Context(), q.Get("branch"), 50, q.Get("cursor"))
	u.show(w, r, "branches", "Postsubmit", "Postsubmit", v, err)
}

// statsBody is the stats page: the view and its charts.
type statsBody struct {
	Stats        *api.Stats
	Window       string
	WindowName   string
	Windows      []choice
	MaxJobs      int
	QueueChart   template.HTML
	WorkersChart template.HTML
	PassRate     template.HTML
	Completion   template.HTML
	Types        []typeCharts
}

type typeCharts struct {
	Stats              api.JobTypeStats
	QueueHist, RunHist template.HTML
}

var windows = []choice{{"6h", "6 hours"}, {"24h", "24 hours"}, {"7d", "7 days"}}

func (u *UI) stats(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("window")
	if key == "" {
		key = "24h"
	}
	d, err := api.ParseWindow(key)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	s, err := u.api.Stats(r.Context(), d)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	b := statsBody{Stats: s, Window: key, WindowName: key, Windows: windows, MaxJobs: api.MaxStatsJobs,
		QueueChart:   QueueChart(s.QueueLength, s.Since, s.Until),
		WorkersChart: WorkersChart(s.Workers, s.Since, s.Until),
		PassRate:     PassRateChart(s.JobTypes),
		Completion:   Histogram(s.PatchsetCompletion, "Patchset completion time", false)}
	for _, c := range windows {
		if c.Key == key {
			b.WindowName = c.Name
		}
	}
	for _, t := range s.JobTypes {
		b.Types = append(b.Types, typeCharts{Stats: t,
			QueueHist: Histogram(t.QueueTime, t.Type+" queue time", true), RunHist: Histogram(t.RunTime, t.Type+" run time", true)})
	}
	u.render(w, r, http.StatusOK, "stats", "Stats", "Stats", b)
}

// act guards a form POST (role and XSRF token: a refusal is 403 and
// changes nothing), runs do, and redirects to the page it names.
func (u *UI) act(role auth.Role, do func(*http.Request) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := u.auth.CheckMutation(r, role); err != nil {
			u.fail(w, r, err)
			return
		}
		to, err := do(r)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
	}
}

func (u *UI) cancel(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if _, err := u.api.CancelJob(r.Context(), id); err != nil {
		return "", err
	}
	return "/jobs/" + url.PathEscape(id) + "?done=cancelled", nil
}

func (u *UI) retry(r *http.Request) (string, error) {
	j, err := u.api.RetryJob(r.Context(), r.PathValue("id"))
	if err != nil {
		return "", err
	}
	return "/jobs/" + url.PathEscape(j.ID) + "?done=retried", nil
}

func (u *UI) recheck(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if _, err := u.api.Recheck(r.Context(), id); err != nil {
		return "", err
	}
	return "/cls/" + url.PathEscape(id) + "?done=rechecked", nil
}

func (u *UI) quarantine(on bool) func(*http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		id := r.PathValue("id")
		if _, err := u.api.SetQuarantine(r.Context(), id, on); err != nil {
			return "", err
		}
		done := "unquarantined"
		if on {
			done = "quarantined"
		}
		return "/workers/" + url.PathEscape(id) + "?done=" + done, nil
	}
}

func (u *UI) deleteWorker(r *http.Request) (string, error) {
	if err := u.api.DeleteWorker(r.Context(), r.PathValue("id")); err != nil {
		return "", err
	}
	return "/workers?done=deleted", nil
}
