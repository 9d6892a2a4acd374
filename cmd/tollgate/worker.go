package main

import (
	"cmp"
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
	"runtime"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"github.com/tollgate-ci/tollgate/core/worker"
	"github.com/tollgate-ci/tollgate/functions/cloudrun"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// runWorker is `tollgate worker`: a worker on another machine, joined to a
// Tollgate server over the HTTP worker API. The enroll secret is read from
// an environment variable, never a flag, so it does not show in ps.
func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backend := fs.String("backend", "http", "transport: http (the worker API of --server) or gcp (Firestore, Pub/Sub and Cloud Storage directly)")
	server := fs.String("server", "", "base URL of the Tollgate server (--backend http)")
	secretEnv := fs.String("enroll-secret-env", "", "environment variable holding the enroll secret (--backend http)")
	project := fs.String("project", os.Getenv(cloudrun.EnvProject), "Google Cloud project (--backend gcp; default $"+cloudrun.EnvProject+")")
	cfgLoc := fs.String("config", os.Getenv(cloudrun.EnvConfig), "config file or gs:// URL (--backend gcp; default $"+cloudrun.EnvConfig+")")
	bucket := fs.String("bucket", os.Getenv(cloudrun.EnvBlobBucket), "artifacts bucket (--backend gcp; default $"+cloudrun.EnvBlobBucket+")")
	prefix := fs.String("topic-prefix", cmp.Or(os.Getenv(cloudrun.EnvTopicPrefix), cloudrun.DefaultTopicPrefix), "Pub/Sub topic prefix (--backend gcp)")
	channel := fs.Int("channel", 0, "protocol channel; must match the server's")
	id := fs.String("id", "", "worker id (default: hostname-RANDOM)")
	labels := fs.String("labels", "", "worker labels, k=v,k=v, on top of os and arch (what job types' require is matched against)")
	workDir := fs.String("work-dir", filepath.Join(os.TempDir(), "tollgate-worker"), "root of the per-job work directories")
	grace := fs.Duration("grace", 10*time.Second, "time between SIGTERM and SIGKILL when a job is stopped")
	keep := fs.Bool("keep-work-dirs", false, "keep each job's work directory after it ends (debugging)")
	sbMode := fs.String("sandbox", "auto", "how jobs are isolated: bwrap (required in production), none, or auto (bwrap where it works, else none with a warning)")
	sbUID := fs.Int("sandbox-uid", -1, "host uid (and gid) jobs run as when the worker runs as root (default 65534, nobody)")
	sbRO := fs.String("sandbox-ro", "", "more host paths jobs see read-only, comma-separated (toolchains outside /usr and /opt)")
	gitUserEnv := fs.String("gerrit-user-env", "", "environment variable holding Gerrit's HTTP user, to fetch changes from {gerrit.url}/a/{project} (unset: anonymous fetch)")
	gitPassEnv := fs.String("gerrit-password-env", "", "environment variable holding Gerrit's HTTP password")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("worker: unexpected arguments %q", fs.Args())
	}
	lbls, err := parseLabels(*labels)
	if err != nil {
		return fmt.Errorf("worker: --labels: %w", err)
	}
	mode, err := sandbox.ParseMode(*sbMode)
	if err != nil {
		return err
	}
	var ro []string
	for _, p := range strings.Split(*sbRO, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("worker: --sandbox-ro: %q is not an absolute path", p)
			}
			ro = append(ro, p)
		}
	}
	sb, err := sandbox.New(sandbox.Options{Mode: mode, Root: *workDir, UID: *sbUID, GID: *sbUID, ReadOnly: ro})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	var gitUser, gitPass string
	if *gitUserEnv != "" {
		gitUser, gitPass = os.Getenv(*gitUserEnv), os.Getenv(*gitPassEnv)
		if gitUser == "" || gitPass == "" {
			return fmt.Errorf("worker: --gerrit-user-env %s and --gerrit-password-env %q must both name set variables", *gitUserEnv, *gitPassEnv)
		}
		_ = os.Unsetenv(*gitUserEnv)
		_ = os.Unsetenv(*gitPassEnv)
	}
	host, _ := os.Hostname()
	if *id == "" {
		*id = defaultWorkerID(host)
	}
	log := newLogger(stderr, *verbose)
	opts := worker.Options{ID: *id, Host: host, Version: Version, Labels: lbls,
		WorkDir: *workDir, Log: log, KillGrace: *grace, KeepWorkDirs: *keep,
		Sandbox: sb, GitUser: gitUser, GitPassword: gitPass}
	switch *backend {
	case "gcp":
		return runGCPWorker(ctx, cloudrun.Settings{Config: *cfgLoc, Project: *project, BlobBucket: *bucket, TopicPrefix: *prefix}, opts, stdout)
	case "http":
	default:
		return fmt.Errorf("worker: --backend must be http or gcp, not %q", *backend)
	}
	if *server == "" || *secretEnv == "" {
		return errors.New("worker: --server URL and --enroll-secret-env VAR are required with --backend http")
	}
	secret := os.Getenv(*secretEnv)
	if secret == "" {
		return fmt.Errorf("worker: environment variable %s (--enroll-secret-env) is empty", *secretEnv)
	}
	// Jobs never get the worker's environment, but nothing else started by
	// this process should find the secret either.
	_ = os.Unsetenv(*secretEnv)

	client, err := workerapi.NewClient(workerapi.ClientOptions{URL: *server, EnrollSecret: secret,
		Channel: *channel, WorkerID: *id, Host: host})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	opts.Backend, opts.Cache = client, client
	w, err := worker.New(opts)
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

// runGCPWorker runs a worker on the direct transport in Google Cloud mode:
// it reads the Firestore queue itself, as the fleet's VMs do.
func runGCPWorker(ctx context.Context, s cloudrun.Settings, opts worker.Options, stdout io.Writer) error {
	if s.Project == "" || s.Config == "" || s.BlobBucket == "" {
		return errors.New("worker: --backend gcp needs --project, --config and --bucket (or their TOLLGATE_* variables)")
	}
	rt, err := cloudrun.BuildFleet(ctx, s, cloudrun.Adapters{}, opts.Log)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer rt.Close()
	opts.Backend = rt.Fleet
	if rt.Cache != nil {
		opts.Cache = rt.Cache
	}
	w, err := worker.New(opts)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	fmt.Fprintf(stdout, "tollgate worker %s on project %s (work dir %s)\n", opts.ID, s.Project, opts.WorkDir)
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

// parseLabels parses "k=v,k=v" over the labels every worker has, os and
// arch (Go's names: linux, darwin; amd64, arm64), which s may override.
func parseLabels(s string) (map[string]string, error) {
	m := map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH}
	for kv := range strings.SplitSeq(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("labels: want k=v, got %q", kv)
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
