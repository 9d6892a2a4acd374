package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

var (
	binDir    string
	buildOnce sync.Once
	bin       string
	buildErr  error
)

// TestMain runs the tests, then prints the report (durations and
// latencies per topology) to stdout and, if E2E_REPORT names a file, there.
func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "tollgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	if text := report.String(); text != "" {
		fmt.Print(text)
		if p := os.Getenv("E2E_REPORT"); p != "" {
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: report:", err)
			}
		}
	}
	os.Exit(code)
}

// tollgate builds the tollgate command once per test binary.
func tollgate(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		bin, buildErr = launcher.BuildTollgate(ctx, binDir)
		report.note("built tollgate in %s", time.Since(start).Round(100*time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// requireGcloud skips the test without the gcloud CLI, unless CI=true:
// then its absence fails the test.
func requireGcloud(t *testing.T) {
	t.Helper()
	if gcloud.Available() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + gcloud.ErrNoCLI.Error())
	}
	t.Skip("skipping the emulated topology: " + gcloud.ErrNoCLI.Error())
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("E2E_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// The report.

type result struct {
	scenario string
	status   string // PASS, FAIL, SKIP
	dur      time.Duration
	note     string
}

type latency struct {
	n, inflight      int
	median, p90, max time.Duration
	total            time.Duration
}

type reporter struct {
	mu      sync.Mutex
	results map[string][]result // by topology
	lat     map[string]latency
	notes   []string
}

var report = &reporter{results: map[string][]result{}, lat: map[string]latency{}}

func (r *reporter) add(topo string, res result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[topo] = append(r.results[topo], res)
}

func (r *reporter) latency(topo string, l latency) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lat[topo] = l
}

func (r *reporter) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *reporter) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.results) == 0 && len(r.lat) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n== e2e report\n")
	for _, n := range r.notes {
		b.WriteString(n + "\n")
	}
	var topos []string
	for k := range r.results {
		topos = append(topos, k)
	}
	for k := range r.lat {
		if !slices.Contains(topos, k) {
			topos = append(topos, k)
		}
	}
	sort.Strings(topos)
	for _, topo := range topos {
		fmt.Fprintf(&b, "\n%s:\n", topo)
		res := slices.Clone(r.results[topo])
		sort.SliceStable(res, func(i, k int) bool { return scenarioOrder(res[i].scenario) < scenarioOrder(res[k].scenario) })
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SCENARIO\tRESULT\tDURATION\tNOTE")
		for _, x := range res {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", x.scenario, x.status, x.dur.Round(10*time.Millisecond), x.note)
		}
		tw.Flush()
		if l, ok := r.lat[topo]; ok {
			fmt.Fprintf(&b, "  upload-to-vote latency over %d changes (%d in flight): median %s, p90 %s, max %s; batch took %s\n",
				l.n, l.inflight, l.median.Round(time.Millisecond), l.p90.Round(time.Millisecond), l.max.Round(time.Millisecond),
				l.total.Round(10*time.Millisecond))
		}
	}
	return b.String()
}

// scenarioOrder sorts "10-..." after "9-..." and names without a number last.
func scenarioOrder(name string) int {
	n := 0
	for _, c := range name {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 {
		return 1000
	}
	return n
}

// percentile returns the p-th percentile (nearest rank) of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*p+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// env is one topology as the scenarios see it.
type env struct {
	topo Topology
	api  *API
	g    *fakegerrit.Server
	ctl  string

	exe    string  // the tollgate binary
	start  starter // of more instances of the topology
	parent *env    // of a private instance

	mu      sync.Mutex
	changes []int // every change a scenario created, for the end checks
	notes   map[string]string
}

// note records a figure of a scenario for the report (on the topology's
// shared env, also when called on a private instance's).
func (e *env) note(scenario, format string, args ...any) {
	if e.parent != nil {
		e.parent.note(scenario, format, args...)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.notes == nil {
		e.notes = map[string]string{}
	}
	e.notes[scenario] = fmt.Sprintf(format, args...)
}

func (e *env) noteOf(scenario string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.notes[scenario]
}

func newEnv(topo Topology) *env {
	return &env{topo: topo, api: NewAPI(topo.APIURL()), g: topo.Gerrit(), ctl: topo.ControlDir()}
}

// unblock kills the hanging jobs of e's changes and releases the waiting
// ones, so that a failed scenario does not hold workers for minutes.
func (e *env) unblock(t *testing.T) {
	e.mu.Lock()
	changes := slices.Clone(e.changes)
	e.mu.Unlock()
	for _, c := range changes {
		_ = Release(e.ctl, c)
		pids, _ := filepath.Glob(filepath.Join(e.ctl, strconv.Itoa(c)+".*.pid"))
		for _, f := range pids {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 {
				continue
			}
			// Only our job, still hanging: its pid may have been reused.
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && string(cmd) == "sleep\x00300\x00" {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Logf("killed the hanging job %d of change %d", pid, c)
			}
		}
	}
}

// dumpLogs shows the ends of the topology's logs when a test failed.
func dumpLogs(t *testing.T, dir string, lines int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		t.Logf("--- %s/%s (last %d lines):\n%s", dir, e.Name(), lines, tail(dir+"/"+e.Name(), lines))
	}
}
