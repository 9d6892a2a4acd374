package cloudrun

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tollgate-ci/tollgate/adapters/firestore"
	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/worker"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcloud/gcloudtest"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	fakemonitoring "github.com/tollgate-ci/tollgate/emulators/monitoring"
	"github.com/tollgate-ci/tollgate/functions/api"
	"github.com/tollgate-ci/tollgate/functions/internal/fftest"
)

func TestMain(m *testing.M) { gcloudtest.Main(m, gcloud.PubSub, gcloud.Firestore) }

const gcpProject = "tollgate-test"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSettingsFromEnv(t *testing.T) {
	s, err := SettingsFromEnv(env(map[string]string{EnvConfig: "gs://b/c.yaml", EnvProject: "p", EnvBlobBucket: "logs",
		EnvChannel: "3", EnvMaxAge: "2h", EnvWebhookToken: "tok", EnvEnrollSecret: "sec"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Config: "gs://b/c.yaml", Project: "p", TopicPrefix: DefaultTopicPrefix, BlobBucket: "logs",
		WebhookToken: "tok", EnrollSecret: "sec", Channel: 3, MaxAge: 2 * time.Hour}
	if s != want {
		t.Errorf("settings = %+v, want %+v", s, want)
	}
	_, err = SettingsFromEnv(env(map[string]string{EnvProject: "p"}))
	if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "TOLLGATE_BLOB_BUCKET, TOLLGATE_CONFIG") {
		t.Errorf("missing variables: %v", err)
	}
	base := map[string]string{EnvConfig: "c", EnvProject: "p", EnvBlobBucket: "b"}
	for k, v := range map[string]string{EnvChannel: "x", EnvMaxAge: "soon"} {
		m := map[string]string{k: v}
		for bk, bv := range base {
			m[bk] = bv
		}
		if _, err := SettingsFromEnv(env(m)); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s=%s: %v, want InvalidArgument", k, v, err)
		}
	}
	if s, err := SettingsFromEnv(env(base)); err != nil || s.MaxAge != time.Hour || s.TopicPrefix != "tollgate" {
		t.Errorf("defaults: %+v, %v", s, err)
	}
}

func TestParseGSURL(t *testing.T) {
	if b, o, err := ParseGSURL("gs://cfg-bucket/tollgate/config.yaml"); err != nil || b != "cfg-bucket" || o != "tollgate/config.yaml" {
		t.Errorf("ParseGSURL = %q %q %v", b, o, err)
	}
	for _, u := range []string{"gs://", "gs://bucket", "gs://bucket/", "gs:///obj", "s3://b/o"} {
		if _, _, err := ParseGSURL(u); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("ParseGSURL(%q) = %v, want InvalidArgument", u, err)
		}
	}
	if _, err := ReadConfig(context.Background(), filepath.Join(t.TempDir(), "missing.yaml")); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("ReadConfig(missing file) = %v", err)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := Logger(&buf, LevelFromEnv("debug"))
	log.Debug("d")
	log.Info("i", "k", "v")
	log.Warn("w")
	log.Error("e")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if _, ok := rec["level"]; ok {
			t.Errorf("line %s still has level", line)
		}
		got = append(got, fmt.Sprint(rec["severity"], ":", rec["message"]))
	}
	if s := strings.Join(got, " "); s != "DEBUG:d INFO:i WARNING:w ERROR:e" {
		t.Errorf("severities %s", s)
	}
	if LevelFromEnv("") != slog.LevelInfo || LevelFromEnv("WARNING") != slog.LevelWarn {
		t.Error("LevelFromEnv")
	}
}

// TestBuildRetried: a failed build answers 503 (HTTP) or an error (events,
// so Pub/Sub redelivers) and is tried again on the next call.
func TestBuildRetried(t *testing.T) {
	var builds atomic.Int32
	f := New(func(ctx context.Context) (*Runtime, error) {
		builds.Add(1)
		return Build(ctx, Settings{Config: filepath.Join(t.TempDir(), "none.yaml")}, Adapters{}, nil)
	}, slog.New(slog.DiscardHandler))
	for range 2 {
		w := httptest.NewRecorder()
		f.HTTP(FnAPI)(w, httptest.NewRequest("GET", "/api/v1/cls", nil))
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("API without a runtime: %d %s, want 503", w.Code, w.Body)
		}
	}
	if err := f.Event(controller.Tick)(context.Background(), cloudEventFor(t, "tick")); !errs.Is(err, errs.Unavailable) {
		t.Errorf("event without a runtime: %v, want Unavailable", err)
	}
	if n := builds.Load(); n != 3 {
		t.Errorf("%d builds, want one per call", n)
	}
}

const configYAML = `
gerrit:
  url: %URL%
  project: tollgate/demo
  branches: [main]
  user_env: TG_FN_GERRIT_USER
  password_env: TG_FN_GERRIT_PASSWORD
trust:
  trusted_emails: '.*@trusted\.example'
jobs:
  build: {command: [sh, -c, "echo built $TOLLGATE_JOB_TYPE"]}
  test: {command: [sh, -c, "echo tested; exit 3"]}
tasks:
  max_attempts: 5
ui:
  users: ["*"]
`

func writeConfig(t *testing.T, gerritURL string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(configYAML, "%URL%", gerritURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cloudEventFor is the CloudEvent of a task of action.
func cloudEventFor(t *testing.T, action string) event.Event {
	t.Helper()
	data := fmt.Sprintf(`{"message":{"data":"e30=","attributes":{"action":%q,"schema":"1","task_id":"x","created":%q}}}`,
		action, time.Now().UTC().Format(time.RFC3339))
	e := event.New()
	if err := e.SetData("application/json", []byte(data)); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestGerritToStoreThroughFunctions runs the Cloud Run topology in one
// process on the emulators: the Gerrit webhook function defers check_new_cl
// to Pub/Sub, whose push goes through functions-framework-go to the
// check_new_cl function, whose controller reads the change from the fake
// Gerrit and queues its jobs in Firestore; the API function lists the
// patchset; and update_queue_metrics, deferred the same way, counts the
// jobs in Firestore and writes the autoscaler's gauge to the fake Cloud
// Monitoring before its function returns. Blobs are a directory: nothing
// here touches them.
func TestGerritToStoreThroughFunctions(t *testing.T) {
	psHost := gcloudtest.Host(t, gcloud.PubSub)
	fsHost := gcloudtest.Host(t, gcloud.Firestore)
	ctx := context.Background()

	g := fakegerrit.New(fakegerrit.Options{User: "tollgate-bot", Password: "pw"})
	gsrv := httptest.NewServer(g.Handler())
	defer gsrv.Close()
	if _, err := g.CreateBranch("tollgate/demo", "main", fakegerrit.CommitSpec{Subject: "Initial"}); err != nil {
		t.Fatal(err)
	}
	ps, err := g.CreateChange(fakegerrit.ChangeSpec{Project: "tollgate/demo", Branch: "main", Subject: "Fix", OwnerEmail: "alice@trusted.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TG_FN_GERRIT_USER", "tollgate-bot")
	t.Setenv("TG_FN_GERRIT_PASSWORD", "pw")

	mon := fakemonitoring.New(fakemonitoring.Options{})
	monAddr, err := mon.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()

	var b [6]byte
	rand.Read(b[:])
	unique := "tg" + hex.EncodeToString(b[:])
	settings := Settings{Config: writeConfig(t, gsrv.URL), Project: gcpProject, TopicPrefix: unique,
		WebhookToken: "hook-secret", MaxAge: time.Hour}
	adapters := Adapters{
		OpenStore: func(ctx context.Context, project string) (store.Store, error) {
			return firestore.OpenWith(ctx, firestore.Options{Project: project, Prefix: unique + "_", EmulatorHost: fsHost})
		},
		OpenTasks: func(ctx context.Context, project, prefix string) (*pubsub.Tasks, error) {
			return pubsub.New(ctx, project, prefix, pubsub.EmulatorOptions(psHost)...)
		},
		OpenBlobs: func(ctx context.Context, _ string) (blob.Bucket, error) { return fsblob.Open(t.TempDir()) },
		OpenMetrics: func(ctx context.Context, project string) (metrics.Metrics, error) {
			return openMonitoring(ctx, project, "", "", MonitoringEmulatorOptions(monAddr)...)
		},
	}
	quiet := slog.New(slog.DiscardHandler)
	f := New(func(ctx context.Context) (*Runtime, error) { return Build(ctx, settings, adapters, quiet) }, quiet)
	rt, err := f.Runtime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, d := range metrics.Catalogue {
		if mon.Descriptor("custom.googleapis.com/tollgate/"+d.Name) == nil {
			t.Errorf("no descriptor for %s after the runtime started", d.Name)
		}
	}

	// What Terraform and Eventarc do in a deployment: a topic per action
	// and a subscription pushing to its function.
	if err := rt.Tasks.EnsureTopics(ctx, controller.Actions); err != nil {
		t.Fatal(err)
	}
	for _, a := range controller.Actions {
		endpoint := fftest.Route(t, rt.Tasks.TopicName(a), f.Event(a))
		if err := rt.Tasks.EnsurePushSubscription(ctx, a, endpoint, 5, rt.Tasks.DeadLetterTopicID(), 0, 0); err != nil {
			t.Fatal(err)
		}
	}

	body := fmt.Sprintf(`{"type":"patchset-created","change":{"project":"tollgate/demo","branch":"main","number":%d},"patchSet":{"number":1}}`, ps.Change)
	w := httptest.NewRecorder()
	f.HTTP(FnGerritWebhook)(w, httptest.NewRequest("POST", "/?token=hook-secret", strings.NewReader(body)))
	if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), "deferred") {
		t.Fatalf("webhook: %d %s", w.Code, w.Body)
	}

	id := model.PatchsetID(ps.Change, 1)
	var jobs []*model.Job
	waitFor(t, 20*time.Second, "the patchset queued by check_new_cl", func() bool {
		_, jobs, err = rt.Store.GetPatchsetWithJobs(ctx, id)
		return err == nil
	})
	if len(jobs) != 2 {
		t.Errorf("patchset %s has %d jobs, want 2 (build, test)", id, len(jobs))
	}
	for _, j := range jobs {
		if j.State != model.Queued {
			t.Errorf("job %s is %v, want QUEUED", j.ID, j.State)
		}
	}

	w = httptest.NewRecorder()
	f.HTTP(FnAPI)(w, httptest.NewRequest("GET", "/api/v1/cls", nil))
	var page api.Page[model.Patchset]
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || w.Code != 200 || len(page.Items) != 1 || page.Items[0].ID != id {
		t.Errorf("API /api/v1/cls: %d %s", w.Code, w.Body)
	}

	if err := rt.Tasks.Defer(ctx, controller.UpdateQueueMetrics, nil); err != nil {
		t.Fatal(err)
	}
	queueLen := "custom.googleapis.com/tollgate/" + metrics.QueueLen
	waitFor(t, 20*time.Second, "the queue length gauge in Cloud Monitoring", func() bool { return len(mon.Series(queueLen)) > 0 })
	if pt := mon.Series(queueLen)[0]; pt.Double() != 2 || pt.ResourceType != "global" {
		t.Errorf("%s = %v on %s, want 2 on the global resource", metrics.QueueLen, pt.Double(), pt.ResourceType)
	}
	// The Gerrit read of check_new_cl was counted on this instance's own
	// resource: cumulative series have one writer each.
	if pts := mon.Series("custom.googleapis.com/tollgate/" + metrics.GerritCalls); len(pts) == 0 || pts[0].ResourceType != "generic_task" {
		t.Errorf("%s points %+v, want some on generic_task", metrics.GerritCalls, pts)
	}

	// A worker in Google Cloud mode (tollgate worker --backend gcp) runs the
	// jobs straight from Firestore; each Finish defers check_pending_cl to
	// Pub/Sub, whose function ends the patchset.
	frt, err := BuildFleet(ctx, settings, adapters, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer frt.Close()
	wk, err := worker.New(worker.Options{Backend: frt.Fleet, ID: "vm-1", WorkDir: t.TempDir(), Log: quiet,
		HeartbeatEvery: 200 * time.Millisecond, PollEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- wk.Run(wctx) }()
	var ended *model.Patchset
	waitFor(t, 30*time.Second, "the patchset ended by check_pending_cl after the worker ran its jobs", func() bool {
		ended, jobs, err = rt.Store.GetPatchsetWithJobs(ctx, id)
		return err == nil && !ended.Pending()
	})
	stop()
	if err := <-wdone; err != nil {
		t.Errorf("worker: %v", err)
	}
	for _, j := range jobs {
		want := map[string]model.State{"build": model.Completed, "test": model.Failed}[j.Type]
		if j.State != want || j.Worker != "vm-1" {
			t.Errorf("job %s: %s on %q, want %s on vm-1", j.ID, j.State, j.Worker, want)
		}
		if j.Type == "build" {
			// The worker's checkout lines, then the job's output.
			if b, _, _ := rt.Store.ReadLog(ctx, j.ID, 0, 4000); !strings.Contains(string(b), "[tollgate] checked out ") || !strings.HasSuffix(string(b), "\nbuilt build\n") {
				t.Errorf("build log = %q", b)
			}
		}
	}
	if dead, err := rt.Tasks.ListDead(ctx, 10); err != nil || len(dead) != 0 {
		t.Errorf("dead letters %+v, %v; want none", dead, err)
	}

	// A function deployed without Gerrit's credentials (all but the
	// Gerrit actions) starts, runs its actions, and refuses the others.
	t.Setenv("TG_FN_GERRIT_USER", "")
	t.Setenv("TG_FN_GERRIT_PASSWORD", "")
	bare, err := Build(ctx, settings, adapters, quiet)
	if err != nil {
		t.Fatalf("Build without Gerrit credentials: %v", err)
	}
	defer bare.Close()
	for _, action := range []string{controller.CheckPendingCLs, controller.CheckNewCLs} {
		err := bare.Controller.Handle(ctx, tasks.Task{ID: "bare-" + action, Action: action, Attempt: 1, Created: time.Now()})
		if want := slices.Contains(controller.GerritActions, action); errs.Is(err, errs.FailedPrecondition) != want {
			t.Errorf("%s without Gerrit credentials: %v (want a refusal: %v)", action, err, want)
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
