package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

// runEmulatorsLauncher runs `tollgate emulators up` or the hidden
// `tollgate emulators function`.
func runEmulatorsLauncher(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) error {
	if sub == "function" {
		return runEmulatorFunction(ctx, args, stdout, stderr)
	}
	return runEmulatorsUp(ctx, args, stdout, stderr)
}

// runEmulatorsUp is `tollgate emulators up`: the Google Cloud topology on
// this machine, one process per function against the emulators, until
// SIGINT or SIGTERM (see emulators/launcher).
func runEmulatorsUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate emulators up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file; ${GERRIT_URL} and ${API_URL} in it are replaced (default: the demo config)")
	dir := fs.String("dir", "", "directory of the config, logs/ and work/ (default: a new temporary directory, kept)")
	noSeed := fs.Bool("no-seed", false, "leave the fake Gerrit empty instead of creating the demo's changes")
	minPort := fs.Int("min-port", 9000, "first port; the components take the following ones in a fixed order (0: random free ports)")
	instances := fs.Int("instances", 1, "processes per function; above 1, a balancer per function answers 503 when all are busy")
	concurrency := fs.Int("concurrency", 1, "requests an instance serves at once before the balancer counts it busy (with --instances > 1)")
	workers := fs.Int("workers", 2, "tollgate worker --backend gcp processes")
	tick := fs.Duration("tick", time.Minute, "how often the scheduler publishes a tick (one is also published at start)")
	grace := fs.Duration("grace", 5*time.Second, "time between SIGTERM and SIGKILL when stopping the children")
	project := fs.String("project", "demo", "Google Cloud project of the emulators")
	verbose := fs.Bool("v", false, "debug logging of the launcher")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("emulators up: unexpected arguments %q", fs.Args())
	}
	log := newLogger(stderr, *verbose)
	t, err := launcher.New(launcher.Options{Config: *cfg, Dir: *dir, NoSeed: *noSeed, MinPort: *minPort,
		Instances: *instances, Concurrency: *concurrency, Workers: *workers, Tick: *tick, Grace: *grace,
		Project: *project, Log: log})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "starting the Firestore and Pub/Sub emulators, the fakes and one process per function...")
	start := time.Now()
	if err := t.Start(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "up in %s\n\n", time.Since(start).Round(100*time.Millisecond))
	if err := t.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nCtrl-C (or SIGTERM) stops everything.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	if err := t.Stop(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "stopped; logs in", t.Dir())
	return nil
}

// runEmulatorFunction is the hidden `tollgate emulators function`: what
// functions/cmd/tollgate-functions does (this binary registers the same
// functions through functions/cloudrun), serving the function named by
// FUNCTION_TARGET on 127.0.0.1:$PORT until SIGINT or SIGTERM. The launcher
// starts one per function instance.
func runEmulatorFunction(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("emulators function: no arguments; set FUNCTION_TARGET and PORT")
	}
	if os.Getenv("FUNCTION_TARGET") == "" {
		return errors.New("emulators function: FUNCTION_TARGET is not set")
	}
	port := cmp.Or(os.Getenv("PORT"), "8080")
	failed := make(chan error, 1)
	go func() { failed <- funcframework.StartHostPort("127.0.0.1", port) }()
	select {
	case err := <-failed:
		return fmt.Errorf("emulators function %s: %w", os.Getenv("FUNCTION_TARGET"), err)
	case <-ctx.Done():
		// Requests in flight are cut off, as when Cloud Run stops an
		// instance; Pub/Sub delivers their messages again.
		return nil
	}
}
