package gerrit

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFaultStatusForNRequestsThenRecovery(t *testing.T) {
	e := newEnv(t, Options{})
	e.change("x", "a@example.com")
	if _, err := e.s.InjectFault(Fault{PathPrefix: "/changes/", Status: http.StatusServiceUnavailable, Count: 2}); err != nil {
		t.Fatal(err)
	}
	// Other paths are unaffected.
	var br BranchInfo
	e.getJSON("/a/projects/"+url.PathEscape(testProject)+"/branches/main", &br)
	for i, path := range []string{"/a/changes/?q=is:open", "/changes/1"} {
		status, _, body := e.do(http.MethodGet, path, "", nil)
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "injected fault") {
			t.Errorf("request %d: %d %s", i, status, body)
		}
	}
	var cs []ChangeInfo
	e.getJSON("/a/changes/?q=is:open", &cs)
	if len(cs) != 1 {
		t.Errorf("after recovery: %d changes", len(cs))
	}
	if got := e.s.RequestCount(EndpointQueryChanges); got != 2 {
		t.Errorf("query count %d, want 2 (faulted requests count too)", got)
	}
}

func TestFaultMethodAndRemove(t *testing.T) {
	e := newEnv(t, Options{})
	ps := e.change("x", "a@example.com")
	id, err := e.s.InjectFault(Fault{Method: "post", Status: http.StatusInternalServerError})
	if err != nil {
		t.Fatal(err)
	}
	var c ChangeInfo
	e.getJSON(fmt.Sprintf("/a/changes/%d", ps.Change), &c) // GET unaffected
	for i := 0; i < 3; i++ {
		if status, _ := e.review(ps.ID, "current", map[string]any{"message": "x"}); status != 500 {
			t.Errorf("POST %d: %d", i, status)
		}
	}
	e.s.RemoveFault(id)
	if status, _ := e.review(ps.ID, "current", map[string]any{"message": "x"}); status != 200 {
		t.Errorf("after remove: %d", status)
	}
	if got := len(e.s.Reviews(ps.Change)); got != 1 {
		t.Errorf("faulted reviews were recorded: %d", got)
	}
}

func TestFaultDurationUsesClock(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.s.InjectFault(Fault{Status: http.StatusBadGateway, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if status, _, _ := e.do(http.MethodGet, "/a/changes/", "", nil); status != http.StatusBadGateway {
			t.Errorf("during: %d", status)
		}
	}
	e.clock.Advance(time.Minute)
	if status, _, _ := e.do(http.MethodGet, "/a/changes/", "", nil); status != http.StatusOK {
		t.Errorf("after: %d", status)
	}
}

func TestFaultDropConnection(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.s.InjectFault(Fault{PathPrefix: "/changes/", Drop: true, Count: 1}); err != nil {
		t.Fatal(err)
	}
	// A fresh connection, so the transport does not retry the GET itself.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/a/changes/", nil)
	req.SetBasicAuth(testUser, testPass)
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("dropped connection answered %d", resp.StatusCode)
	}
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatalf("after drop: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after drop: %d", resp.StatusCode)
	}
}

func TestFaultDelay(t *testing.T) {
	e := newEnv(t, Options{})
	// A long delay: the client gives up; the server does not hold it after.
	if _, err := e.s.InjectFault(Fault{Delay: time.Hour, Count: 1}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 50 * time.Millisecond}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/changes/", nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("delayed request answered in time")
	}
	// A short delay followed by a status.
	if _, err := e.s.InjectFault(Fault{Delay: 20 * time.Millisecond, Status: 504, Count: 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	status, _, _ := e.do(http.MethodGet, "/changes/", "", nil)
	if status != 504 || time.Since(start) < 20*time.Millisecond {
		t.Errorf("delayed 504: %d after %v", status, time.Since(start))
	}
	if status, _, _ := e.do(http.MethodGet, "/changes/", "", nil); status != 200 {
		t.Errorf("after: %d", status)
	}
}

func TestFaultValidationAndControlExempt(t *testing.T) {
	e := newEnv(t, Options{})
	for _, f := range []Fault{{Status: 404}, {}, {Status: 503, Count: -1}, {Delay: -time.Second}} {
		if _, err := e.s.InjectFault(f); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err %v", f, err)
		}
	}
	if _, err := e.s.InjectFault(Fault{Status: 429}); err != nil {
		t.Errorf("429: %v", err)
	}
	status, body := e.control(http.MethodGet, "/control/requests", nil, nil)
	if status != 200 {
		t.Errorf("control under fault: %d %s", status, body)
	}
	if status, _, _ := e.do(http.MethodGet, "/changes/", "", nil); status != 429 {
		t.Errorf("REST under fault: %d", status)
	}
	e.s.ClearFaults()
	if status, _, _ := e.do(http.MethodGet, "/changes/", "", nil); status != 200 {
		t.Errorf("after clear: %d", status)
	}
}

func TestRequestCounts(t *testing.T) {
	e := newEnv(t, Options{})
	ps := e.change("x", "a@example.com")
	enc := url.PathEscape(testProject)
	for _, path := range []string{
		"/a/changes/?q=is:open", "/changes/", "/a/changes/" + ps.ID, "/a/changes/1/detail", "/a/changes/1/messages",
		"/a/projects/" + enc + "/branches/main", "/a/projects/" + enc + "/commits/" + ps.Revision, "/a/nope",
	} {
		e.do(http.MethodGet, path, "", nil)
	}
	e.review(ps.ID, "current", map[string]any{"message": "m"})
	// Unauthenticated calls count too.
	if _, err := http.Get(e.url + "/a/changes/"); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		EndpointQueryChanges: 3, EndpointGetChange: 1, EndpointGetDetail: 1, EndpointListMessages: 1,
		EndpointGetBranch: 1, EndpointGetCommit: 1, EndpointOther: 1, EndpointPostReview: 1,
	}
	got := e.s.RequestCounts()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	e.s.ResetRequestCounts()
	if len(e.s.RequestCounts()) != 0 {
		t.Error("reset did not clear")
	}
	// A wrong method is 405 and counted as OTHER.
	if status, _, _ := e.do(http.MethodDelete, "/a/changes/1", "", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d", status)
	}
	if e.s.RequestCount(EndpointOther) != 1 {
		t.Errorf("OTHER: %v", e.s.RequestCounts())
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, Options{})
	var pss []PatchSet
	for i := 0; i < 4; i++ {
		pss = append(pss, e.change(fmt.Sprint("c", i), "a@example.com"))
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ps := pss[i%len(pss)]
			for j := 0; j < 5; j++ {
				switch (i + j) % 3 {
				case 0:
					e.review(ps.ID, "current", map[string]any{"labels": map[string]int{"Verified": 1 - 2*(j%2)}})
				case 1:
					e.do(http.MethodGet, "/a/changes/?q=is:open&o=LABELS&o=DETAILED_LABELS", "", nil)
				default:
					e.s.SetVote(ps.Change, fmt.Sprintf("r%d@example.com", i), "Code-Review", j%3-1)
				}
			}
		}(i)
	}
	wg.Wait()
	if got := len(e.s.AllReviews()); got == 0 {
		t.Error("no reviews recorded")
	}
}
