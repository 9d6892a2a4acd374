// Package e2e is Tollgate's end-to-end suite: one set of scenarios, run
// against two topologies, each a real deployment of Tollgate on this
// machine with a fake Gerrit the test owns (emulators/gerrit, in the test's
// process):
//
//   - Embedded: `tollgate up --config F --data D --listen 127.0.0.1:0
//     --workers 0` as a child process (SQLite, the local task queue), with
//     `tollgate worker --server URL` processes joining it over the worker
//     API.
//   - Emulated: the Google Cloud topology of emulators/launcher (the
//     Firestore and Pub/Sub emulators, one process per function), with
//     `tollgate worker --backend gcp` processes reading the Firestore queue.
//
// Both run the same config (Config): three job types (build, test and lint,
// which never votes) whose command is a small shell script that looks up
// what to do for its change in a control directory the test writes
// (Behaviour): pass, fail, or hang with its pid in a file. Every change a
// scenario creates gets a behaviour before its jobs look for one, so the
// scenarios share one topology and stay independent of each other.
//
// The workers are processes the Topology owns, so a scenario can SIGKILL
// one mid-job (KillWorker). Periodic actions (queue_postsubmit_jobs,
// delete_expired_logs, ...) are triggered on demand (Trigger): a message
// published to the action's topic on the emulated topology, a task
// deferred into the running process's SQLite queue (which several
// processes may share) on the embedded one. Ticks come every second: from
// `tollgate up`'s scheduler (gerrit.poll_interval 1s), and from the test on
// the emulated topology (HoldTicks can hold them back, to show that a
// webhook alone queues jobs; on the embedded topology that scenario starts
// an instance of its own that polls once an hour).
//
// Unreliable delivery (the chaos scenario) comes from the launcher's
// Options.Chaos on the emulated topology (each push delivered twice, 10%
// failing), and from TOLLGATE_CHAOS on `tollgate up`; each runs on an
// instance of its own, against which the scenario compares a clean run.
//
// The scenarios live in scenarios_test.go and chaos_test.go; `go test
// ./e2e/...` runs them all on both topologies (about two and a half
// minutes) and prints, per topology, each scenario's duration and the
// upload-to-vote latency over a batch of changes: on stdout (which go test
// shows with -v, or when run in this directory without package
// arguments), and into the file $E2E_REPORT if set.
// E2E_KEEP=DIR keeps each topology's directory (config, logs, data) under
// DIR. Without the gcloud CLI the emulated topology is skipped, unless
// CI=true: then it fails.
package e2e
