package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-ci/tollgate/adapters/diskcache"
	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/localqueue"
	"github.com/tollgate-ci/tollgate/adapters/prom"
	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/core/worker"
	"github.com/tollgate-ci/tollgate/functions/auth"
	"github.com/tollgate-ci/tollgate/functions/ui"
	"github.com/tollgate-ci/tollgate/functions/webhook"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML); required unless --demo")
	dataDir := fs.String("data", "./tollgate-data", "directory for the database and blobs")
	listen := fs.String("listen", "127.0.0.1:8080", "address of the JSON API, /metrics and /healthz")
	demoFlag := fs.Bool("demo", false, "start a fake Gerrit with sample changes and a demo config")
	workers := fs.Int("workers", 2, "built-in workers running jobs in this process (0: only remote workers)")
	secretEnv := fs.String("enroll-secret-env", "TOLLGATE_ENROLL_SECRET", "environment variable holding the secret remote workers enroll with (unset: the worker API refuses enrollment; with --demo a secret is made up and printed)")
	channel := fs.Int("channel", 0, "worker API channel id; remote workers must use the same")
	hookEnv := fs.String("webhook-token-env", "TOLLGATE_WEBHOOK_TOKEN", "environment variable holding the token Gerrit's webhook must send as ?token= (unset: no webhook)")
	wLabels := fs.String("worker-labels", "", "labels of the built-in workers, k=v,k=v, on top of os and arch")
	sbMode := fs.String("sandbox", "auto", "how built-in workers isolate jobs: bwrap, none, or auto (bwrap where it works)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, *verbose)
	mode, err := sandbox.ParseMode(*sbMode)
	if err != nil {
		return err
	}
	lbls, err := parseLabels(*wLabels)
	if err != nil {
		return fmt.Errorf("up: --worker-labels: %w", err)
	}

	var cfg *config.Config
	var dm *demo
	switch {
	case *demoFlag:
		var err error
		if dm, err = startDemo(ctx, log, *listen); err != nil {
			return err
		}
		defer dm.Close()
		cfg = dm.Config
	case *cfgPath == "":
		return errors.New("up: --config FILE is required (or --demo to try it)")
	default:
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}

	secret := os.Getenv(*secretEnv)
	if secret == "" && dm != nil {
		secret = randomHex(16)
	}
	rt, err := startEmbedded(ctx, embeddedOptions{Config: cfg, DataDir: *dataDir, Listen: *listen, Log: log,
		Workers: *workers, EnrollSecret: secret, Channel: *channel, WebhookToken: os.Getenv(*hookEnv), Sandbox: mode, WorkerLabels: lbls})
	if err != nil {
		return err
	}
	if rt.Chaos != "" {
		fmt.Fprintf(stdout, "chaos: %s (TOLLGATE_CHAOS): task deliveries are duplicated or failed on purpose\n", rt.Chaos)
	}
	if os.Getenv(*hookEnv) != "" {
		fmt.Fprintf(stdout, "gerrit webhook: http://%s%s (append ?token=$%s)\n", rt.Addr, webhookPath, *hookEnv)
	}
	fmt.Fprintf(stdout, "tollgate is up: API http://%s/api/v1/cls  metrics http://%s/metrics  data %s  workers %d\n", rt.Addr, rt.Addr, *dataDir, *workers)
	if secret != "" {
		if os.Getenv(*secretEnv) == "" {
			fmt.Fprintf(stdout, "remote workers: %s=%s go run ./cmd/tollgate worker --server http://%s --enroll-secret-env %s --channel %d\n",
				*secretEnv, secret, rt.Addr, *secretEnv, *channel)
		} else {
			fmt.Fprintf(stdout, "remote workers: tollgate worker --server http://%s --enroll-secret-env %s --channel %d\n", rt.Addr, *secretEnv, *channel)
		}
	}
	if dm != nil {
		fmt.Fprintf(stdout, "demo: fake Gerrit at %s (reviews: %s/control/reviews)\n", dm.URL, dm.URL)
		go dm.Drive(ctx, rt)
	}
	<-ctx.Done()
	log.Info("shutting down")
	return rt.Close()
}

// embeddedOptions configure the one-process runtime.
type embeddedOptions struct {
	Config  *config.Config
	DataDir string
	Listen  string
	Log     *slog.Logger
	// TickEvery overrides gerrit.poll_interval for the scheduler (tests).
	TickEvery time.Duration
	// Workers is how many built-in workers run jobs in this process.
	Workers int
	// EnrollSecret lets remote workers enroll over the worker API ("": refused).
	EnrollSecret string
	Channel      int
	// WebhookToken serves Gerrit's webhook at webhookPath ("": not served).
	WebhookToken string
	// Sandbox is how built-in workers isolate jobs (default: none).
	Sandbox sandbox.Mode
	// WorkerLabels are the built-in workers' labels.
	WorkerLabels map[string]string
}

// webhookPath is where `tollgate up` serves Gerrit's webhooks plugin.
const webhookPath = "/gerrit/webhook"

// embedded is the composition root of the one-process runtime: the SQLite
// store, the SQLite-backed task queue, blobs in a directory, Prometheus
// metrics, the controller, the scheduler and the HTTP listener.
type embedded struct {
	Addr       string
	Chaos      string // TOLLGATE_CHAOS when set: deliveries made unreliable on purpose
	Store      *sqlite.Store
	Queue      *localqueue.Queue
	Blobs      *fsblob.Bucket
	Cache      *diskcache.Cache // nil when cache.disabled
	Controller *controller.Controller
	Fleet      *fleet.Service

	srv       *http.Server
	workerAPI *workerapi.Handler
	cancel    context.CancelFunc
	done      chan struct{}
	workersWG sync.WaitGroup
	log       *slog.Logger
}

func startEmbedded(ctx context.Context, o embeddedOptions) (*embedded, error) {
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	dbPath := filepath.Join(o.DataDir, "tollgate.db")
	st, err := sqlite.Open(dbPath)
	if err != nil {
		return nil, err
	}
	rt := &embedded{Store: st, log: o.Log, done: make(chan struct{})}
	fail := func(err error) (*embedded, error) {
		rt.closeAll()
		return nil, err
	}
	if rt.Blobs, err = fsblob.Open(filepath.Join(o.DataDir, "blobs")); err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	m, err := prom.New(reg)
	if err != nil {
		return fail(err)
	}
	user, password, err := o.Config.Credentials()
	if err != nil {
		return fail(err)
	}
	gc, err := gerrit.New(gerrit.Options{URL: o.Config.Gerrit.URL, User: user, Password: password, MaxQPS: o.Config.Gerrit.MaxQPS, Metrics: m})
	if err != nil {
		return fail(err)
	}
	// The queue calls the controller and the controller defers into the
	// queue; the handler closure breaks the construction cycle.
	var ctrl *controller.Controller
	var handler tasks.Handler = func(ctx context.Context, t tasks.Task) error { return ctrl.Handle(ctx, t) }
	if spec := os.Getenv(chaosEnv); spec != "" {
		c, err := parseChaos(spec)
		if err != nil {
			return fail(err)
		}
		handler, rt.Chaos = c.wrap(handler), spec
	}
	rt.Queue, err = localqueue.Open(dbPath, localqueue.Options{
		Handler:     handler,
		MaxAttempts: o.Config.Tasks.MaxAttempts,
		Logger:      o.Log,
		OnRetry: func(action string) {
			_ = m.Add(context.Background(), metrics.TaskRetries, map[string]string{"action": action}, 1)
		},
		OnDead: func(action string) {
			_ = m.Add(context.Background(), metrics.TaskDeadLetters, map[string]string{"action": action}, 1)
		},
	})
	if err != nil {
		return fail(err)
	}
	var jobCache cache.Access // what workers hand to jobs; nil without a cache
	var cleaned cache.Cache
	if !o.Config.Cache.Disabled {
		rt.Cache, err = diskcache.Open(ctx, filepath.Join(o.DataDir, "cache"), &diskcache.Options{
			Options: cache.Options{MinHeadroom: int64(o.Config.Cache.MinHeadroom), MaxHeadroom: int64(o.Config.Cache.MaxHeadroom)},
			Metrics: m, Log: o.Log})
		if err != nil {
			return fail(err)
		}
		jobCache, cleaned = rt.Cache, rt.Cache
	}
	if ctrl, err = controller.New(controller.Deps{Config: o.Config, Store: st, Tasks: rt.Queue, Gerrit: gc, Metrics: m, Log: o.Log, Cache: cleaned}); err != nil {
		return fail(err)
	}
	rt.Controller = ctrl
	if rt.Fleet, err = fleet.NewService(fleet.Options{Config: o.Config, Store: st, Tasks: rt.Queue, Blobs: rt.Blobs, Log: o.Log}); err != nil {
		return fail(err)
	}
	rt.workerAPI = workerapi.NewHandler(workerapi.Options{Backend: rt.Fleet, Store: st, EnrollSecret: o.EnrollSecret, Cache: jobCache,
		Channel: o.Channel, Log: o.Log})

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle(workerapi.Prefix, rt.workerAPI)
	if o.WebhookToken != "" {
		mux.Handle(webhookPath, webhook.New(webhook.Options{Tasks: rt.Queue, Token: o.WebhookToken, Project: o.Config.Gerrit.Project,
			Branches: o.Config.Gerrit.Branches, ReadyLabel: o.Config.Trust.ReadyLabel, Log: o.Log}))
	}
	// The web UI, with the JSON API under /api/v1/ and /healthz.
	webUI, err := ui.New(ui.Options{Config: o.Config, Store: st, Dead: rt.Queue, Blobs: rt.Blobs, Actions: ctrl,
		Local: auth.LoopbackAddr(o.Listen), Version: Version, Log: o.Log})
	if err != nil {
		return fail(err)
	}
	mux.Handle("/", webUI)
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	rt.Addr = ln.Addr().String()
	rt.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := rt.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Log.Error("http server", "err", err)
		}
	}()

	runCtx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	if err := rt.Queue.Start(runCtx); err != nil {
		cancel()
		return fail(err)
	}
	every := o.TickEvery
	if every <= 0 {
		every = o.Config.Gerrit.PollInterval.D()
	}
	go rt.schedule(runCtx, every)
	host, _ := os.Hostname()
	var sb *sandbox.Sandbox
	var gitUser, gitPassword string
	if o.Workers > 0 {
		if sb, err = sandbox.New(sandbox.Options{Mode: cmp.Or(o.Sandbox, sandbox.ModeNone), Root: filepath.Join(o.DataDir, "work"), UID: -1, GID: -1}); err != nil {
			rt.Close()
			return nil, err
		}
		// The built-in workers fetch with the controller's Gerrit credentials.
		if gitUser, gitPassword, err = o.Config.Credentials(); err != nil {
			rt.Close()
			return nil, err
		}
	}
	for i := 1; i <= o.Workers; i++ {
		w, err := worker.New(worker.Options{Backend: rt.Fleet, Cache: jobCache, ID: fmt.Sprintf("local-%d", i), Host: host, Version: Version,
			WorkDir: filepath.Join(o.DataDir, "work", fmt.Sprintf("local-%d", i)), Log: o.Log,
			Sandbox: sb, GitUser: gitUser, GitPassword: gitPassword, Labels: o.WorkerLabels})
		if err != nil {
			rt.Close()
			return nil, err
		}
		rt.workersWG.Go(func() {
			if err := w.Run(runCtx); err != nil && runCtx.Err() == nil {
				o.Log.Error("worker stopped", "err", err)
			}
		})
	}
	return rt, nil
}

// schedule defers a tick now and every interval: the tick fans out the rest.
func (rt *embedded) schedule(ctx context.Context, every time.Duration) {
	defer close(rt.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := rt.Queue.Defer(ctx, controller.Tick, nil); err != nil && ctx.Err() == nil {
			rt.log.Error("scheduler: defer tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops the scheduler, the HTTP server and the dispatchers (waiting for
// handlers in flight), then closes the stores.
func (rt *embedded) Close() error {
	if rt.workerAPI != nil {
		rt.workerAPI.Drain()
	}
	if rt.cancel != nil {
		rt.cancel()
		<-rt.done
	}
	// Built-in workers stop their jobs (INTERRUPTED, queued again) before
	// the queue and the store close under them.
	rt.workersWG.Wait()
	if rt.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.srv.Shutdown(ctx)
	}
	return rt.closeAll()
}

func (rt *embedded) closeAll() error {
	var errList []error
	if rt.Queue != nil {
		errList = append(errList, rt.Queue.Close())
	}
	if rt.Blobs != nil {
		errList = append(errList, rt.Blobs.Close())
	}
	if rt.Cache != nil {
		errList = append(errList, rt.Cache.Close())
	}
	if rt.Store != nil {
		errList = append(errList, rt.Store.Close())
	}
	return errors.Join(errList...)
}
