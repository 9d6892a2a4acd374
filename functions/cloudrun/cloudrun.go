// Package cloudrun is the composition root of Tollgate on Google Cloud: it
// registers, with functions-framework-go, one CloudEvent function per
// controller action (the function name is the action, triggered by the
// topic {prefix}-{action}) and the HTTP functions gerrit_webhook, api and
// worker_api. Importing the package registers them; FUNCTION_TARGET picks
// the one an instance serves (see functions/cmd/tollgate-functions).
//
// The runtime (Firestore store, Pub/Sub tasks, GCS blobs, Cloud Monitoring
// metrics, the Gerrit client, the controller and the fleet service) is built
// on the first call, not at start, so a cold start answers the platform's
// health check at once, and the work is shared by every call the instance
// serves afterwards. A build that fails is retried on the next call.
//
// Environment:
//
//	TOLLGATE_CONFIG         the YAML config: a file path or gs://bucket/object (required)
//	TOLLGATE_PROJECT        the Google Cloud project of Firestore, Pub/Sub and Monitoring (required)
//	TOLLGATE_TOPIC_PREFIX   the Pub/Sub topic prefix (default "tollgate")
//	TOLLGATE_BLOB_BUCKET    the GCS bucket of logs and artifacts (required)
//	TOLLGATE_WEBHOOK_TOKEN  the secret gerrit_webhook requires as ?token= (unset: it refuses all)
//	TOLLGATE_ENROLL_SECRET  the secret workers enroll with (unset: enrollment refused)
//	TOLLGATE_CHANNEL        the worker API channel (default 0)
//	TOLLGATE_EVENT_MAX_AGE  events older than this are dropped, not retried (default 1h)
//	TOLLGATE_LOG_LEVEL      debug, info (default), warn or error
//	TOLLGATE_REGION         the location label of this instance's metrics resource (default "global")
//
// plus the Gerrit credentials in the variables the config names
// (gerrit.user_env, gerrit.password_env).
package cloudrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/storage"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/functions/api"
	"github.com/tollgate-ci/tollgate/functions/events"
	"github.com/tollgate-ci/tollgate/functions/ui"
	"github.com/tollgate-ci/tollgate/functions/webhook"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// Environment variables.
const (
	EnvConfig       = "TOLLGATE_CONFIG"
	EnvProject      = "TOLLGATE_PROJECT"
	EnvTopicPrefix  = "TOLLGATE_TOPIC_PREFIX"
	EnvBlobBucket   = "TOLLGATE_BLOB_BUCKET"
	EnvWebhookToken = "TOLLGATE_WEBHOOK_TOKEN"
	EnvEnrollSecret = "TOLLGATE_ENROLL_SECRET"
	EnvChannel      = "TOLLGATE_CHANNEL"
	EnvMaxAge       = "TOLLGATE_EVENT_MAX_AGE"
	EnvLogLevel     = "TOLLGATE_LOG_LEVEL"
)

// Names of the HTTP functions; the event functions are named after the
// controller's actions (controller.Actions).
const (
	FnGerritWebhook = "gerrit_webhook"
	FnAPI           = "api"
	FnWorkerAPI     = "worker_api"
)

// DefaultTopicPrefix is the topic prefix when TOLLGATE_TOPIC_PREFIX is unset.
const DefaultTopicPrefix = "tollgate"

// Settings are the runtime's environment.
type Settings struct {
	Config       string // file path or gs://bucket/object
	Project      string
	TopicPrefix  string
	BlobBucket   string
	WebhookToken string
	EnrollSecret string
	Channel      int
	MaxAge       time.Duration
}

// SettingsFromEnv reads the settings with getenv (os.Getenv), refusing
// missing or malformed values with InvalidArgument.
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	const op = "cloudrun.SettingsFromEnv"
	s := Settings{
		Config: getenv(EnvConfig), Project: getenv(EnvProject), TopicPrefix: getenv(EnvTopicPrefix),
		BlobBucket: getenv(EnvBlobBucket), WebhookToken: getenv(EnvWebhookToken), EnrollSecret: getenv(EnvEnrollSecret),
		MaxAge: events.DefaultMaxAge,
	}
	var missing []string
	for name, v := range map[string]string{EnvConfig: s.Config, EnvProject: s.Project, EnvBlobBucket: s.BlobBucket} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return Settings{}, errs.E(errs.InvalidArgument, op, "unset: %s", strings.Join(missing, ", "))
	}
	if s.TopicPrefix == "" {
		s.TopicPrefix = DefaultTopicPrefix
	}
	if v := getenv(EnvChannel); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Settings{}, errs.E(errs.InvalidArgument, op, "%s=%q is not an integer", EnvChannel, v)
		}
		s.Channel = n
	}
	if v := getenv(EnvMaxAge); v != "" {
		d, err := config.ParseDuration(v)
		if err != nil || d <= 0 {
			return Settings{}, errs.E(errs.InvalidArgument, op, "%s=%q is not a positive duration", EnvMaxAge, v)
		}
		s.MaxAge = d
	}
	return s, nil
}

// Adapters open the Google Cloud adapters. The zero value is the
// production wiring (see DefaultAdapters); tests and the emulated topology
// replace fields.
type Adapters struct {
	OpenStore   func(ctx context.Context, project string) (store.Store, error)
	OpenTasks   func(ctx context.Context, project, prefix string) (*pubsub.Tasks, error)
	OpenBlobs   func(ctx context.Context, bucket string) (blob.Bucket, error)
	OpenMetrics func(ctx context.Context, project string) (metrics.Metrics, error)
	// OpenCache opens the artifact cache of the config's cache section; it
	// is only called when cache.bucket is set.
	OpenCache func(ctx context.Context, c config.Cache, m metrics.Metrics, log *slog.Logger) (cache.Cache, error)
	// ReadConfig reads the config at a path or gs:// URL.
	ReadConfig func(ctx context.Context, location string) ([]byte, error)
}

func (a Adapters) withDefaults() Adapters {
	d := DefaultAdapters()
	if a.OpenStore == nil {
		a.OpenStore = d.OpenStore
	}
	if a.OpenTasks == nil {
		a.OpenTasks = d.OpenTasks
	}
	if a.OpenBlobs == nil {
		a.OpenBlobs = d.OpenBlobs
	}
	if a.OpenMetrics == nil {
		a.OpenMetrics = d.OpenMetrics
	}
	if a.ReadConfig == nil {
		a.ReadConfig = d.ReadConfig
	}
	if a.OpenCache == nil {
		a.OpenCache = d.OpenCache
	}
	return a
}

// DefaultAdapters are the production adapters: Firestore, Pub/Sub, GCS and
// Cloud Monitoring, each reached with Application Default Credentials (or
// the emulators' *_EMULATOR_HOST variables).
func DefaultAdapters() Adapters {
	return Adapters{
		OpenStore: openStore,
		OpenTasks: func(ctx context.Context, project, prefix string) (*pubsub.Tasks, error) {
			return pubsub.New(ctx, project, prefix)
		},
		OpenBlobs:   openBlobs,
		OpenMetrics: openMetrics,
		OpenCache:   openCache,
		ReadConfig:  ReadConfig,
	}
}

// Runtime is what the functions run on.
type Runtime struct {
	Settings   Settings
	Config     *config.Config
	Store      store.Store
	Tasks      *pubsub.Tasks
	Blobs      blob.Bucket
	Metrics    metrics.Metrics
	Cache      cache.Cache // nil without cache.bucket
	Controller *controller.Controller
	Fleet      *fleet.Service
	Log        *slog.Logger
}

// Build opens the adapters and builds the controller and the fleet service.
func Build(ctx context.Context, s Settings, a Adapters, log *slog.Logger) (*Runtime, error) {
	a = a.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	rt := &Runtime{Settings: s, Log: log}
	var err error
	defer func() {
		if err != nil {
			rt.Close() // what was opened before the failure
		}
	}()
	var b []byte
	b, err = a.ReadConfig(ctx, s.Config)
	if err != nil {
		return nil, err
	}
	if rt.Config, err = config.Parse(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Config, err)
	}
	if rt.Metrics, err = a.OpenMetrics(ctx, s.Project); err != nil {
		return nil, err
	}
	// Once per instance start: descriptors give units and help texts; a
	// failure is not fatal, since writes create missing custom metrics.
	if d, ok := rt.Metrics.(interface{ CreateDescriptors(context.Context) error }); ok {
		if derr := d.CreateDescriptors(ctx); derr != nil {
			log.Warn("cloudrun: metric descriptors not created", "err", derr)
		}
	}
	if rt.Store, err = a.OpenStore(ctx, s.Project); err != nil {
		return nil, err
	}
	if rt.Tasks, err = a.OpenTasks(ctx, s.Project, s.TopicPrefix); err != nil {
		return nil, err
	}
	if rt.Blobs, err = a.OpenBlobs(ctx, s.BlobBucket); err != nil {
		return nil, err
	}
	// Only the functions of controller.GerritActions are given Gerrit's
	// credentials (least privilege): without them there is no Gerrit
	// client, and those actions refuse to run.
	var gc *gerrit.Client
	if user, password, cerr := rt.Config.Credentials(); cerr != nil {
		log.Info("cloudrun: no Gerrit credentials in this function's environment; it runs no action that calls Gerrit", "actions", controller.GerritActions)
	} else if gc, err = gerrit.New(gerrit.Options{URL: rt.Config.Gerrit.URL, User: user, Password: password,
		MaxQPS: rt.Config.Gerrit.MaxQPS, Metrics: rt.Metrics}); err != nil {
		return nil, err
	}
	if rt.Config.Cache.Bucket != "" && !rt.Config.Cache.Disabled {
		if rt.Cache, err = a.OpenCache(ctx, rt.Config.Cache, rt.Metrics, log); err != nil {
			return nil, err
		}
	}
	if rt.Controller, err = controller.New(controller.Deps{Config: rt.Config, Store: rt.Store, Tasks: rt.Tasks,
		Gerrit: gc, Metrics: rt.Metrics, Log: log, Cache: rt.Cache}); err != nil {
		return nil, err
	}
	if rt.Fleet, err = fleet.NewService(fleet.Options{Config: rt.Config, Store: rt.Store, Tasks: rt.Tasks,
		Blobs: rt.Blobs, Log: log}); err != nil {
		return nil, err
	}
	return rt, nil
}

// cacheAccess keeps a nil cache a nil interface.
func cacheAccess(c cache.Cache) cache.Access {
	if c == nil {
		return nil
	}
	return c
}

// Close closes the adapters Build opened.
func (rt *Runtime) Close() error {
	var list []error
	if rt.Cache != nil {
		list = append(list, rt.Cache.Close())
	}
	if rt.Tasks != nil {
		list = append(list, rt.Tasks.Close())
	}
	if rt.Blobs != nil {
		list = append(list, rt.Blobs.Close())
	}
	if rt.Store != nil {
		list = append(list, rt.Store.Close())
	}
	if c, ok := rt.Metrics.(io.Closer); ok {
		list = append(list, c.Close())
	}
	return errors.Join(list...)
}

// ReadConfig reads location: gs://bucket/object with the Cloud Storage
// client (which honours STORAGE_EMULATOR_HOST), anything else as a file.
func ReadConfig(ctx context.Context, location string) ([]byte, error) {
	const op = "cloudrun.ReadConfig"
	if !strings.HasPrefix(location, "gs://") {
		b, err := os.ReadFile(location)
		if err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, op, err)
		}
		return b, nil
	}
	bucket, object, err := ParseGSURL(location)
	if err != nil {
		return nil, err
	}
	c, err := storage.NewClient(ctx)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	defer c.Close()
	r, err := c.Bucket(bucket).Object(object).NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) || errors.Is(err, storage.ErrBucketNotExist) {
		return nil, errs.Wrap(errs.NotFound, op+" "+location, err)
	}
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, op+" "+location, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, op+" "+location, err)
	}
	return b, nil
}

// ParseGSURL splits gs://bucket/object.
func ParseGSURL(u string) (bucket, object string, err error) {
	rest, ok := strings.CutPrefix(u, "gs://")
	bucket, object, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" || object == "" {
		return "", "", errs.E(errs.InvalidArgument, "cloudrun.ParseGSURL", "%q is not gs://bucket/object", u)
	}
	return bucket, object, nil
}

// Functions serves the functions on a runtime built on first use.
type Functions struct {
	build func(context.Context) (*Runtime, error)
	log   *slog.Logger
	// attempts numbers deliveries per instance (Pub/Sub does not, behind
	// Eventarc and functions-framework-go).
	attempts pubsub.Attempts

	mu  sync.Mutex
	rt  *Runtime
	h   *handlers
	err error // of the last failed build, for the log
}

// handlers are built once per runtime.
type handlers struct {
	events    map[string]func(context.Context, event.Event) error // by action
	webhook   http.Handler
	api       http.Handler
	workerAPI http.Handler
}

// New returns Functions whose runtime build makes on first use.
func New(build func(context.Context) (*Runtime, error), log *slog.Logger) *Functions {
	if log == nil {
		log = slog.Default()
	}
	return &Functions{build: build, log: log}
}

// FromEnv builds the runtime from the process environment with the
// production adapters.
func FromEnv(log *slog.Logger) func(context.Context) (*Runtime, error) {
	return func(ctx context.Context) (*Runtime, error) {
		s, err := SettingsFromEnv(os.Getenv)
		if err != nil {
			return nil, err
		}
		return Build(ctx, s, Adapters{}, log)
	}
}

// Runtime returns the runtime, building it if no call has yet succeeded.
// Concurrent first calls share one build.
func (f *Functions) Runtime(ctx context.Context) (*Runtime, error) {
	_, rt, err := f.get(ctx)
	return rt, err
}

func (f *Functions) get(ctx context.Context) (*handlers, *Runtime, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rt != nil {
		return f.h, f.rt, nil
	}
	start := time.Now()
	rt, err := f.build(ctx)
	if err != nil {
		f.err = err
		f.log.ErrorContext(ctx, "cloudrun: cannot build the runtime; the next call retries", "err", err.Error())
		return nil, nil, errs.Wrap(errs.Unavailable, "cloudrun: runtime", err)
	}
	f.rt, f.h = rt, f.handlers(rt)
	f.log.InfoContext(ctx, "cloudrun: runtime ready", "ms", time.Since(start).Milliseconds(),
		"project", rt.Settings.Project, "topic_prefix", rt.Settings.TopicPrefix)
	return f.h, f.rt, nil
}

func (f *Functions) handlers(rt *Runtime) *handlers {
	cfg := rt.Config
	h := &handlers{
		webhook: webhook.New(webhook.Options{Tasks: rt.Tasks, Token: rt.Settings.WebhookToken,
			Project: cfg.Gerrit.Project, Branches: cfg.Gerrit.Branches, ReadyLabel: cfg.Trust.ReadyLabel, Log: rt.Log}),
		workerAPI: workerapi.NewHandler(workerapi.Options{Backend: rt.Fleet, Store: rt.Store, Cache: cacheAccess(rt.Cache),
			EnrollSecret: rt.Settings.EnrollSecret, Channel: rt.Settings.Channel, Log: rt.Log}),
		events: map[string]func(context.Context, event.Event) error{},
	}
	// The api function serves the web UI and the JSON API with roles:
	// identities come from IAP (ui.trust_iap) or the configured API tokens.
	webUI, err := ui.New(ui.Options{Config: cfg, Store: rt.Store, Dead: rt.Tasks, Blobs: rt.Blobs,
		Actions: rt.Controller, Log: rt.Log})
	if err != nil {
		rt.Log.Error("cloudrun: web UI unavailable", "err", err)
		h.api = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			api.WriteError(w, errs.Wrap(errs.Unavailable, "ui", err))
		})
	} else {
		h.api = webUI
	}
	for _, action := range controller.Actions {
		h.events[action] = events.New(events.Options{
			Handler: func(ctx context.Context, t tasks.Task) error {
				if t.Action != action {
					// A trigger wired to the wrong topic: the task still
					// runs by its own action, but someone should look.
					rt.Log.WarnContext(ctx, "cloudrun: task delivered to another action's function",
						"function", action, "action", t.Action, "task", t.ID)
				}
				return rt.Controller.Handle(ctx, t)
			},
			Settler:     rt.Tasks,
			MaxAttempts: cfg.Tasks.MaxAttempts,
			Attempts:    &f.attempts,
			MaxAge:      rt.Settings.MaxAge,
			Metrics:     rt.Metrics,
			Log:         rt.Log,
		})
	}
	return h
}

// Event returns the CloudEvent function of action (one of
// controller.Actions). A task of another action (a trigger wired to the
// wrong topic) still runs, by its own action, with a warning.
func (f *Functions) Event(action string) func(context.Context, event.Event) error {
	return func(ctx context.Context, e event.Event) error {
		h, _, err := f.get(ctx)
		if err != nil {
			return err // redelivered later; MaxAge and the dead letter bound it
		}
		fn, ok := h.events[action]
		if !ok {
			return errs.E(errs.NotFound, "cloudrun", "no action %q", action)
		}
		err = fn(ctx, e)
		f.flush(ctx)
		return err
	}
}

// flusher is a Metrics that buffers points (the Cloud Monitoring adapter).
type flusher interface {
	Flush(ctx context.Context) error
}

// flush sends the metrics that are due before a call returns: once the
// response is sent the platform may throttle the CPU, so a background
// flusher cannot be relied on.
func (f *Functions) flush(ctx context.Context) {
	f.mu.Lock()
	rt := f.rt
	f.mu.Unlock()
	fl, ok := rt.Metrics.(flusher)
	if !ok {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := fl.Flush(fctx); err != nil {
		f.log.WarnContext(ctx, "cloudrun: metrics flush failed; the values stay pending", "err", err.Error())
	}
}

// HTTP returns the HTTP function name (FnGerritWebhook, FnAPI or
// FnWorkerAPI). Until the runtime builds it answers 503.
func (f *Functions) HTTP(name string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		h, _, err := f.get(r.Context())
		if err != nil {
			api.WriteError(w, err)
			return
		}
		switch name {
		case FnGerritWebhook:
			h.webhook.ServeHTTP(w, r)
		case FnAPI:
			h.api.ServeHTTP(w, r)
		case FnWorkerAPI:
			h.workerAPI.ServeHTTP(w, r)
		default:
			api.WriteError(w, errs.E(errs.NotFound, "cloudrun", "no function %q", name))
		}
		f.flush(r.Context())
	}
}

// Register registers every function with functions-framework-go under its
// name. Call it once per process (init does, for Default).
func (f *Functions) Register() {
	for _, a := range controller.Actions {
		functions.CloudEvent(a, f.Event(a))
	}
	for _, n := range []string{FnGerritWebhook, FnAPI, FnWorkerAPI} {
		functions.HTTP(n, f.HTTP(n))
	}
}

// Default is the instance init registers: the production runtime from the
// environment, logging JSON for Cloud Logging to stderr.
var Default = New(FromEnv(defaultLog), defaultLog)

var defaultLog = Logger(os.Stderr, LevelFromEnv(os.Getenv(EnvLogLevel)))

func init() { Default.Register() }
