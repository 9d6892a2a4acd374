package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tollgate-ci/tollgate/core/sandbox/sandboxtest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// TestUpDemo runs `tollgate up --demo` in-process, as a newcomer would, and
// checks what the README promises: the built-in workers run the trusted
// patchsets' jobs, the untrusted change gets none, the superseded
// patchset's jobs are CANCELLED, and the fake Gerrit receives a +1 on bob's
// change and a -1 listing the failed test on dave's. Then it stops it like
// Ctrl-C does.
func TestUpDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	// The demo's jobs run in the bwrap sandbox where CI installs it.
	mode := "none"
	if _, err := exec.LookPath("bwrap"); err == nil || os.Getenv("CI") != "" {
		mode = "bwrap"
	}
	go func() {
		done <- run(ctx, []string{"up", "--demo", "--data", sandboxtest.Dir(t), "--listen", "127.0.0.1:0", "--sandbox", mode}, pw, io.Discard)
		pw.Close()
	}()
	addrRE := regexp.MustCompile(`API http://([0-9.:]+)/`)
	gerritRE := regexp.MustCompile(`fake Gerrit at (http://[0-9.:]+) `)
	var base, gerritURL string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
			base = "http://" + m[1]
		}
		if m := gerritRE.FindStringSubmatch(sc.Text()); m != nil {
			gerritURL = m[1]
			break
		}
	}
	if base == "" || gerritURL == "" {
		t.Fatalf("no address printed; run returned %v", <-done)
	}
	go io.Copy(io.Discard, pr)

	want := func() (bool, string) {
		var cls api.Page[*model.Patchset]
		if err := getJSON(base+"/api/v1/cls", &cls); err != nil {
			return false, err.Error()
		}
		got := map[string]bool{}
		for _, p := range cls.Items {
			got[p.ID] = true
		}
		for _, id := range []string{"1-1", "1-2", "2-1", "4-1"} {
			if !got[id] {
				return false, "missing patchset " + id
			}
		}
		if got["3-1"] {
			return false, "the untrusted change 3 got jobs"
		}
		want := map[string]map[string]model.State{
			"1-1": {"build": model.Cancelled, "test": model.Cancelled, "lint": model.Cancelled},
			"1-2": {"build": model.Completed, "test": model.Completed, "lint": model.Failed},
			"2-1": {"build": model.Completed, "test": model.Completed, "lint": model.Failed},
			"4-1": {"build": model.Completed, "test": model.Failed, "lint": model.Failed},
		}
		for id, states := range want {
			var one api.PatchsetWithJobs
			if err := getJSON(base+"/api/v1/cls/"+id, &one); err != nil {
				return false, err.Error()
			}
			if len(one.Jobs) != 3 {
				return false, id + " has no 3 jobs"
			}
			for _, j := range one.Jobs {
				if j.State != states[j.Type] {
					return false, j.ID + " is " + string(j.State) + ", want " + string(states[j.Type])
				}
			}
		}
		var reviews []struct {
			Change  int            `json:"change"`
			Labels  map[string]int `json:"labels"`
			Message string         `json:"message"`
		}
		if err := getJSON(gerritURL+"/control/reviews", &reviews); err != nil {
			return false, err.Error()
		}
		votes := map[int][]int{}
		for _, r := range reviews {
			votes[r.Change] = append(votes[r.Change], r.Labels["Code-Review"])
			if r.Change == 4 && !strings.Contains(r.Message, "FAIL: test (exit code 1)") {
				return false, "dave's review does not list the failed test: " + r.Message
			}
			if r.Change == 4 {
				// The test ran on the files of dave's change, merged onto main.
				rest := r.Message[strings.Index(r.Message, "FAIL: test"):]
				id := strings.Fields(rest[strings.Index(rest, "/jobs/")+len("/jobs/"):])[0]
				resp, err := http.Get(base + "/api/v1/jobs/" + id + "/log")
				if err != nil {
					return false, err.Error()
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, want := range []string{"FAIL: eo_test: missing plural form in greetings/eo.txt", "ok   en_test: Hello, World!", "checked out"} {
					if !strings.Contains(string(b), want) {
						return false, fmt.Sprintf("dave's test log lacks %q: %s", want, b)
					}
				}
			}
		}
		if len(votes[2]) != 1 || votes[2][0] != 1 || len(votes[4]) != 1 || votes[4][0] != -1 || len(votes[1]) != 0 || len(votes[3]) != 0 {
			return false, fmt.Sprintf("votes per change = %v, want {2:[1] 4:[-1]}", votes)
		}
		return true, ""
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, why := want()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo state not reached in 60s: %s", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "ci_job_queue_len") {
		t.Error("/metrics lacks ci_job_queue_len")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up returned %v on shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("up did not stop within 15s of SIGINT")
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func TestUpRefusesBadStarts(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.yaml"
	if err := writeFile(bad, "gerrit: {url: 'ftp://x', project: p}\ntrust: {trusted_emails: '.*'}\njobs: {a: {command: [x]}}\n"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--data", dir}, "--config FILE is required"},
		{[]string{"up", "--config", bad, "--data", dir}, "gerrit.url"},
		{[]string{"up", "--config", dir + "/missing.yaml"}, "missing.yaml"},
		{[]string{"nonsense"}, "unknown command"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
