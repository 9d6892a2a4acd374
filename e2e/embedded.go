package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/localqueue"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Tollgate is the tollgate binary (launcher.BuildTollgate).
	Tollgate string
	// Dir holds the config, the data directory, the logs and the work
	// directories.
	Dir string
	// Workers is the number of `tollgate worker` processes (default 4).
	Workers  int
	Settings Settings
	// Ready bounds the start (default 30s).
	Ready time.Duration
	// Chaos asks `tollgate up` for unreliable task delivery through
	// EnvChaos; StartEmbedded fails with ErrUnsupported when it does not
	// confirm (see EnvChaos).
	Chaos *launcher.Chaos
}

// What `tollgate up` offers the suite.
const (
	// EnvChaos makes `tollgate up` wrap its task handler: "duplicate"
	// (each delivery runs the handler twice), "fail=F" (a fraction F of
	// deliveries fail, before or after the handler ran), "seed=N". It
	// confirms with a line starting "chaos:" before "tollgate is up";
	// without it StartEmbedded fails with ErrUnsupported.
	EnvChaos = "TOLLGATE_CHAOS"
	// EnvWebhookToken is the Gerrit webhook's token (--webhook-token-env's
	// default); with it `tollgate up` prints "gerrit webhook: URL ..."
	// before "tollgate is up", and WebhookURL is that URL with the token.
	EnvWebhookToken = "TOLLGATE_WEBHOOK_TOKEN"
)

// Embedded is `tollgate up` as a child process, its workers as processes
// of their own over the worker API, and the fake Gerrit in this process.
type Embedded struct {
	o       EmbeddedOptions
	gerrit  *fakegerrit.Server
	ctl     string
	dataDir string
	apiURL  string
	webhook string // with its token; "" when not served
	up      *exec.Cmd
	upDone  chan struct{}
	upLog   *os.File
	queue   *localqueue.Queue
	workers *workerSet
}

var _ Topology = (*Embedded)(nil)

const envEnrollSecret = "E2E_ENROLL_SECRET"

// StartEmbedded starts the fake Gerrit (Project and Branch created),
// `tollgate up --workers 0` on a free port, and the workers, and returns
// once the API answers. On failure what was started is stopped.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (_ *Embedded, err error) {
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.Ready == 0 {
		o.Ready = 30 * time.Second
	}
	e := &Embedded{o: o, dataDir: filepath.Join(o.Dir, "data")}
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
	user, password := "tollgate-bot", randomHex(8)
	e.gerrit = fakegerrit.New(fakegerrit.Options{User: user, Password: password})
	gerritURL, err := e.gerrit.Start("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := createProject(e.gerrit); err != nil {
		return nil, err
	}
	// `tollgate up` listens on a port it picks, so vote.ui_url is unset.
	cfg := strings.ReplaceAll(configText(ctl, o.Settings, false), placeholderGerritURL, gerritURL)
	cfgPath := filepath.Join(o.Dir, "tollgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	secret, token := randomHex(16), randomHex(12)
	env := append(os.Environ(), envGerritUser+"="+user, envGerritPassword+"="+password, envEnrollSecret+"="+secret,
		EnvWebhookToken+"="+token)
	if c := o.Chaos; c != nil {
		spec := fmt.Sprintf("fail=%g,seed=%d", c.FailRate, c.Seed)
		if c.Duplicate {
			spec = "duplicate," + spec
		}
		env = append(env, EnvChaos+"="+spec)
	}
	if e.upLog, err = os.Create(filepath.Join(o.Dir, "logs", "tollgate-up.log")); err != nil {
		return nil, err
	}
	e.up = exec.Command(o.Tollgate, "up", "--config", cfgPath, "--data", e.dataDir, "--listen", "127.0.0.1:0",
		"--workers", "0", "--enroll-secret-env", envEnrollSecret)
	e.up.Env = env
	e.up.Stderr = e.upLog
	e.up.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	addr := make(chan string, 1)
	// "tollgate is up: API http://ADDR/api/v1/cls ..." names the address.
	var mu sync.Mutex // the watcher runs in exec's copying goroutine
	chaosOn := false
	e.up.Stdout = &lineWatcher{w: e.upLog, fn: func(line string) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(line, "chaos:") {
			chaosOn = true
		}
		if u, ok := strings.CutPrefix(line, "gerrit webhook: "); ok {
			u, _, _ = strings.Cut(strings.TrimSpace(u), " ")
			e.webhook = u + "?token=" + token
		}
		if rest, ok := strings.CutPrefix(line, "tollgate is up: API http://"); ok {
			a, _, _ := strings.Cut(rest, "/")
			select {
			case addr <- a:
			default:
			}
		}
	}}
	if err := e.up.Start(); err != nil {
		return nil, fmt.Errorf("e2e: start tollgate up: %w", err)
	}
	e.upDone = make(chan struct{})
	go func() {
		_ = e.up.Wait()
		close(e.upDone)
	}()
	select {
	case a := <-addr:
		e.apiURL = "http://" + a
	case <-e.upDone:
		return nil, fmt.Errorf("e2e: tollgate up exited before it was up; log %s:\n%s", e.upLog.Name(), tail(e.upLog.Name(), 20))
	case <-time.After(o.Ready):
		return nil, fmt.Errorf("e2e: tollgate up not up within %s; log %s:\n%s", o.Ready, e.upLog.Name(), tail(e.upLog.Name(), 20))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	confirmed := chaosOn
	mu.Unlock()
	if o.Chaos != nil && !confirmed {
		return nil, fmt.Errorf("%w: tollgate up did not confirm %s (no \"chaos:\" line)", ErrUnsupported, EnvChaos)
	}
	if err := waitHealthy(ctx, e.apiURL, o.Ready); err != nil {
		return nil, err
	}
	// Triggers go through the database's task table, which the queue of
	// `tollgate up` polls (several processes may share it).
	if e.queue, err = localqueue.Open(filepath.Join(e.dataDir, "tollgate.db"), localqueue.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		return nil, err
	}
	e.workers = &workerSet{prefix: "e2e-emb-", dir: o.Dir, env: env,
		argv: func(id, work string) []string {
			return []string{o.Tollgate, "worker", "--server", e.apiURL, "--enroll-secret-env", envEnrollSecret,
				"--id", id, "--work-dir", work, "--grace", "1s", "--sandbox", Sandbox}
		}}
	for range o.Workers {
		if _, err := e.workers.add(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// waitHealthy waits until base/healthz answers 200.
func waitHealthy(ctx context.Context, base string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: %s/healthz not healthy within %s (last: %v)", base, bound, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *Embedded) Name() string               { return "embedded" }
func (e *Embedded) Gerrit() *fakegerrit.Server { return e.gerrit }
func (e *Embedded) APIURL() string             { return e.apiURL }

// WebhookURL is "" while `tollgate up` serves no Gerrit webhook (it must
// announce it before "tollgate is up").
func (e *Embedded) WebhookURL() string { return e.webhook }
func (e *Embedded) ControlDir() string { return e.ctl }
func (e *Embedded) LogDir() string     { return filepath.Join(e.o.Dir, "logs") }

// HoldTicks cannot hold back `tollgate up`'s own scheduler.
func (e *Embedded) HoldTicks(bool) bool { return false }

// Trigger defers the task into the queue table `tollgate up` drains.
func (e *Embedded) Trigger(ctx context.Context, action string, args any) error {
	return e.queue.Defer(ctx, action, args)
}

// DeliverRaw defers a task with args as given (a JSON object: the queue
// stores only those).
func (e *Embedded) DeliverRaw(ctx context.Context, action string, args []byte) error {
	return e.queue.Defer(ctx, action, json.RawMessage(args))
}

func (e *Embedded) Workers() []string          { return e.workers.ids() }
func (e *Embedded) AddWorker() (string, error) { return e.workers.add() }
func (e *Embedded) KillWorker(id string) error { return e.workers.kill(id) }

// Stop stops the workers, then `tollgate up` (SIGTERM, SIGKILL after 15 s),
// then the fake Gerrit.
func (e *Embedded) Stop() error {
	if e.workers != nil {
		e.workers.stop(5 * time.Second)
	}
	var list []error
	if e.up != nil && e.up.Process != nil && e.upDone != nil {
		_ = e.up.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.upDone:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-e.up.Process.Pid, syscall.SIGKILL)
			<-e.upDone
			list = append(list, errors.New("e2e: tollgate up did not stop within 15s of SIGTERM"))
		}
	}
	if e.queue != nil {
		list = append(list, e.queue.Close())
	}
	if e.upLog != nil {
		e.upLog.Close()
	}
	if e.gerrit != nil {
		list = append(list, e.gerrit.Close())
	}
	return errors.Join(list...)
}

// lineWatcher copies output to w and calls fn with each whole line.
type lineWatcher struct {
	w   io.Writer
	fn  func(string)
	buf []byte
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.fn(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return l.w.Write(p)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
