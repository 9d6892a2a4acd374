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
	"github.com/tollgate-ci/tollgate/emulators/launcher"
	fakemonitoring "github.com/tollgate-ci/tollgate/emulators/monitoring"
)

// The demo: a fake Gerrit in this process with the launcher's sample
// changes (emulators/launcher.DemoSeed) and its config, so `tollgate up
// --demo` and `tollgate emulators up` tell the same story.
const (
	demoUserEnv = "TOLLGATE_EMULATORS_GERRIT_USER"
	demoPassEnv = "TOLLGATE_EMULATORS_GERRIT_PASSWORD"
	demoUser    = "tollgate-bot"
	// demoGerritAddr is where the demo's fake Gerrit listens if it can.
	demoGerritAddr = "127.0.0.1:8081"
	// demoFirstChange is alice's change, which gets a second patchset.
	demoFirstChange = 1
)

type demo struct {
	Config *config.Config
	URL    string
	Gerrit *fakegerrit.Server
	log    *slog.Logger
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
	if err := launcher.DemoSeed(g); err != nil {
		g.Close()
		return nil, err
	}
	os.Setenv(demoUserEnv, demoUser)
	os.Setenv(demoPassEnv, password)
	yaml := strings.NewReplacer("${GERRIT_URL}", url, "${API_URL}", "http://"+listen).Replace(launcher.DemoConfig)
	if d.Config, err = config.Parse([]byte(yaml)); err != nil {
		g.Close()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	return d, nil
}

// Drive plays the demo's story once the runtime is up: after the first
// poll has queued alice's patchset 1, she uploads patchset 2, and Gerrit's
// webhook (played here by deferring check_new_cl) tells Tollgate at once;
// patchset 2's arrival cancels patchset 1's jobs.
func (d *demo) Drive(ctx context.Context, rt *embedded) {
	id := model.PatchsetID(demoFirstChange, 1)
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
	if _, err := d.Gerrit.UploadPatchset(demoFirstChange, fakegerrit.PatchSetSpec{UploaderEmail: "alice@example.com"}); err != nil {
		d.log.Error("demo: upload patchset 2", "err", err)
		return
	}
	d.log.Info("demo: alice uploaded patchset 2 of change " + fmt.Sprint(demoFirstChange))
	if err := rt.Queue.Defer(ctx, controller.CheckNewCL, controller.CheckNewCLArgs{Change: demoFirstChange}); err != nil {
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
		if err := launcher.DemoSeed(g); err != nil {
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
