package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	fakemonitoring "github.com/tollgate-ci/tollgate/emulators/monitoring"
)

// The demo: a fake Gerrit in this process with a project, sample changes
// from trusted and untrusted uploaders, and a config that watches it.
const (
	demoProject  = "demo/hello"
	demoUserEnv  = "TOLLGATE_DEMO_GERRIT_USER"
	demoPassEnv  = "TOLLGATE_DEMO_GERRIT_PASSWORD"
	demoUser     = "tollgate-bot"
	demoTrusted  = `.*@example\.com`
	demoReviewer = "carol@example.com"
	// demoGerritAddr is where the demo's fake Gerrit listens if it can.
	demoGerritAddr = "127.0.0.1:8081"
)

const demoConfig = `
gerrit:
  url: %s
  project: demo/hello
  branches: [main]
  user_env: TOLLGATE_DEMO_GERRIT_USER
  password_env: TOLLGATE_DEMO_GERRIT_PASSWORD
  poll_interval: 2s
  full_reconcile_interval: 1m
trust:
  trusted_emails: '.*@example\.com'
  ready_label: Presubmit-Ready
vote:
  enabled: true
  label: Code-Review
  ui_url: http://%s
jobs:
  build:
    command: [sh, -c, "echo building change $TOLLGATE_CHANGE patchset $TOLLGATE_PATCHSET; sleep 1; mkdir -p $TOLLGATE_ARTIFACTS_DIR/bin; echo binary > $TOLLGATE_ARTIFACTS_DIR/bin/hello; echo built"]
  test:
    command: [sh, -c, "echo running 3 tests; sleep 1; if [ \"$TOLLGATE_CHANGE\" = 4 ]; then echo 'FAIL: translation_test: missing plural forms'; exit 1; fi; echo 'all 3 tests passed'"]
  lint:
    command: [sh, -c, "echo linting; sleep 1; echo 'warning: line too long'; exit 1"]
    skip_voting: true
timeouts: {job: 10m, cl: 1h, worker_death: 1m}
logs_ttl: 7d
postsubmit: {interval: 1m}
`

type demo struct {
	Config *config.Config
	URL    string
	Gerrit *fakegerrit.Server
	log    *slog.Logger
	first  fakegerrit.PatchSet // the change that gets a second patchset
}

// startDemo starts the fake Gerrit with its sample changes. listen is the
// address the API will listen on (for the links in votes).
func startDemo(ctx context.Context, log *slog.Logger, listen string) (*demo, error) {
	password := randomHex(16)
	g := fakegerrit.New(fakegerrit.Options{User: demoUser, Password: password})
	// A fixed port keeps the README's commands true; a busy one falls back
	// to any free port (the address is printed either way).
	url, err := g.Start(demoGerritAddr)
	if err != nil {
		if url, err = g.Start("127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	d := &demo{Gerrit: g, URL: url, log: log}
	if err := d.seed(); err != nil {
		g.Close()
		return nil, err
	}
	os.Setenv(demoUserEnv, demoUser)
	os.Setenv(demoPassEnv, password)
	if d.Config, err = config.Parse(fmt.Appendf(nil, demoConfig, url, listen)); err != nil {
		g.Close()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	return d, nil
}

func (d *demo) seed() error {
	if _, err := d.Gerrit.CreateBranch(demoProject, "main", fakegerrit.CommitSpec{Subject: "Initial commit", AuthorEmail: "alice@example.com"}); err != nil {
		return err
	}
	var err error
	if d.first, err = d.Gerrit.CreateChange(fakegerrit.ChangeSpec{Project: demoProject, Branch: "main",
		Subject: "Add a greeting", OwnerEmail: "alice@example.com"}); err != nil {
		return err
	}
	bob, err := d.Gerrit.CreateChange(fakegerrit.ChangeSpec{Project: demoProject, Branch: "main",
		Subject: "Fix a typo in the README", OwnerEmail: "bob@example.com"})
	if err != nil {
		return err
	}
	if err := d.Gerrit.SetVote(bob.Change, demoReviewer, "Presubmit-Ready", 1); err != nil {
		return err
	}
	if _, err := d.Gerrit.CreateChange(fakegerrit.ChangeSpec{Project: demoProject, Branch: "main",
		Subject: "Speed up the build (untrusted, no label)", OwnerEmail: "mallory@untrusted.example"}); err != nil {
		return err
	}
	dave, err := d.Gerrit.CreateChange(fakegerrit.ChangeSpec{Project: demoProject, Branch: "main",
		Subject: "Add Esperanto translation (outside contributor, approved)", OwnerEmail: "dave@contributor.example"})
	if err != nil {
		return err
	}
	return d.Gerrit.SetVote(dave.Change, demoReviewer, "Presubmit-Ready", 1)
}

// Drive plays the demo's story once the runtime is up: after the first
// poll has queued alice's patchset 1, she uploads patchset 2, and Gerrit's
// webhook (played here by deferring check_new_cl) tells Tollgate at once;
// patchset 2's arrival cancels patchset 1's jobs.
func (d *demo) Drive(ctx context.Context, rt *embedded) {
	id := model.PatchsetID(d.first.Change, 1)
	for {
		_, err := rt.Store.GetPatchset(ctx, id)
		if err == nil {
			break
		}
		if !errs.Is(err, errs.NotFound) {
			d.log.Error("demo", "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := d.Gerrit.UploadPatchset(d.first.Change, fakegerrit.PatchSetSpec{UploaderEmail: "alice@example.com"}); err != nil {
		d.log.Error("demo: upload patchset 2", "err", err)
		return
	}
	d.log.Info("demo: alice uploaded patchset 2 of change " + fmt.Sprint(d.first.Change))
	if err := rt.Queue.Defer(ctx, controller.CheckNewCL, controller.CheckNewCLArgs{Change: d.first.Change}); err != nil {
		d.log.Error("demo: webhook", "err", err)
	}
}

func (d *demo) Close() { d.Gerrit.Close() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runFakeGerrit runs the fake Gerrit alone until ctx ends.
func runFakeGerrit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate emulators gerrit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	user := fs.String("user", "tollgate-bot", "HTTP user for /a/ requests")
	passEnv := fs.String("password-env", "", "environment variable holding the HTTP password (default: a random password, printed)")
	seed := fs.Bool("seed", false, "create the demo project and sample changes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	password := randomHex(12)
	if *passEnv != "" {
		if password = os.Getenv(*passEnv); password == "" {
			return fmt.Errorf("--password-env %s is empty", *passEnv)
		}
	}
	g := fakegerrit.New(fakegerrit.Options{User: *user, Password: password})
	url, err := g.Start(*listen)
	if err != nil {
		return err
	}
	defer g.Close()
	if *seed {
		d := &demo{Gerrit: g}
		if err := d.seed(); err != nil {
			return err
		}
	}
	shown := password
	if *passEnv != "" {
		shown = "$" + *passEnv
	}
	fmt.Fprintf(stdout, "fake Gerrit at %s (user %s, password %s)\ncontrol API: %s/control/ (see emulators/gerrit/doc.go)\n",
		url, *user, shown, strings.TrimRight(url, "/"))
	<-ctx.Done()
	return nil
}

// runFakeMonitoring runs the fake Cloud Monitoring MetricService (gRPC)
// alone until ctx ends; point TOLLGATE_MONITORING_EMULATOR_HOST at it.
func runFakeMonitoring(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate emulators monitoring", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8087", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m := fakemonitoring.New(fakemonitoring.Options{})
	addr, err := m.Start(*listen)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(stdout, "fake Cloud Monitoring at %s (TOLLGATE_MONITORING_EMULATOR_HOST=%s)\n", addr, addr)
	<-ctx.Done()
	return nil
}
