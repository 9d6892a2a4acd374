package launcher

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcsfake"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	fakemonitoring "github.com/tollgate-ci/tollgate/emulators/monitoring"
	"github.com/tollgate-ci/tollgate/functions/cloudrun"
)

// Options configure a Topology. The zero value is valid: the demo config
// and seed, random ports, one instance per function, no workers.
type Options struct {
	// Tollgate is the tollgate binary the children run (`tollgate emulators
	// function`, `tollgate worker`). Default: the running executable.
	Tollgate string
	// Dir holds the config the children read, the logs (Dir/logs) and the
	// workers' work directories (Dir/work). Default: a new temporary
	// directory, kept after Stop for its logs.
	Dir string
	// Config is a config file; PlaceholderGerritURL and PlaceholderAPIURL
	// in it are replaced. Default: DemoConfig.
	Config string
	// NoSeed leaves the fake Gerrit empty instead of running DemoSeed.
	NoSeed bool
	// MinPort is the first port; the components take the following ones
	// (see the package documentation). 0: free random ports.
	MinPort int
	// Instances is the number of processes per function (default 1). Above
	// 1, a balancer on the function's port spreads requests over them.
	Instances int
	// Concurrency is the number of requests an instance serves at once
	// before the balancer counts it busy (default 1; only with Instances > 1).
	Concurrency int
	// Workers is the number of `tollgate worker --backend gcp` processes.
	Workers int
	// Tick is the scheduler's tick period (default 1m, Cloud Scheduler's
	// finest). A tick is also published at start.
	Tick time.Duration
	// Grace is the time between SIGTERM and SIGKILL on Stop (default 5s).
	Grace time.Duration
	// Ready bounds the wait for each child to accept connections (default
	// 30s). The emulators have their own bound (emulators/gcloud: 60s).
	Ready time.Duration
	// Project is the Google Cloud project of the emulators (default "demo").
	Project string
	// TopicPrefix is the Pub/Sub topic prefix (default "tollgate").
	TopicPrefix string
	// Bucket is the artifacts bucket (default "tollgate-artifacts").
	Bucket string
	// WebhookToken and EnrollSecret are the functions' secrets (default:
	// random).
	WebhookToken, EnrollSecret string
	// Env is added to every child's environment, last (it overrides).
	Env []string
	// Log receives the launcher's own events: children exiting and
	// restarting, failed publishes (default: discarded).
	Log *slog.Logger
	// Chaos, if set, puts every function behind a balancer (as Instances
	// > 1 does, also with one instance) and makes the action functions'
	// balancers deliver pushes unreliably (see Chaos), for tests of the
	// handlers' idempotency. The HTTP functions are spared.
	Chaos *Chaos
	// Sandbox is the workers' --sandbox (default: theirs, auto).
	Sandbox string
}

// Chaos is how an action function's balancer misbehaves, as an
// unreliable platform may: Pub/Sub delivering a message twice, and
// deliveries failing, before the handler ran or after (its success lost,
// so Pub/Sub redelivers what was done).
type Chaos struct {
	// Duplicate forwards every push twice, at once, to the same instance;
	// the answer is the first failure of the two, else the first answer.
	Duplicate bool
	// FailRate is the fraction of pushes answered 500: half of them without
	// forwarding, half after forwarding (the answer replaced). 0 to 1.
	FailRate float64
	// Seed seeds the choices (0: a random seed).
	Seed uint64
}

// Component kinds.
const (
	KindEmulator  = "emulator"  // a gcloud emulator process
	KindFake      = "fake"      // an emulator in the launcher's process
	KindFunction  = "function"  // a function's process (Instances 1)
	KindBalancer  = "balancer"  // a function's balancer (Instances > 1, or Chaos), in the launcher
	KindInstance  = "instance"  // one of a function's processes behind its balancer
	KindWorker    = "worker"    // a `tollgate worker --backend gcp` process
	KindScheduler = "scheduler" // the Cloud Scheduler stand-in, in the launcher
)

// Component is a row of the component table.
type Component struct {
	Name string // "firestore", "gerrit", "api", "api#2", "worker-1", ...
	Kind string // one of the Kind constants
	// Addr is the host:port it listens on ("" for workers and the scheduler).
	Addr string
	// URL is its base URL, for the HTTP ones.
	URL string
	// Pid is its process: the launcher's own for what runs in it; 0 while
	// a child is down between restarts.
	Pid int
	// Log is its log file, if it has one.
	Log string
	// Restarts counts the restarts of a child.
	Restarts int
}

// Topology is the emulated Google Cloud topology. Start it once, Stop it
// once; the accessors are valid after Start returned nil.
type Topology struct {
	o   Options
	log *slog.Logger

	dir, logDir string
	cfgPath     string
	cfg         *config.Config
	gerritUser  string
	gerritPass  string
	ports       map[string]int // by component name

	firestore, pubsub *gcloud.Emulator
	gcs               *fakestorage.Server
	gcsLog            *os.File
	gcsSrv            *http.Server // serves gcs through gcsfake.Wrap
	mon               *fakemonitoring.Server
	monAddr           string
	gerrit            *fakegerrit.Server
	gerritURL         string
	functions         []*function
	workers           []*child
	sched             *scheduler
	schedJobs         []schedule
	tickTopic         string
	emuLogs           []*os.File

	mu      sync.Mutex
	started bool
	stopped bool
}

// function is one function: its port, and its one process or its
// balancer and instances.
type function struct {
	name      string
	addr      string
	instances []*child
	bal       *balancer
	srv       *http.Server
}

// Functions lists the functions a topology runs, in table and port order:
// the HTTP functions, then one per controller action.
func Functions() []string {
	return append([]string{cloudrun.FnAPI, cloudrun.FnGerritWebhook, cloudrun.FnWorkerAPI}, controller.Actions...)
}

// New validates o and fills in its defaults.
func New(o Options) (*Topology, error) {
	if o.MinPort < 0 || o.MinPort > 65535 {
		return nil, fmt.Errorf("launcher: MinPort %d outside 0..65535", o.MinPort)
	}
	if o.Instances < 0 || o.Concurrency < 0 || o.Workers < 0 || o.Tick < 0 || o.Grace < 0 || o.Ready < 0 {
		return nil, errors.New("launcher: Instances, Concurrency, Workers, Tick, Grace and Ready must not be negative")
	}
	if o.Chaos != nil && !(o.Chaos.FailRate >= 0 && o.Chaos.FailRate <= 1) {
		return nil, fmt.Errorf("launcher: Chaos.FailRate %v outside 0..1", o.Chaos.FailRate)
	}
	if o.Instances == 0 {
		o.Instances = 1
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	if o.Tick == 0 {
		o.Tick = time.Minute
	}
	if o.Grace == 0 {
		o.Grace = 5 * time.Second
	}
	if o.Ready == 0 {
		o.Ready = 30 * time.Second
	}
	if o.Project == "" {
		o.Project = "demo"
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = cloudrun.DefaultTopicPrefix
	}
	if o.Bucket == "" {
		o.Bucket = "tollgate-artifacts"
	}
	if o.WebhookToken == "" {
		o.WebhookToken = randomHex(12)
	}
	if o.EnrollSecret == "" {
		o.EnrollSecret = randomHex(16)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Tollgate == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("launcher: the tollgate binary: %w", err)
		}
		o.Tollgate = exe
	}
	if o.MinPort > 0 && o.MinPort+len(portNames(o))-1 > 65535 {
		return nil, fmt.Errorf("launcher: %d ports from MinPort %d pass 65535", len(portNames(o)), o.MinPort)
	}
	return &Topology{o: o, log: o.Log, gerritUser: "tollgate-bot", gerritPass: randomHex(12)}, nil
}

// portNames are the components that listen, in port order.
func portNames(o Options) []string {
	names := []string{"firestore", "pubsub", "gcs", "monitoring", "gerrit"}
	names = append(names, Functions()...)
	if balanced(o) {
		for _, f := range Functions() {
			for i := 1; i <= o.Instances; i++ {
				names = append(names, instanceName(f, i))
			}
		}
	}
	return names
}

func instanceName(fn string, i int) string { return fn + "#" + strconv.Itoa(i) }

// balanced reports whether every function runs behind a balancer, its
// instances on ports of their own.
func balanced(o Options) bool { return o.Instances > 1 || o.Chaos != nil }

// allocatePorts gives every listening component its port: counting up
// from MinPort (each checked free), or free random ports.
func (t *Topology) allocatePorts() error {
	t.ports = map[string]int{}
	used := map[int]bool{}
	for i, name := range portNames(t.o) {
		if t.o.MinPort == 0 {
			for {
				p, err := gcloud.FreePort()
				if err != nil {
					return fmt.Errorf("launcher: a free port for %s: %w", name, err)
				}
				if !used[p] {
					used[p] = true
					t.ports[name] = p
					break
				}
			}
			continue
		}
		p := t.o.MinPort + i
		l, err := net.Listen("tcp", hostPort(p))
		if err != nil {
			return fmt.Errorf("launcher: port %d (for %s) is in use; choose another --min-port, or 0 for random ports: %w", p, name, err)
		}
		l.Close()
		t.ports[name] = p
	}
	return nil
}

func hostPort(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }

// Start starts everything (see the package documentation) and returns once
// every child accepts connections, the subscriptions exist and the
// scheduler runs. ctx bounds the start only. On failure what was started
// is stopped, and the error names the component (with the tail of its log
// for a child).
func (t *Topology) Start(ctx context.Context) (err error) {
	t.mu.Lock()
	if t.started {
		t.mu.Unlock()
		return errors.New("launcher: already started")
	}
	t.started = true
	t.mu.Unlock()
	defer func() {
		if err != nil {
			if serr := t.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if err := t.prepareDir(); err != nil {
		return err
	}
	if err := t.allocatePorts(); err != nil {
		return err
	}
	if err := t.startEmulators(ctx); err != nil {
		return err
	}
	if err := t.writeConfig(); err != nil {
		return err
	}
	if err := t.startFunctions(ctx); err != nil {
		return err
	}
	if err := t.subscribe(ctx); err != nil {
		return err
	}
	if err := t.startWorkers(); err != nil {
		return err
	}
	t.startScheduler()
	return nil
}

func (t *Topology) prepareDir() error {
	t.dir = t.o.Dir
	if t.dir == "" {
		d, err := os.MkdirTemp("", "tollgate-emulators-")
		if err != nil {
			return fmt.Errorf("launcher: %w", err)
		}
		t.dir = d
	}
	abs, err := filepath.Abs(t.dir)
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	t.dir, t.logDir = abs, filepath.Join(abs, "logs")
	for _, d := range []string{t.logDir, filepath.Join(abs, "work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("launcher: %w", err)
		}
	}
	return nil
}

// startEmulators starts the gcloud emulators (in parallel: each takes
// seconds) and the in-process fakes.
func (t *Topology) startEmulators(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, k := range []gcloud.Kind{gcloud.Firestore, gcloud.PubSub} {
		f, err := os.OpenFile(filepath.Join(t.logDir, string(k)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("launcher: %w", err)
		}
		t.emuLogs = append(t.emuLogs, f)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := gcloud.Start(ctx, k, gcloud.Options{Port: t.ports[string(k)], Log: f, Grace: t.o.Grace})
			if err != nil {
				errs[i] = fmt.Errorf("launcher: %s emulator: %w (log %s:\n%s)", k, err, f.Name(), tail(f.Name(), 10))
				return
			}
			t.mu.Lock()
			if k == gcloud.Firestore {
				t.firestore = e
			} else {
				t.pubsub = e
			}
			t.mu.Unlock()
		}()
	}
	ferr := t.startFakes()
	wg.Wait()
	return errors.Join(append(errs, ferr)...)
}

func (t *Topology) startFakes() error {
	var err error
	if t.gcsLog, err = os.OpenFile(filepath.Join(t.logDir, "gcs.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	p := t.ports["gcs"]
	// Reads go to the XML API at the public host: it must be this address.
	// The fake is served behind gcsfake's preconditions, which Cloud
	// Storage enforces and the fake ignores (the cache's cleanup uses them).
	ln, err := net.Listen("tcp", hostPort(p))
	if err != nil {
		return fmt.Errorf("launcher: fake-gcs-server on %s: %w", hostPort(p), err)
	}
	t.gcs, err = fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: uint16(p),
		PublicHost: hostPort(p), Writer: t.gcsLog, NoListener: true})
	if err != nil {
		ln.Close()
		return fmt.Errorf("launcher: fake-gcs-server on %s: %w", hostPort(p), err)
	}
	t.gcsSrv = &http.Server{Handler: gcsfake.Wrap(t.gcs), ReadHeaderTimeout: 30 * time.Second}
	go t.gcsSrv.Serve(ln)
	t.gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: t.o.Bucket})

	t.mon = fakemonitoring.New(fakemonitoring.Options{})
	if t.monAddr, err = t.mon.Start(hostPort(t.ports["monitoring"])); err != nil {
		return fmt.Errorf("launcher: fake Cloud Monitoring: %w", err)
	}

	t.gerrit = fakegerrit.New(fakegerrit.Options{User: t.gerritUser, Password: t.gerritPass})
	if t.gerritURL, err = t.gerrit.Start(hostPort(t.ports["gerrit"])); err != nil {
		return fmt.Errorf("launcher: fake Gerrit: %w", err)
	}
	if !t.o.NoSeed {
		if err := DemoSeed(t.gerrit); err != nil {
			return fmt.Errorf("launcher: seeding the fake Gerrit: %w", err)
		}
	}
	return nil
}

// writeConfig writes the config the children read, placeholders replaced,
// after checking it parses.
func (t *Topology) writeConfig() error {
	text := DemoConfig
	if t.o.Config != "" {
		b, err := os.ReadFile(t.o.Config)
		if err != nil {
			return fmt.Errorf("launcher: config: %w", err)
		}
		text = string(b)
	}
	text = strings.NewReplacer(PlaceholderGerritURL, t.gerritURL, PlaceholderAPIURL, t.APIURL()).Replace(text)
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		name := t.o.Config
		if name == "" {
			name = "the demo config"
		}
		return fmt.Errorf("launcher: %s: %w", name, err)
	}
	t.cfg = cfg
	t.cfgPath = filepath.Join(t.dir, "tollgate.yaml")
	if err := os.WriteFile(t.cfgPath, []byte(text), 0o644); err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	return nil
}

// baseEnv is the environment every child shares: the emulators, the
// project, the config and the bucket.
func (t *Topology) baseEnv() []string {
	return append(os.Environ(), t.EmulatorEnv()...)
}

// EmulatorEnv is what a process needs to join the topology: the emulator
// hosts and the TOLLGATE_* settings (not the secrets), e.g. for another
// `tollgate worker --backend gcp`.
func (t *Topology) EmulatorEnv() []string {
	return []string{
		"FIRESTORE_EMULATOR_HOST=" + t.FirestoreHost(),
		"PUBSUB_EMULATOR_HOST=" + t.PubSubHost(),
		"STORAGE_EMULATOR_HOST=" + t.StorageURL(),
		cloudrun.EnvMonitoringEmulator + "=" + t.MonitoringHost(),
		cloudrun.EnvProject + "=" + t.o.Project,
		cloudrun.EnvConfig + "=" + t.cfgPath,
		cloudrun.EnvBlobBucket + "=" + t.o.Bucket,
		cloudrun.EnvTopicPrefix + "=" + t.o.TopicPrefix,
	}
}

// functionEnv adds the functions' secrets, and the Gerrit credentials in
// the variables the config names when it points at the fake Gerrit.
func (t *Topology) functionEnv() []string {
	env := append(t.baseEnv(),
		cloudrun.EnvWebhookToken+"="+t.o.WebhookToken,
		cloudrun.EnvEnrollSecret+"="+t.o.EnrollSecret)
	if strings.TrimRight(t.cfg.Gerrit.URL, "/") == t.gerritURL {
		if t.cfg.Gerrit.UserEnv != "" {
			env = append(env, t.cfg.Gerrit.UserEnv+"="+t.gerritUser)
		}
		if t.cfg.Gerrit.PasswordEnv != "" {
			env = append(env, t.cfg.Gerrit.PasswordEnv+"="+t.gerritPass)
		}
	}
	return env
}

// startFunctions starts every function's processes (and balancers) and
// waits until each accepts connections.
func (t *Topology) startFunctions(ctx context.Context) error {
	env := t.functionEnv()
	var all []*child
	for _, name := range Functions() {
		fn := &function{name: name, addr: hostPort(t.ports[name])}
		t.functions = append(t.functions, fn)
		n := t.o.Instances
		for i := 1; i <= n; i++ {
			cname, kind, port := name, KindFunction, t.ports[name]
			if balanced(t.o) {
				cname, kind, port = instanceName(name, i), KindInstance, t.ports[instanceName(name, i)]
			}
			c := &child{
				name: cname, kind: kind, addr: hostPort(port),
				argv:    []string{t.o.Tollgate, "emulators", "function"},
				logPath: filepath.Join(t.logDir, strings.ReplaceAll(cname, "#", "-")+".log"),
				ready:   t.o.Ready, log: t.log,
				env: append(append(env[:len(env):len(env)], "FUNCTION_TARGET="+name, "PORT="+strconv.Itoa(port),
					"K_SERVICE="+name), t.o.Env...),
			}
			fn.instances = append(fn.instances, c)
			all = append(all, c)
		}
		if balanced(t.o) {
			urls := make([]string, n)
			for i, c := range fn.instances {
				urls[i] = "http://" + c.addr
			}
			b, err := newBalancer(name, urls, t.o.Concurrency, t.log)
			if err != nil {
				return err
			}
			if t.o.Chaos != nil && slices.Contains(controller.Actions, name) {
				b.chaos = newChaos(*t.o.Chaos)
			}
			fn.bal = b
			for i, c := range fn.instances {
				c.onUp = func(up bool) { b.setUp(i, up) }
			}
			l, err := net.Listen("tcp", fn.addr)
			if err != nil {
				return fmt.Errorf("launcher: balancer of %s: %w", name, err)
			}
			fn.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
			go fn.srv.Serve(l) //nolint:errcheck // ErrServerClosed on Stop
		}
	}
	for _, c := range all {
		if err := c.start(); err != nil {
			return err
		}
	}
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.waitReady(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// subscribe creates the topics, the dead-letter topic and one push
// subscription per action, pointing at its function.
func (t *Topology) subscribe(ctx context.Context) error {
	tq, err := pubsub.New(ctx, t.o.Project, t.o.TopicPrefix, pubsub.EmulatorOptions(t.PubSubHost())...)
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	defer tq.Close()
	if err := tq.EnsureTopics(ctx, controller.Actions); err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	maxAttempts := min(max(t.cfg.Tasks.MaxAttempts, pubsub.MinMaxAttempts), pubsub.MaxMaxAttempts)
	for _, a := range controller.Actions {
		endpoint := t.FunctionURL(a) + "/" + tq.TopicName(a)
		if err := tq.EnsurePushSubscription(ctx, a, endpoint, maxAttempts, tq.DeadLetterTopicID(),
			time.Second, time.Minute); err != nil {
			return fmt.Errorf("launcher: %w", err)
		}
	}
	t.tickTopic = tq.TopicID(controller.Tick)
	var jobs []schedule
	add := func(action, data string, every time.Duration, now bool) {
		jobs = append(jobs, schedule{action: action, topic: tq.TopicID(action), data: data, every: every, now: now})
	}
	add(controller.Tick, "{}", t.o.Tick, true)
	for _, b := range t.cfg.Gerrit.Branches {
		add(controller.QueuePostsubmitJobs, fmt.Sprintf(`{"branch":%q}`, b), t.cfg.Postsubmit.Interval.D(), false)
	}
	add(controller.ReapDeadWorkers, "{}", t.cfg.Timeouts.WorkerDeath.D(), false)
	add(controller.DeleteStaleJobs, "{}", 15*time.Minute, false)
	add(controller.DeleteExpiredLogs, "{}", 15*time.Minute, false)
	t.sched = newScheduler(t.PubSubHost(), t.o.Project, t.log)
	t.schedJobs = jobs
	return nil
}

// startWorkers starts the workers; they listen on nothing, so started is
// ready (one that fails is restarted like any child).
func (t *Topology) startWorkers() error {
	env := append(t.baseEnv(), t.o.Env...)
	grace := max(t.o.Grace/2, time.Second)
	for i := 1; i <= t.o.Workers; i++ {
		name := "worker-" + strconv.Itoa(i)
		c := &child{
			name: name, kind: KindWorker, log: t.log, ready: t.o.Ready, env: env,
			argv: []string{t.o.Tollgate, "worker", "--backend", "gcp", "--id", "emu-" + name,
				"--work-dir", filepath.Join(t.dir, "work", name), "--grace", grace.String(),
				"--sandbox", cmp.Or(t.o.Sandbox, "auto")},
			logPath: filepath.Join(t.logDir, name+".log"),
		}
		if err := c.start(); err != nil {
			return err
		}
		t.workers = append(t.workers, c)
	}
	return nil
}

func (t *Topology) startScheduler() { t.sched.start(t.schedJobs) }

// Tick publishes a tick now, as the scheduler does every Options.Tick.
func (t *Topology) Tick(ctx context.Context) error {
	return t.sched.publish(ctx, t.tickTopic, controller.Tick, "{}")
}

// Stop stops everything Start started: the scheduler, every child
// (SIGTERM to its process group and descendants, SIGKILL after
// Options.Grace), the balancers, the in-process fakes and the emulators
// (their java processes included). It reports processes that outlived
// SIGKILL. Safe to call more than once, and after a failed Start.
func (t *Topology) Stop() error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return nil
	}
	t.stopped = true
	t.mu.Unlock()
	var list []error
	if t.sched != nil {
		t.sched.close()
	}
	var children []*child
	for _, f := range t.functions {
		for _, c := range f.instances {
			if c.done != nil {
				children = append(children, c)
			}
		}
	}
	children = append(children, t.workers...)
	list = append(list, stopChildren(children, t.o.Grace))
	for _, f := range t.functions {
		if f.srv != nil {
			list = append(list, f.srv.Close())
		}
	}
	if t.gerrit != nil {
		list = append(list, t.gerrit.Close())
	}
	if t.mon != nil {
		t.mon.Close()
	}
	if t.gcsSrv != nil {
		t.gcsSrv.Close()
	}
	if t.gcs != nil {
		t.gcs.Stop()
	}
	if t.gcsLog != nil {
		t.gcsLog.Close()
	}
	var wg sync.WaitGroup
	emuErrs := make([]error, 2)
	for i, e := range []*gcloud.Emulator{t.firestore, t.pubsub} {
		if e == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			emuErrs[i] = e.Stop()
		}()
	}
	wg.Wait()
	list = append(list, emuErrs...)
	for _, f := range t.emuLogs {
		f.Close()
	}
	return errors.Join(list...)
}

// Components is the component table: every emulator, function (or
// balancer and instances), worker and the scheduler, with its address,
// process and log.
func (t *Topology) Components() []Component {
	self := os.Getpid()
	var out []Component
	for _, e := range []*gcloud.Emulator{t.firestore, t.pubsub} {
		if e != nil {
			out = append(out, Component{Name: string(e.Kind), Kind: KindEmulator, Addr: e.Host, URL: "http://" + e.Host,
				Pid: e.Pid(), Log: filepath.Join(t.logDir, string(e.Kind)+".log")})
		}
	}
	if t.gcs != nil {
		a := hostPort(t.ports["gcs"])
		out = append(out, Component{Name: "gcs", Kind: KindFake, Addr: a, URL: "http://" + a, Pid: self, Log: t.gcsLog.Name()})
	}
	if t.monAddr != "" {
		out = append(out, Component{Name: "monitoring", Kind: KindFake, Addr: t.monAddr, Pid: self})
	}
	if t.gerritURL != "" {
		out = append(out, Component{Name: "gerrit", Kind: KindFake, Addr: strings.TrimPrefix(t.gerritURL, "http://"),
			URL: t.gerritURL, Pid: self})
	}
	for _, f := range t.functions {
		if f.bal != nil {
			out = append(out, Component{Name: f.name, Kind: KindBalancer, Addr: f.addr, URL: "http://" + f.addr, Pid: self})
		}
		for _, c := range f.instances {
			out = append(out, c.component())
		}
	}
	for _, c := range t.workers {
		out = append(out, c.component())
	}
	if t.sched != nil {
		out = append(out, Component{Name: "scheduler", Kind: KindScheduler, Pid: self})
	}
	return out
}

func (c *child) component() Component {
	k := Component{Name: c.name, Kind: c.kind, Addr: c.addr, Pid: c.Pid(), Log: c.logPath, Restarts: c.Restarts()}
	if c.addr != "" {
		k.URL = "http://" + c.addr
	}
	return k
}

// WriteTable prints the component table, then the addresses a person
// needs: the API, the webhook with its token, the fake Gerrit and its
// control API, and the environment to join the topology.
func (t *Topology) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tKIND\tADDRESS\tPID\tLOG")
	for _, c := range t.Components() {
		addr := c.URL
		if addr == "" {
			addr = c.Addr
		}
		pid := "-"
		if c.Pid != 0 {
			pid = strconv.Itoa(c.Pid)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Kind, dash(addr), pid, dash(c.Log))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, `
API:                %s/api/v1/cls
Gerrit webhook:     %s
worker API:         %s (enroll secret %s)
fake Gerrit:        %s (user %s, password %s)
fake Gerrit control API: %s
config:             %s
environment:        %s
`, t.APIURL(), t.WebhookURL(), t.FunctionURL(cloudrun.FnWorkerAPI), t.o.EnrollSecret,
		t.gerritURL, t.gerritUser, t.gerritPass, t.GerritControlURL(), t.cfgPath, strings.Join(t.EmulatorEnv(), " "))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ChaosCounts sums what the chaos did over the action functions (zero
// without Options.Chaos).
func (t *Topology) ChaosCounts() ChaosCounts {
	var sum ChaosCounts
	for _, f := range t.functions {
		if f.bal == nil || f.bal.chaos == nil {
			continue
		}
		c := f.bal.chaos.snapshot()
		sum.Pushes += c.Pushes
		sum.Deliveries += c.Deliveries
		sum.FailedBefore += c.FailedBefore
		sum.FailedAfter += c.FailedAfter
	}
	return sum
}

// FunctionURL is the base URL of function name (its balancer's with
// Instances > 1), or "" if there is no such function.
func (t *Topology) FunctionURL(name string) string {
	if p, ok := t.ports[name]; ok && slices.Contains(Functions(), name) {
		return "http://" + hostPort(p)
	}
	return ""
}

// APIURL is the api function's base URL (the JSON API is under /api/v1/).
func (t *Topology) APIURL() string { return t.FunctionURL(cloudrun.FnAPI) }

// WorkerAPIURL is the worker_api function's base URL.
func (t *Topology) WorkerAPIURL() string { return t.FunctionURL(cloudrun.FnWorkerAPI) }

// WebhookURL is the gerrit_webhook function's URL with its token, what
// Gerrit's webhooks plugin posts to.
func (t *Topology) WebhookURL() string {
	return t.FunctionURL(cloudrun.FnGerritWebhook) + "/?token=" + t.o.WebhookToken
}

// WebhookToken and EnrollSecret are the functions' secrets.
func (t *Topology) WebhookToken() string { return t.o.WebhookToken }

// EnrollSecret is the secret workers enroll with over the worker API.
func (t *Topology) EnrollSecret() string { return t.o.EnrollSecret }

// Gerrit is the fake Gerrit, for tests to create changes and read reviews.
func (t *Topology) Gerrit() *fakegerrit.Server { return t.gerrit }

// GerritURL is the fake Gerrit's base URL.
func (t *Topology) GerritURL() string { return t.gerritURL }

// GerritControlURL is the fake Gerrit's control API (emulators/gerrit).
func (t *Topology) GerritControlURL() string { return t.gerritURL + "/control/" }

// GerritCredentials are the HTTP user and password of the fake Gerrit.
func (t *Topology) GerritCredentials() (user, password string) { return t.gerritUser, t.gerritPass }

// Monitoring is the fake Cloud Monitoring, for tests to read metrics.
func (t *Topology) Monitoring() *fakemonitoring.Server { return t.mon }

// MonitoringHost is the fake Cloud Monitoring's host:port
// (TOLLGATE_MONITORING_EMULATOR_HOST).
func (t *Topology) MonitoringHost() string { return t.monAddr }

// FirestoreHost is the Firestore emulator's host:port (FIRESTORE_EMULATOR_HOST).
func (t *Topology) FirestoreHost() string { return hostPort(t.ports["firestore"]) }

// PubSubHost is the Pub/Sub emulator's host:port (PUBSUB_EMULATOR_HOST).
func (t *Topology) PubSubHost() string { return hostPort(t.ports["pubsub"]) }

// StorageURL is fake-gcs-server's base URL (STORAGE_EMULATOR_HOST).
func (t *Topology) StorageURL() string { return "http://" + hostPort(t.ports["gcs"]) }

// Project is the Google Cloud project of the emulators.
func (t *Topology) Project() string { return t.o.Project }

// TopicPrefix is the Pub/Sub topic prefix.
func (t *Topology) TopicPrefix() string { return t.o.TopicPrefix }

// Bucket is the artifacts bucket on fake-gcs-server.
func (t *Topology) Bucket() string { return t.o.Bucket }

// Config is the parsed config the children run with.
func (t *Topology) Config() *config.Config { return t.cfg }

// ConfigPath is the config file the children read (placeholders replaced).
func (t *Topology) ConfigPath() string { return t.cfgPath }

// Dir is the topology's directory (config, logs/, work/).
func (t *Topology) Dir() string { return t.dir }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
