package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

// EmulatedOptions configure StartEmulated.
type EmulatedOptions struct {
	// Tollgate is the tollgate binary (launcher.BuildTollgate).
	Tollgate string
	// Dir holds the launcher's directory, the logs and the work directories.
	Dir string
	// Workers is the number of `tollgate worker --backend gcp` processes
	// (default 4).
	Workers  int
	Settings Settings
	// TickEvery is the period of the test's ticks (default 1s).
	TickEvery time.Duration
	// HoldTicks starts with the ticks held back (the launcher still
	// publishes one at start).
	HoldTicks bool
	// Launcher is passed on to launcher.Options (Instances, Concurrency,
	// Chaos...); Tollgate, Dir, Config, NoSeed, Workers, Tick and Log are
	// set here.
	Launcher launcher.Options
	// Log receives the launcher's events (default: discarded).
	Log *slog.Logger
}

// Emulated is the launcher's Google Cloud topology, its workers as
// processes the suite owns, and ticks published by the test.
type Emulated struct {
	o       EmulatedOptions
	topo    *launcher.Topology
	ctl     string
	workers *workerSet
	client  *http.Client

	hold     atomic.Bool
	stopTick chan struct{}
	tickWG   sync.WaitGroup
}

var _ Topology = (*Emulated)(nil)

// StartEmulated starts the launcher's topology with the suite's config and
// no workers of its own, creates Project and Branch on its fake Gerrit,
// starts the workers and the ticks. On failure what was started is stopped.
func StartEmulated(ctx context.Context, o EmulatedOptions) (_ *Emulated, err error) {
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.TickEvery == 0 {
		o.TickEvery = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	e := &Emulated{o: o, client: &http.Client{Timeout: 10 * time.Second}, stopTick: make(chan struct{})}
	e.hold.Store(o.HoldTicks)
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Stop())
		}
	}()
	ctl, err := prepare(o.Dir)
	if err != nil {
		return nil, err
	}
	e.ctl = ctl
	cfgPath := filepath.Join(o.Dir, "tollgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(configText(ctl, o.Settings, true)), 0o644); err != nil {
		return nil, err
	}
	lo := o.Launcher
	lo.Tollgate, lo.Dir, lo.Config, lo.NoSeed, lo.Workers, lo.Log = o.Tollgate, filepath.Join(o.Dir, "launcher"), cfgPath, true, 0, o.Log
	// The launcher's own ticks are the test's to give: one at start, then
	// only those of the ticker below.
	lo.Tick = 24 * time.Hour
	if lo.Grace == 0 {
		lo.Grace = 3 * time.Second
	}
	if e.topo, err = launcher.New(lo); err != nil {
		return nil, err
	}
	if err := e.topo.Start(ctx); err != nil {
		return nil, err
	}
	if err := createProject(e.topo.Gerrit()); err != nil {
		return nil, err
	}
	env := append(append(os.Environ(), e.topo.EmulatorEnv()...), o.Launcher.Env...)
	e.workers = &workerSet{prefix: "e2e-emu-", dir: o.Dir, env: env,
		argv: func(id, work string) []string {
			return []string{o.Tollgate, "worker", "--backend", "gcp", "--id", id, "--work-dir", work, "--grace", "1s", "--sandbox", Sandbox}
		}}
	for range o.Workers {
		if _, err := e.workers.add(); err != nil {
			return nil, err
		}
	}
	e.tickWG.Go(e.tick)
	return e, nil
}

// tick publishes a tick every TickEvery unless held, as Cloud Scheduler
// would (the tick's lease makes one per poll interval count).
func (e *Emulated) tick() {
	t := time.NewTicker(e.o.TickEvery)
	defer t.Stop()
	for {
		select {
		case <-e.stopTick:
			return
		case <-t.C:
		}
		if e.hold.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.topo.Tick(ctx); err != nil {
			e.o.Log.Warn("e2e: tick", "err", err.Error())
		}
		cancel()
	}
}

func (e *Emulated) Name() string               { return "emulated" }
func (e *Emulated) Gerrit() *fakegerrit.Server { return e.topo.Gerrit() }
func (e *Emulated) APIURL() string             { return e.topo.APIURL() }
func (e *Emulated) WebhookURL() string         { return e.topo.WebhookURL() }
func (e *Emulated) ControlDir() string         { return e.ctl }
func (e *Emulated) LogDir() string             { return filepath.Join(e.o.Dir, "logs") }

// Launcher is the launcher's topology.
func (e *Emulated) Launcher() *launcher.Topology { return e.topo }

// HoldTicks holds back or resumes the test's ticks.
func (e *Emulated) HoldTicks(hold bool) bool {
	e.hold.Store(hold)
	return true
}

// Trigger publishes the task to the action's topic, as the functions'
// Defer does.
func (e *Emulated) Trigger(ctx context.Context, action string, args any) error {
	b, err := json.Marshal(args)
	if err != nil {
		return err
	}
	if args == nil {
		b = []byte("{}")
	}
	return e.DeliverRaw(ctx, action, b)
}

// DeliverRaw publishes a message with the attributes of a task (action,
// schema, task_id, created) and data as given, through the emulator's REST
// API.
func (e *Emulated) DeliverRaw(ctx context.Context, action string, data []byte) error {
	body, err := json.Marshal(map[string]any{"messages": []any{map[string]any{
		"data": base64.StdEncoding.EncodeToString(data),
		"attributes": map[string]string{pubsub.AttrAction: action, pubsub.AttrSchema: pubsub.Schema,
			pubsub.AttrTaskID: "e2e-" + randomHex(8), pubsub.AttrCreated: time.Now().UTC().Format(time.RFC3339Nano)},
	}}})
	if err != nil {
		return err
	}
	topic := e.topo.TopicPrefix() + "-" + action // action names need no escaping
	u := fmt.Sprintf("http://%s/v1/projects/%s/topics/%s:publish", e.topo.PubSubHost(), e.topo.Project(), topic)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("e2e: publish to %s: HTTP %d: %s", topic, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

func (e *Emulated) Workers() []string          { return e.workers.ids() }
func (e *Emulated) AddWorker() (string, error) { return e.workers.add() }
func (e *Emulated) KillWorker(id string) error { return e.workers.kill(id) }

// Stop stops the ticks, the workers and the launcher's topology.
func (e *Emulated) Stop() error {
	select {
	case <-e.stopTick:
	default:
		close(e.stopTick)
	}
	e.tickWG.Wait()
	if e.workers != nil {
		e.workers.stop(5 * time.Second)
	}
	if e.topo != nil {
		return e.topo.Stop()
	}
	return nil
}
