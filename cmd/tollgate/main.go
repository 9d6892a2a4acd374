// Command tollgate is Tollgate's one binary.
//
//	tollgate up [--config FILE] [--data DIR] [--listen ADDR] [--demo]
//	    the whole controller in one process on embedded backends
//	tollgate worker --server URL --enroll-secret-env VAR [--channel N]
//	    a worker on another machine, over the worker API
//	tollgate emulators up [--config FILE] [--dir DIR] [--min-port N] [--instances N] [--workers K]
//	    the Google Cloud topology against the emulators, one process per function
//	tollgate emulators gerrit [--listen ADDR]
//	    the fake Gerrit alone, for tests and experiments
//	tollgate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate-ci/tollgate/core/cache"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `usage: tollgate <command> [flags]

commands:
  up                 run the controller, API and scheduler in one process (embedded backends)
  worker             run a worker that joins a Tollgate server over the worker API
  cache              inside a job: get, put, find-missing and refs in the artifact cache ($TOLLGATE_CACHE_URL)
  emulators up       run the Google Cloud topology locally: the emulators, one process per function, workers
  emulators gerrit   run the fake Gerrit server alone
  emulators monitoring  run the fake Cloud Monitoring MetricService alone
  version            print the version

Run 'tollgate <command> -h' for a command's flags.
`

func main() {
	sandbox.Init() // a sandboxed job's launcher and init are this program too
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tollgate:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "up":
		return runUp(ctx, args[1:], stdout, stderr)
	case "worker":
		return runWorker(ctx, args[1:], stdout, stderr)
	case "cache":
		// Inside a job: the artifact cache at $TOLLGATE_CACHE_URL.
		if code := cache.RunCommand(ctx, args[1:], os.Getenv, os.Stdin, stdout, stderr); code != 0 {
			return exitCode(code)
		}
		return nil
	case "emulators":
		if len(args) > 1 && args[1] == "gerrit" {
			return runFakeGerrit(ctx, args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "monitoring" {
			return runFakeMonitoring(ctx, args[2:], stdout, stderr)
		}
		if len(args) > 1 && (args[1] == "up" || args[1] == "function") { // function: hidden, a child of up
			return runEmulatorsLauncher(ctx, args[1], args[2:], stdout, stderr)
		}
		return fmt.Errorf("usage: tollgate emulators up|gerrit|monitoring [flags]")
	case "version":
		fmt.Fprintln(stdout, "tollgate", Version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// exitCode is an error that only sets the process's exit status (the
// command already said why).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func newLogger(w io.Writer, verbose bool) *slog.Logger {
	lvl := slog.LevelInfo
	if verbose {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}
