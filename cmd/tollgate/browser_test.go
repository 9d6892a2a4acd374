package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/worker"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// chromium finds Debian's chromium (apt-get install -y chromium). Without
// it the browser test skips, unless CI=true, where it must run.
func chromium(t *testing.T) string {
	for _, name := range []string{os.Getenv("TOLLGATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium on PATH: install it (apt-get install -y chromium) or set TOLLGATE_CHROMIUM to run the browser test"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// richTestJob makes the demo's test job print what the log viewer is for:
// colours, many lines, a progress line rewritten with carriage returns,
// and a failure, over a few seconds, so the viewer follows it live.
const richTestJob = `printf '\033[1mrunning 3 test suites\033[0m for change %s\n' "$TOLLGATE_CHANGE"
sleep 1
i=1; while [ $i -le 40 ]; do printf '[%2d/40] \033[32mPASS\033[0m  greeting_test.case_%02d (%d ms)\n' $i $i $((i*7)); i=$((i+1)); done
printf 'downloading fixtures  10%%\rdownloading fixtures  60%%\rdownloading fixtures 100%%\n'
sleep 1
printf '\033[33mwarning:\033[0m slow test: \033[38;5;208mlocale_test.load_all\033[0m took 2.4 s\n'
if [ "$TOLLGATE_CHANGE" = 4 ]; then
  printf '\033[1;31mFAIL\033[0m: translation_test: missing plural forms for "eo"\n'
  printf '  expected: \033[32m"%s"\033[0m\n  got:      \033[31m"%s"\033[0m\n' 'unu dosiero / %d dosieroj' 'unu dosiero'
  printf '\033[41;97m 1 of 3 suites failed \033[0m\n'; exit 1
fi
printf '\033[42;30m all 3 suites passed \033[0m\n'`

// TestBrowser drives the UI of `tollgate up --demo` in headless Chromium
// the way a newcomer would: the overview, a patchset, a job's live log
// (followed while a worker runs it), cancelling a queued job as the local
// admin, and every other page. It saves a PNG of each page in
// $TOLLGATE_SCREENSHOTS (default: the test's temp dir).
func TestBrowser(t *testing.T) {
	chrome := chromium(t)
	shots := os.Getenv("TOLLGATE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The demo with no built-in worker: every job stays QUEUED until the
	// test starts one, so there is a job to cancel and one to follow live.
	listen := freeAddr(t)
	dm, err := startDemo(ctx, quiet, listen)
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	jc := dm.Config.Jobs["test"]
	jc.Command = []string{"sh", "-c", richTestJob}
	dm.Config.Jobs["test"] = jc
	data := t.TempDir()
	rt, err := startEmbedded(ctx, embeddedOptions{Config: dm.Config, DataDir: data, Listen: listen, Log: quiet, TickEvery: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	go dm.Drive(ctx, rt)
	base := "http://" + rt.Addr

	// Wait until the demo's patchsets are queued: 1-2 (alice's second) and 4-1 (dave's).
	browserWait(t, ctx, "the demo's patchsets", func() bool {
		var page api.Page[api.PatchsetSummary]
		if err := getJSON(base+"/api/v1/cls", &page); err != nil {
			return false
		}
		ids := map[string]bool{}
		for _, p := range page.Items {
			ids[p.ID] = true
		}
		return ids["1-2"] && ids["4-1"] && ids["2-1"]
	})

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// click clicks and waits for the page it leads to.
	click := func(sel string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do("start the browser")
	// Confirmation dialogs (cancel, retry, delete) are accepted, as a
	// person would click OK; exceptions in the page's script fail the test.
	dialogs := chromedp.Events(bctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(bctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	var mu sync.Mutex
	var jsErrors []string
	exceptions := chromedp.Events(bctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			mu.Lock()
			jsErrors = append(jsErrors, fmt.Sprintf("%s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
			mu.Unlock()
		}
	}()

	// The overview, then a patchset from its list.
	do("overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`a[href="/cls/4-1"]`)))
	shot("overview")
	click(`td.subject a[href="/cls/4-1"]`)
	if h1 := text("h1"); !strings.Contains(h1, "Esperanto") || !strings.Contains(h1, "4-1") {
		t.Fatalf("patchset page heading %q", h1)
	}
	shot("patchset")

	// Cancel dave's queued build as the local admin, and see it CANCELLED.
	click(`a[href$="--cls-4-1--build"]`)
	if st := text("#job-state"); !strings.Contains(st, "queued") {
		t.Fatalf("dave's build is %q, want queued", st)
	}
	click("#cancel")
	if st := text("#job-state"); !strings.Contains(st, "cancelled") || !strings.Contains(text("p.notice"), "Job cancelled") {
		t.Fatalf("after the cancel the job is %q", st)
	}
	j, err := rt.Store.GetJob(ctx, jobOf(t, rt, "cls/4-1", "build"))
	if err != nil || j.State != model.Cancelled || j.Reason != "cancelled by local@localhost" {
		t.Fatalf("the store says %v, %v", j, err)
	}
	shot("job-cancelled")

	// Open dave's test job while it waits, then start a worker: the page
	// follows the log as it is written and shows the job fail at the end.
	testID := jobOf(t, rt, "cls/4-1", "test")
	do("open the test job", chromedp.Navigate(base+"/jobs/"+testID), chromedp.WaitVisible(chromedp.CSS(`#logview`)))
	w, err := worker.New(worker.Options{Backend: rt.Fleet, ID: "browser-worker", Version: Version, Labels: map[string]string{"os": "linux"},
		WorkDir: filepath.Join(data, "work"), Log: quiet, LogFlushEvery: 200 * time.Millisecond, PollEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); _ = w.Run(wctx) }()
	defer func() { stopWorker(); <-workerDone }()
	logText := func() string {
		s, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('logview').textContent`))
		return s
	}
	var sawRunning bool
	browserWait(t, ctx, "the log to follow the job to its end", func() bool {
		log := logText()
		if strings.Contains(log, "running 3 test suites") && !strings.Contains(log, "end of log") {
			sawRunning = true // lines arrived while the job ran
		}
		st, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#job-state")))
		return strings.Contains(log, "end of log") && strings.Contains(st, "failed")
	})
	if !sawRunning {
		t.Error("the page never showed the log of the running job: it should follow it live")
	}
	log := logText()
	spans, _ := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#logview .f1, #logview .f2, #logview .g1').length`))
	lines, _ := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#logview .l[id^="L"]').length`))
	for _, want := range []string{"FAIL: translation_test", "downloading fixtures 100%", "[40/40] PASS"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if strings.Contains(log, "\x1b") || strings.Contains(log, "downloading fixtures  10%") || spans == 0 || lines < 45 {
		t.Errorf("ANSI not rendered: %d coloured spans, %d lines, escape codes left: %v", spans, lines, strings.Contains(log, "\x1b"))
	}
	if !strings.Contains(text("#retry-form"), "Retry") {
		t.Error("no retry button once the job failed")
	}
	do("scroll up", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	shot("job-log")
	// A line link: #L42 highlights line 42.
	do("line link", chromedp.Navigate(base+"/jobs/"+testID+"#L42"), chromedp.WaitVisible(chromedp.CSS(`#L42.hl`)))

	// A 10 MB log loads whole without freezing the page: no task of the
	// page's main thread takes long (Chrome reports tasks over 50 ms).
	bigID := jobOf(t, rt, "cls/1-1", "build") // cancelled by patchset 2: ended
	const bigLines = 131072
	var chunk strings.Builder
	off := int64(0)
	for i := 1; i <= bigLines; i++ {
		fmt.Fprintf(&chunk, "%06d \x1b[32mok\x1b[0m some output of a long build, padded to eighty bytes.........\n", i)
		if chunk.Len() >= 1<<20 || i == bigLines {
			if err := rt.Store.AppendLog(ctx, bigID, off, []byte(chunk.String()), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			off += int64(chunk.Len())
			chunk.Reset()
		}
	}
	if _, err := chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__longest = 0; new PerformanceObserver(function (l) { l.getEntries().forEach(function (e) {
			window.__longest = Math.max(window.__longest, e.duration); }); }).observe({type: 'longtask', buffered: true});`,
	}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	do("open the big log", chromedp.Navigate(base+"/jobs/"+bigID), chromedp.WaitVisible(chromedp.CSS(`#logview .end`)))
	loaded := time.Since(started)
	bigLinesShown, _ := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#logview .l[id^="L"]').length`))
	longest, _ := chromedp.Run(bctx, chromedp.Evaluate[float64](`window.__longest`))
	t.Logf("a %.1f MB log of %d lines loaded in %v; the longest main-thread task took %.0f ms", float64(off)/(1<<20), bigLines, loaded.Round(time.Millisecond), longest)
	if bigLinesShown != bigLines {
		t.Errorf("the big log shows %d lines, want %d", bigLinesShown, bigLines)
	}
	if longest > 500 {
		t.Errorf("a task of %.0f ms froze the page while the big log loaded", longest)
	}

	// Every other page renders, and says what it is.
	for _, p := range []struct{ name, path, want string }{
		{"patchsets", "/cls", "Patchsets"},
		{"jobs", "/jobs?state=FAILED&state=CANCELLED&order=ended", "Jobs"},
		{"workers", "/workers", "Workers"},
		{"worker", "/workers/browser-worker", "browser-worker"},
		{"postsubmit", "/branches", "Postsubmit runs"},
		{"stats", "/stats", "Stats"},
	} {
		do(p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS("h1")))
		if got := text("h1"); !strings.Contains(got, p.want) {
			t.Errorf("%s: heading %q, want %q", p.path, got, p.want)
		}
		shot(p.name)
	}
	// The overview again, now that a worker runs the queue.
	do("overview again", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`a[href="/cls/4-1"]`)))
	shot("overview-busy")
	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("exceptions in the page's script: %v", jsErrors)
	}
	t.Logf("screenshots in %s", shots)
}

// jobOf returns the id of src's job of typ.
func jobOf(t *testing.T, rt *embedded, src, typ string) string {
	t.Helper()
	jobs, _, err := rt.Store.ListJobs(context.Background(), store.JobQuery{Src: src})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Type == typ {
			return j.ID
		}
	}
	t.Fatalf("no %s job in %s", typ, src)
	return ""
}

func browserWait(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
