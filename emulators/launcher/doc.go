// Package launcher runs Tollgate's Google Cloud topology on one machine,
// against the emulators: what `tollgate emulators up` does, and what the
// end-to-end suite starts from Go tests. App Engine's multi-process dev
// server is the model: a process per function instance on its own port,
// shared emulated APIs, a balancer per function answering 503 when every
// instance is busy, and children stopped with SIGTERM, then SIGKILL.
//
// A Topology is
//
//   - the Firestore and Pub/Sub emulators of the installed Google Cloud CLI
//     (emulators/gcloud: each its own process group, java child included);
//   - in this process: fake-gcs-server (its library, with the artifacts
//     bucket, served behind emulators/gcsfake so the object preconditions
//     Cloud Storage enforces hold here too), the fake Gerrit (emulators/gerrit, seeded with DemoSeed
//     unless Options.NoSeed) and the fake Cloud Monitoring
//     (emulators/monitoring);
//   - one child process per function (every controller action,
//     gerrit_webhook, api and worker_api), `tollgate emulators function`
//     with FUNCTION_TARGET and PORT set, exactly as Cloud Run runs the
//     image; with Options.Instances N > 1, N processes per function behind
//     a reverse proxy on the function's port that forwards each request to
//     the next free instance (one with fewer than Options.Concurrency
//     requests in flight) and answers 503 when all are busy, as Cloud Run
//     does at its maximum instance count, so Pub/Sub retries;
//   - with Options.Chaos, every function behind a balancer (one instance
//     or more), the action functions' balancers delivering pushes
//     unreliably: each twice at once (Chaos.Duplicate), and a fraction
//     answered 500 (Chaos.FailRate), before the function ran or after,
//     so that tests can check every handler is idempotent;
//   - a topic per action, the dead-letter topic, and a push subscription
//     per action (retry policy, dead-letter policy of the config's
//     tasks.max_attempts deliveries clamped to Pub/Sub's 5..100) pointing
//     at the function's URL with the path /projects/P/topics/T, which
//     functions-framework-go turns into a CloudEvent;
//   - a scheduler (in this process) that plays Cloud Scheduler: it
//     publishes a "tick" message (attributes action=tick, schema=1, data
//     {}) at start and every Options.Tick, and the periodic actions on
//     their own periods: queue_postsubmit_jobs per branch ({"branch": B})
//     every postsubmit.interval, reap_dead_workers every
//     timeouts.worker_death, delete_stale_jobs and delete_expired_logs
//     every 15 minutes. The tick fans these out too; the handlers are
//     idempotent, so the duplicates are harmless;
//   - Options.Workers child processes `tollgate worker --backend gcp`,
//     reading the Firestore queue directly as the fleet's VMs do.
//
// Each child's output goes to its own log file under Dir/logs, appended
// across restarts. A child that exits is reported (Options.Log) and
// started again on the same port after an exponential backoff (0.5 s
// doubling to 30 s, back to 0.5 s once a process has run for a minute).
//
// Children run `tollgate`: Options.Tollgate, by default the running
// executable, which is right when the caller is the tollgate command.
// Tests build one with BuildTollgate.
//
// Usage from a test:
//
//	bin, err := launcher.BuildTollgate(ctx, t.TempDir())
//	topo, err := launcher.New(launcher.Options{Tollgate: bin, Dir: t.TempDir(), Workers: 1})
//	if err := topo.Start(ctx); err != nil { ... }
//	defer topo.Stop()
//	topo.Gerrit().CreateChange(...)              // the fake Gerrit's library
//	http.Get(topo.APIURL() + "/api/v1/cls")
//
// Stop sends SIGTERM to every child (each in its own process group, and
// its descendants), SIGKILL to what is left after Options.Grace, closes
// the balancers and in-process fakes and stops the emulators; once it
// returns nothing of the topology listens or runs.
//
// Ports count up from Options.MinPort in a fixed order (firestore, pubsub,
// gcs, monitoring, gerrit, then each function's port in Functions() order,
// then the instance ports when Instances > 1 or with Chaos), so a function's URL does
// not depend on the instance count; a port in use is an error naming it.
// MinPort 0 picks free random ports.
//
// The topology is for one machine and trusted users: every port listens
// on 127.0.0.1 only, and the secrets it makes up (webhook token, enroll
// secret, Gerrit password) are printed for convenience.
package launcher
