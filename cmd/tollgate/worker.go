package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/worker"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// runWorker is `tollgate worker`: a worker on another machine, joined to a
// Tollgate server over the HTTP worker API. The enroll secret is read from
// an environment variable, never a flag, so it does not show in ps.
func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "", "base URL of the Tollgate server (required)")
	secretEnv := fs.String("enroll-secret-env", "", "environment variable holding the enroll secret (required)")
	channel := fs.Int("channel", 0, "protocol channel; must match the server's")
	id := fs.String("id", "", "worker id (default: hostname-RANDOM)")
	labels := fs.String("labels", "", "worker labels, k=v,k=v")
	workDir := fs.String("work-dir", filepath.Join(os.TempDir(), "tollgate-worker"), "root of the per-job work directories")
	grace := fs.Duration("grace", 10*time.Second, "time between SIGTERM and SIGKILL when a job is stopped")
	keep := fs.Bool("keep-work-dirs", false, "keep each job's work directory after it ends (debugging)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("worker: unexpected arguments %q", fs.Args())
	}
	if *server == "" || *secretEnv == "" {
		return errors.New("worker: --server URL and --enroll-secret-env VAR are required")
	}
	secret := os.Getenv(*secretEnv)
	if secret == "" {
		return fmt.Errorf("worker: environment variable %s (--enroll-secret-env) is empty", *secretEnv)
	}
	// Jobs never get the worker's environment, but nothing else started by
	// this process should find the secret either.
	_ = os.Unsetenv(*secretEnv)
	lbls, err := parseLabels(*labels)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if *id == "" {
		*id = defaultWorkerID(host)
	}
	log := newLogger(stderr, *verbose)

	client, err := workerapi.NewClient(workerapi.ClientOptions{URL: *server, EnrollSecret: secret,
		Channel: *channel, WorkerID: *id, Host: host})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w, err := worker.New(worker.Options{Backend: client, ID: *id, Host: host, Version: Version, Labels: lbls,
		WorkDir: *workDir, Log: log, KillGrace: *grace, KeepWorkDirs: *keep})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := enroll(ctx, client, log.Warn); err != nil {
		return fmt.Errorf("worker: enroll at %s: %w", *server, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	fmt.Fprintf(stdout, "tollgate worker %s joined %s (work dir %s)\n", *id, *server, *workDir)
	return w.Run(ctx)
}

// enroll retries transient failures, so a worker that boots before its
// server waits for it; a refused secret or channel ends it at once.
func enroll(ctx context.Context, c *workerapi.Client, warn func(string, ...any)) error {
	delay := time.Second
	for {
		err := c.Enroll(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !errs.Transient(err) {
			return err
		}
		warn("enroll failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
}

// parseLabels parses "k=v,k=v".
func parseLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("worker: --labels: want k=v, got %q", kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m, nil
}

var notIDChars = regexp.MustCompile(`[^A-Za-z0-9._:-]+`)

// defaultWorkerID is the host name (made a valid worker id) and a random
// suffix, so two workers on one machine, or on clones of one VM image, differ.
func defaultWorkerID(host string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.Trim(notIDChars.ReplaceAllString(host, "-"), "-.:_")
	if name == "" {
		name = "worker"
	}
	return fmt.Sprintf("%.100s-%s", name, hex.EncodeToString(b))
}
