package gerrit

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestXSSIPrefixAndContentType(t *testing.T) {
	e := newEnv(t, Options{})
	e.change("One", "alice@example.com")
	status, hdr, body := e.do(http.MethodGet, "/a/changes/?q=is:open", "", nil)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	if got := hdr.Get("Content-Type"); got != "application/json; charset=UTF-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if !strings.HasPrefix(string(body), ")]}'\n[") {
		t.Errorf("body does not start with the XSSI line: %q", body)
	}
	var version string
	e.getJSON("/config/server/version", &version)
	if version != Version {
		t.Errorf("version = %q", version)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, Options{})
	ps := e.change("One", "alice@example.com")

	get := func(user, pass, path string) int {
		req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, user, pass, path string
		want                   int
	}{
		{"no credentials", "", "", "/a/changes/", http.StatusUnauthorized},
		{"wrong password", testUser, "nope", "/a/changes/", http.StatusUnauthorized},
		{"unknown user", "mallory", testPass, "/a/changes/", http.StatusUnauthorized},
		{"good", testUser, testPass, "/a/changes/", http.StatusOK},
		{"anonymous read", "", "", "/changes/", http.StatusOK},
		{"anonymous self", "", "", "/accounts/self", http.StatusForbidden},
		{"self", testUser, testPass, "/a/accounts/self", http.StatusOK},
	} {
		if got := get(tc.user, tc.pass, tc.path); got != tc.want {
			t.Errorf("%s: GET %s = %d, want %d", tc.name, tc.path, got, tc.want)
		}
	}

	// Anonymous reviews are refused.
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/changes/%d/revisions/current/review", e.url, ps.Change),
		strings.NewReader(`{"message":"hi"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous review = %d, want 403", resp.StatusCode)
	}

	var self AccountInfo
	e.getJSON("/a/accounts/self", &self)
	if self.AccountID != 1000000 || self.Username != testUser || self.Email != testUser+"@example.com" {
		t.Errorf("self = %+v", self)
	}

	// With no users configured, /a/ is always 401.
	s := New(Options{})
	rec := httptestRecorder(s, http.MethodGet, "/a/changes/")
	if rec != http.StatusUnauthorized {
		t.Errorf("no users: %d", rec)
	}
}

func httptestRecorder(s *Server, method, path string) int {
	w := &statusRecorder{header: http.Header{}}
	r, _ := http.NewRequest(method, path, nil)
	s.Handler().ServeHTTP(w, r)
	return w.status
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(s int) { r.status = s }

func TestQueryOperators(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.s.CreateBranch(testProject, "release", CommitSpec{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.CreateBranch("other/project", "main", CommitSpec{}); err != nil {
		t.Fatal(err)
	}
	c1 := e.change("open on main", "alice@example.com")
	c2 := e.change("merged on main", "bob@example.com")
	c3 := e.change("abandoned on main", "alice@example.com")
	c4, err := e.s.CreateChange(ChangeSpec{Project: testProject, Branch: "refs/heads/release", Subject: "release", OwnerEmail: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	c5, err := e.s.CreateChange(ChangeSpec{Project: "other/project", Branch: "main", Subject: "other", OwnerEmail: "carol@example.com", WorkInProgress: true})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	if _, err := e.s.Merge(c2.Change, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Abandon(c3.Change, "alice@example.com", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetVote(c1.Change, "reviewer@example.com", "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetVote(c4.Change, "reviewer@example.com", "Code-Review", -1); err != nil {
		t.Fatal(err)
	}

	n1, n2, n3, n4, n5 := c1.Change, c2.Change, c3.Change, c4.Change, c5.Change
	for _, tc := range []struct {
		q    string
		want []int // any order
	}{
		{"is:open", []int{n1, n4, n5}},
		{"status:open", []int{n1, n4, n5}},
		{"status:merged", []int{n2}},
		{"status:abandoned", []int{n3}},
		{"is:closed", []int{n2, n3}},
		{"project:" + testProject, []int{n1, n2, n3, n4}},
		{"project:" + testProject + " branch:main is:open", []int{n1}},
		{"branch:refs/heads/release", []int{n4}},
		{fmt.Sprintf("change:%d", n2), []int{n2}},
		{c3.ChangeID, []int{n3}},
		{fmt.Sprint(n5), []int{n5}},
		{"is:open -branch:main", []int{n4}},
		{"is:open NOT project:" + testProject, []int{n5}},
		{"(branch:release OR status:merged) project:" + testProject, []int{n2, n4}},
		{"branch:release OR branch:main AND is:open", []int{n1, n4, n5}},
		{"owner:alice@example.com", []int{n1, n3}},
		{"uploader:carol", []int{n5}},
		{"is:wip", []int{n5}},
		{"label:Presubmit-Ready=1", []int{n1}},
		{"label:Presubmit-Ready+1", []int{n1}},
		{"label:Presubmit-Ready=MAX is:open", []int{n1}},
		{"label:Code-Review<0", []int{n4}},
		{"label:Code-Review-1", []int{n4}},
		{"is:open label:Code-Review=0", []int{n1, n5}},
		{"projects:other/", []int{n5}},
	} {
		var got []ChangeInfo
		e.getJSON("/a/changes/?q="+url.QueryEscape(tc.q), &got)
		nums := numbers(got)
		slices.Sort(nums)
		slices.Sort(tc.want)
		if !reflect.DeepEqual(nums, tc.want) {
			t.Errorf("q=%s: got %v, want %v", tc.q, nums, tc.want)
		}
	}

	// "+" in the raw URL is a space.
	var got []ChangeInfo
	e.getJSON("/a/changes/?q=branch:main+project:"+url.QueryEscape(testProject)+"+is:open", &got)
	if nums := numbers(got); !reflect.DeepEqual(nums, []int{n1}) {
		t.Errorf("raw + query: %v", nums)
	}

	for _, q := range []string{"foo:bar", "hello", "status:weird", "after:yesterday", "(is:open", "is:open)", "limit:x", `after:"2024-01-01`} {
		status, _, body := e.do(http.MethodGet, "/a/changes/?q="+url.QueryEscape(q), "", nil)
		if status != http.StatusBadRequest {
			t.Errorf("q=%s: status %d (%s), want 400", q, status, body)
		}
	}
}

func TestQueryPagingCoversEveryChangeOnce(t *testing.T) {
	e := newEnv(t, Options{})
	const total = 23
	for i := 0; i < total; i++ {
		if _, err := e.s.CreateChange(ChangeSpec{Project: testProject, Branch: "main", Subject: fmt.Sprint("c", i), OwnerEmail: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 { // several changes share an updated time
			e.clock.Advance(time.Second)
		}
	}
	seen := map[int]int{}
	var order []ChangeInfo
	pages := 0
	for start := 0; ; {
		pages++
		var page []ChangeInfo
		e.getJSON(fmt.Sprintf("/a/changes/?q=is:open&o=CURRENT_REVISION&n=5&S=%d", start), &page)
		for i, c := range page {
			seen[c.Number]++
			if c.MoreChanges && i != len(page)-1 {
				t.Errorf("_more_changes on item %d of %d", i, len(page))
			}
		}
		order = append(order, page...)
		start += len(page)
		if len(page) == 0 || !page[len(page)-1].MoreChanges {
			break
		}
		if len(page) != 5 {
			t.Fatalf("truncated page has %d items", len(page))
		}
	}
	if pages != 5 || len(seen) != total {
		t.Fatalf("pages=%d distinct=%d", pages, len(seen))
	}
	for n, k := range seen {
		if k != 1 {
			t.Errorf("change %d seen %d times", n, k)
		}
	}
	for i := 1; i < len(order); i++ {
		a, b := order[i-1], order[i]
		if a.Updated.Before(b.Updated.Time) || (a.Updated.Equal(b.Updated.Time) && a.Number < b.Number) {
			t.Errorf("not sorted by updated desc, number desc at %d: %d@%v then %d@%v", i, a.Number, a.Updated, b.Number, b.Updated)
		}
	}
	// The last page carries no _more_changes; an exact page neither.
	var exact []ChangeInfo
	e.getJSON(fmt.Sprintf("/a/changes/?q=is:open&n=%d", total), &exact)
	if len(exact) != total || exact[total-1].MoreChanges {
		t.Errorf("exact page: %d items, more=%v", len(exact), exact[len(exact)-1].MoreChanges)
	}
	// n above the server limit is capped.
	small := newEnv(t, Options{QueryLimit: 4})
	for i := 0; i < 6; i++ {
		small.change(fmt.Sprint("s", i), "a@example.com")
	}
	var capped []ChangeInfo
	small.getJSON("/a/changes/?q=is:open&n=100", &capped)
	if len(capped) != 4 || !capped[3].MoreChanges {
		t.Errorf("capped page: %d items", len(capped))
	}
	var limited []ChangeInfo
	small.getJSON("/a/changes/?q="+url.QueryEscape("is:open limit:2"), &limited)
	if len(limited) != 2 || !limited[1].MoreChanges {
		t.Errorf("limit:2 page: %d items", len(limited))
	}
}

func TestQueryAfter(t *testing.T) {
	e := newEnv(t, Options{})
	old := e.change("old", "a@example.com") // updated t0
	e.clock.Set(t0.Add(24 * time.Hour))
	mid := e.change("mid", "a@example.com") // updated t0+1d
	e.clock.Set(t0.Add(48 * time.Hour))
	newer := e.change("new", "a@example.com") // updated t0+2d
	// Touching the old change moves it into later windows: after compares updated.
	e.clock.Set(t0.Add(72 * time.Hour))
	if err := e.s.SetVote(old.Change, "r@example.com", "Code-Review", 1); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		q    string
		want []int
	}{
		{`after:"2024-05-02 12:00:00"`, []int{old.Change, mid.Change, newer.Change}}, // inclusive
		{`after:"2024-05-02 12:00:00.000000001"`, []int{old.Change, newer.Change}},
		{`after:{2024-05-03 12:00:00}`, []int{old.Change, newer.Change}},
		{`after:2024-05-03`, []int{old.Change, newer.Change}},
		{`since:2024-05-04`, []int{old.Change}},
		{`after:"2024-05-03 13:00:00 +0100"`, []int{old.Change, newer.Change}}, // = 12:00 UTC
		{`after:"2024-05-03 13:00:00"`, []int{old.Change}},
		{`before:"2024-05-02 12:00:00"`, []int{mid.Change}},
		{`after:2024-05-02 before:2024-05-03`, []int{mid.Change}},
		{`age:1d`, []int{mid.Change, newer.Change}},
		{`-age:1d`, []int{old.Change}},
	} {
		var got []ChangeInfo
		e.getJSON("/a/changes/?q="+url.QueryEscape(tc.q), &got)
		nums := numbers(got)
		slices.Sort(nums)
		slices.Sort(tc.want)
		if !reflect.DeepEqual(nums, tc.want) {
			t.Errorf("q=%s: got %v, want %v", tc.q, nums, tc.want)
		}
	}
	// An unquoted time is a separate (unsupported) term, as in Gerrit.
	status, _, _ := e.do(http.MethodGet, "/a/changes/?q="+url.QueryEscape("after:2024-05-02 12:00:00"), "", nil)
	if status != http.StatusBadRequest {
		t.Errorf("unquoted date time: %d", status)
	}
}

func TestMultipleQueries(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.change("a", "a@example.com")
	b := e.change("b", "a@example.com")
	if err := e.s.Abandon(b.Change, "a@example.com", ""); err != nil {
		t.Fatal(err)
	}
	var got [][]ChangeInfo
	e.getJSON("/a/changes/?q=is:open&q=is:abandoned&q=is:merged", &got)
	if len(got) != 3 || !reflect.DeepEqual(numbers(got[0]), []int{a.Change}) ||
		!reflect.DeepEqual(numbers(got[1]), []int{b.Change}) || len(got[2]) != 0 {
		t.Errorf("got %+v", got)
	}
	// No q means status:open.
	var def []ChangeInfo
	e.getJSON("/a/changes/", &def)
	if !reflect.DeepEqual(numbers(def), []int{a.Change}) {
		t.Errorf("default query: %v", numbers(def))
	}
}

func TestChangeOptions(t *testing.T) {
	e := newEnv(t, Options{})
	ps1 := e.change("Add a feature", "alice@example.com")
	ps2, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{UploaderEmail: "uploader@example.com", UploaderName: "Up Loader"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetVote(ps1.Change, "reviewer@example.com", "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetVote(ps1.Change, "other@example.com", "Code-Review", 1); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/a/changes/%d", ps1.Change)

	// No options: no revisions, labels, messages or e-mails.
	status, _, raw := e.do(http.MethodGet, path, "", nil)
	if status != 200 {
		t.Fatal(status)
	}
	for _, field := range []string{"revisions", "current_revision", "labels", "messages", "email", "_more_changes"} {
		if strings.Contains(string(raw), `"`+field+`"`) {
			t.Errorf("field %s present without options: %s", field, raw)
		}
	}
	var plain ChangeInfo
	decodeGerrit(t, raw, &plain)
	wantID := "platform%2Fexternal%2Fperfetto~main~" + ps1.ChangeID
	if plain.ID != wantID || plain.TripletID != wantID || plain.Project != testProject || plain.Branch != "main" ||
		plain.Status != StatusNew || plain.Subject != "Add a feature" || plain.Owner.AccountID == 0 || plain.Owner.Email != "" {
		t.Errorf("plain change: %+v", plain)
	}
	if !strings.Contains(string(raw), `"created":"2024-05-01 12:00:00.000000000"`) {
		t.Errorf("created not in Gerrit format: %s", raw)
	}

	var cur ChangeInfo
	e.getJSON(path+"?o=CURRENT_REVISION", &cur)
	if cur.CurrentRevision != ps2.Revision || len(cur.Revisions) != 1 {
		t.Fatalf("current revision: %+v", cur)
	}
	ri := cur.Revisions[ps2.Revision]
	if ri.Number != 2 || ri.Ref != fmt.Sprintf("refs/changes/%02d/%d/2", ps1.Change%100, ps1.Change) ||
		ri.Kind != KindRework || ri.Uploader.AccountID == 0 || ri.Uploader.Email != "" || ri.Commit != nil {
		t.Errorf("revision info: %+v", ri)
	}

	var det ChangeInfo
	e.getJSON(path+"?o=CURRENT_REVISION&o=DETAILED_ACCOUNTS&o=current_commit", &det)
	ri = det.Revisions[ps2.Revision]
	if ri.Uploader.Email != "uploader@example.com" || ri.Uploader.Name != "Up Loader" || ri.Uploader.Username != "uploader" {
		t.Errorf("detailed uploader: %+v", ri.Uploader)
	}
	if det.Owner.Email != "alice@example.com" {
		t.Errorf("detailed owner: %+v", det.Owner)
	}
	if ri.Commit == nil || ri.Commit.Subject != "Add a feature" || ri.Commit.Commit != "" ||
		len(ri.Commit.Parents) != 1 || !strings.Contains(ri.Commit.Message, "Change-Id: "+ps1.ChangeID) {
		t.Errorf("commit: %+v", ri.Commit)
	}

	var all ChangeInfo
	e.getJSON(path+"?o=ALL_REVISIONS", &all)
	if len(all.Revisions) != 2 || all.Revisions[ps1.Revision].Number != 1 {
		t.Errorf("all revisions: %+v", all.Revisions)
	}

	var lab ChangeInfo
	e.getJSON(path+"?o=LABELS&o=DETAILED_ACCOUNTS", &lab)
	pr := lab.Labels["Presubmit-Ready"]
	if pr.Approved == nil || pr.Approved.Email != "reviewer@example.com" || pr.All != nil {
		t.Errorf("Presubmit-Ready: %+v", pr)
	}
	cr := lab.Labels["Code-Review"]
	if cr.Approved != nil || cr.Recommended == nil || cr.Recommended.Email != "other@example.com" || cr.Value != 1 {
		t.Errorf("Code-Review: %+v", cr)
	}
	if v, ok := lab.Labels["Verified"]; !ok || v.Approved != nil || v.Rejected != nil {
		t.Errorf("Verified: %+v %v", v, ok)
	}

	var dl ChangeInfo
	e.getJSON(path+"?o=DETAILED_LABELS", &dl)
	prd := dl.Labels["Presubmit-Ready"]
	if len(prd.All) != 2 || prd.DefaultValue == nil || prd.Values["+1"] == "" || prd.Values[" 0"] == "" {
		t.Fatalf("detailed Presubmit-Ready: %+v", prd)
	}
	var votes []int
	for _, a := range prd.All {
		votes = append(votes, a.Value)
		if a.Value != 0 && a.Date == nil {
			t.Errorf("vote without date: %+v", a)
		}
	}
	slices.Sort(votes)
	if !reflect.DeepEqual(votes, []int{0, 1}) {
		t.Errorf("Presubmit-Ready all values: %v", votes)
	}

	var msgs ChangeInfo
	e.getJSON(path+"?o=MESSAGES", &msgs)
	if len(msgs.Messages) != 4 || msgs.Messages[0].Message != "Uploaded patch set 1." ||
		msgs.Messages[1].RevisionNumber != 2 || msgs.Messages[0].Author.Email != "" {
		t.Errorf("messages: %+v", msgs.Messages)
	}

	// /detail implies labels, detailed labels, detailed accounts and messages.
	var detail ChangeInfo
	e.getJSON(path+"/detail", &detail)
	if detail.Owner.Email == "" || len(detail.Messages) != 4 || detail.Labels["Code-Review"].All == nil || detail.Revisions != nil {
		t.Errorf("detail: %+v", detail)
	}

	status, _, body := e.do(http.MethodGet, path+"?o=NOPE", "", nil)
	if status != http.StatusBadRequest || !strings.Contains(string(body), "NOPE") {
		t.Errorf("bad option: %d %s", status, body)
	}
	// Accepted but ignored options.
	e.getJSON(path+"?o=CURRENT_FILES&o=SUBMITTABLE", &plain)
}

func TestChangeIdentifiers(t *testing.T) {
	e := newEnv(t, Options{})
	ps := e.change("x", "a@example.com")
	enc := url.PathEscape(testProject)
	for _, id := range []string{
		fmt.Sprint(ps.Change),
		enc + "~" + fmt.Sprint(ps.Change),
		enc + "~main~" + ps.ChangeID,
		enc + "%7Emain%7E" + ps.ChangeID,
		enc + "~refs%2Fheads%2Fmain~" + ps.ChangeID,
		ps.ChangeID,
		ps.ID,
	} {
		var c ChangeInfo
		e.getJSON("/a/changes/"+id, &c)
		if c.Number != ps.Change {
			t.Errorf("%s: got change %d", id, c.Number)
		}
	}
	for _, id := range []string{"999", "other~" + fmt.Sprint(ps.Change), "Ideadbeef", enc + "~release~" + ps.ChangeID} {
		status, hdr, body := e.do(http.MethodGet, "/a/changes/"+id, "", nil)
		want := "Not found: " + mustUnescape(t, id) + "\n"
		if status != http.StatusNotFound || string(body) != want || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %d %q, want 404 %q", id, status, body, want)
		}
	}
}

func mustUnescape(t *testing.T, s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestPostReview(t *testing.T) {
	e := newEnv(t, Options{MaxMessageLength: 100})
	ps1 := e.change("Feature", "alice@example.com")
	ps2, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	id := ps1.ID

	status, body := e.review(id, "current", map[string]any{
		"message": "CI passed", "labels": map[string]int{"Code-Review": 1}, "tag": "autogenerated:tollgate", "notify": "OWNER",
	})
	if status != 200 {
		t.Fatalf("review: %d %s", status, body)
	}
	var res ReviewResult
	decodeGerrit(t, body, &res)
	if !reflect.DeepEqual(res.Labels, map[string]int{"Code-Review": 1}) {
		t.Errorf("result labels: %v", res.Labels)
	}

	var c ChangeInfo
	e.getJSON(fmt.Sprintf("/a/changes/%d?o=LABELS&o=DETAILED_ACCOUNTS", ps1.Change), &c)
	if !c.Updated.Equal(t0.Add(time.Second + time.Minute)) {
		t.Errorf("updated not bumped: %v", c.Updated)
	}
	if r := c.Labels["Code-Review"].Recommended; r == nil || r.Username != testUser {
		t.Errorf("labels: %+v", c.Labels["Code-Review"])
	}

	var msgs []ChangeMessageInfo
	e.getJSON("/a/changes/"+id+"/messages", &msgs)
	last := msgs[len(msgs)-1]
	if last.Message != "Patch Set 2: Code-Review+1\n\nCI passed" || last.Tag != "autogenerated:tollgate" ||
		last.RevisionNumber != 2 || last.Author == nil || last.Author.Username != testUser || last.Author.Email == "" {
		t.Errorf("message: %+v", last)
	}

	// Revisions by number, by sha and by sha prefix; labels by any case.
	if status, body := e.review(id, "1", map[string]any{"labels": map[string]int{"verified": -1}}); status != 200 {
		t.Errorf("by number: %d %s", status, body)
	}
	if status, body := e.review(id, ps2.Revision, map[string]any{"labels": map[string]int{"Verified": 1}}); status != 200 {
		t.Errorf("by sha: %d %s", status, body)
	}
	if status, body := e.review(id, ps2.Revision[:8], map[string]any{"message": "prefix"}); status != 200 {
		t.Errorf("by prefix: %d %s", status, body)
	}
	reviews := e.s.Reviews(ps1.Change)
	if len(reviews) != 4 {
		t.Fatalf("reviews: %+v", reviews)
	}
	r0 := reviews[0]
	if r0.PatchSet != 2 || r0.Revision != ps2.Revision || !r0.Current || r0.Labels["Code-Review"] != 1 ||
		r0.Message != "CI passed" || r0.Tag != "autogenerated:tollgate" || r0.Notify != "OWNER" ||
		r0.Username != testUser || !r0.Time.Equal(t0.Add(time.Second+time.Minute)) {
		t.Errorf("review 0: %+v", r0)
	}
	if r1 := reviews[1]; r1.PatchSet != 1 || r1.Revision != ps1.Revision || r1.Current || r1.Labels["Verified"] != -1 {
		t.Errorf("review 1: %+v", r1)
	}
	// The vote on patch set 1 is not in the current labels.
	e.getJSON(fmt.Sprintf("/a/changes/%d?o=LABELS", ps1.Change), &c)
	if c.Labels["Verified"].Approved == nil || c.Labels["Verified"].Rejected != nil {
		t.Errorf("Verified: %+v", c.Labels["Verified"])
	}
	if got := len(e.s.AllReviews()); got != 4 {
		t.Errorf("all reviews: %d", got)
	}

	// A vote of 0 removes the vote.
	if status, _ := e.review(id, "current", map[string]any{"labels": map[string]int{"Verified": 0}}); status != 200 {
		t.Error(status)
	}
	e.getJSON("/a/changes/"+id+"/messages", &msgs)
	if got := msgs[len(msgs)-1].Message; got != "Patch Set 2: -Verified" {
		t.Errorf("removal message %q", got)
	}

	for _, tc := range []struct {
		name        string
		rev         string
		contentType string
		body        string
		status      int
		contains    string
	}{
		{"unknown label", "current", "application/json", `{"labels":{"Foo":1}}`, 400, `label "Foo" is not a configured label`},
		{"out of range", "current", "application/json", `{"labels":{"Verified":2}}`, 400, `label "Verified": 2 is not a valid value`},
		{"below range", "current", "application/json", `{"labels":{"Presubmit-Ready":-1}}`, 400, `is not a valid value`},
		{"too long", "current", "application/json", `{"message":"` + strings.Repeat("x", 101) + `"}`, 400, "Comment size exceeds limit (101 > 100)"},
		{"bad notify", "current", "application/json", `{"notify":"EVERYONE"}`, 400, "notify"},
		{"bad json", "current", "application/json", `{"labels":`, 400, "Invalid JSON"},
		{"not json", "current", "text/plain", `{"message":"x"}`, 415, "application/json"},
		{"unknown revision", "7", "application/json", `{"message":"x"}`, 404, "Not found: 7"},
		{"unknown sha", "deadbeef", "application/json", `{"message":"x"}`, 404, "Not found: deadbeef"},
	} {
		status, _, body := e.do(http.MethodPost, "/a/changes/"+id+"/revisions/"+tc.rev+"/review", tc.contentType, []byte(tc.body))
		if status != tc.status || !strings.Contains(string(body), tc.contains) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, status, body, tc.status, tc.contains)
		}
	}
	if got := len(e.s.Reviews(ps1.Change)); got != 5 {
		t.Errorf("rejected reviews were recorded: %d", got)
	}
	// 100 characters (not bytes) is within the limit.
	if status, body := e.review(id, "current", map[string]any{"message": strings.Repeat("é", 100)}); status != 200 {
		t.Errorf("100 runes: %d %s", status, body)
	}
	// strict_labels=false drops unknown labels.
	status, body = e.review(id, "current", map[string]any{"labels": map[string]int{"Foo": 1, "Verified": 1}, "strict_labels": false})
	res = ReviewResult{}
	decodeGerrit(t, body, &res)
	if status != 200 || !reflect.DeepEqual(res.Labels, map[string]int{"Verified": 1}) {
		t.Errorf("non-strict: %d %v", status, res.Labels)
	}
}

func TestReviewOnClosedChanges(t *testing.T) {
	e := newEnv(t, Options{})
	ab := e.change("to abandon", "a@example.com")
	if status, body := e.review(ab.ID, "current", map[string]any{"labels": map[string]int{"Verified": 1}}); status != 200 {
		t.Fatalf("vote: %d %s", status, body)
	}
	if err := e.s.Abandon(ab.Change, "a@example.com", "obsolete"); err != nil {
		t.Fatal(err)
	}
	status, body := e.review(ab.ID, "current", map[string]any{"labels": map[string]int{"Verified": -1}})
	if status != http.StatusConflict || !strings.Contains(string(body), "change is closed") {
		t.Errorf("vote on abandoned: %d %s", status, body)
	}
	if status, _ := e.review(ab.ID, "current", map[string]any{"message": "still here"}); status != 200 {
		t.Errorf("message on abandoned: %d", status)
	}
	// Re-posting an unchanged vote is not a change of votes.
	if status, _ := e.review(ab.ID, "current", map[string]any{"labels": map[string]int{"Verified": 1}}); status != 200 {
		t.Errorf("same vote on abandoned: %d", status)
	}

	m := e.change("to merge", "a@example.com")
	if status, _ := e.review(m.ID, "current", map[string]any{"labels": map[string]int{"Code-Review": 1}}); status != 200 {
		t.Fatal(status)
	}
	if _, err := e.s.Merge(m.Change, "a@example.com"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		labels map[string]int
		status int
		text   string
	}{
		{map[string]int{"Verified": 1}, 409, "Voting on labels disallowed after submit: Verified"},
		{map[string]int{"Code-Review": -1}, 409, "Cannot reduce vote on labels for closed change: Code-Review"},
		{map[string]int{"Code-Review": 2}, 200, ""},
	} {
		status, body := e.review(m.ID, "current", map[string]any{"labels": tc.labels})
		if status != tc.status || !strings.Contains(string(body), tc.text) {
			t.Errorf("%v on merged: %d %s", tc.labels, status, body)
		}
	}
	if err := e.s.SetVote(m.Change, "x@example.com", "Presubmit-Ready", 1); err == nil {
		t.Error("SetVote on merged change for a non post-submit label succeeded")
	}
}

func TestBranchesAndCommits(t *testing.T) {
	e := newEnv(t, Options{})
	enc := url.PathEscape(testProject)
	var br BranchInfo
	e.getJSON("/a/projects/"+enc+"/branches/main", &br)
	head, _ := e.s.BranchHead(testProject, "main")
	if br.Ref != "refs/heads/main" || br.Revision != head || len(head) != 40 {
		t.Errorf("branch: %+v head %s", br, head)
	}
	e.getJSON("/a/projects/"+enc+"/branches/refs%2Fheads%2Fmain", &br)
	if br.Revision != head {
		t.Errorf("full ref: %+v", br)
	}

	e.clock.Advance(time.Hour)
	author := time.Date(2024, 4, 30, 8, 0, 0, 0, time.UTC)
	next, err := e.s.MoveBranch(testProject, "main", CommitSpec{
		Subject: "Roll deps", Body: "Details.", AuthorName: "Ann", AuthorEmail: "ann@example.com",
		CommitterName: "Bot", CommitterEmail: "bot@example.com", AuthorTime: author,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.getJSON("/a/projects/"+enc+"/branches/main", &br)
	if br.Revision != next || next == head {
		t.Errorf("moved branch: %+v", br)
	}
	var ci CommitInfo
	e.getJSON("/a/projects/"+enc+"/commits/"+next, &ci)
	if ci.Commit != next || ci.Subject != "Roll deps" || ci.Message != "Roll deps\n\nDetails.\n" ||
		len(ci.Parents) != 1 || ci.Parents[0].Commit != head || ci.Parents[0].Subject != "Initial commit" ||
		ci.Author.Name != "Ann" || ci.Author.Email != "ann@example.com" || !ci.Author.Date.Equal(author) ||
		ci.Committer.Name != "Bot" || !ci.Committer.Date.Equal(author) {
		t.Errorf("commit: %+v %+v %+v", ci, ci.Author, ci.Committer)
	}

	// A patch set's commit is readable too, via the project and the change.
	ps := e.change("change", "a@example.com")
	e.getJSON("/a/projects/"+enc+"/commits/"+ps.Revision, &ci)
	if ci.Parents[0].Commit != next {
		t.Errorf("patch set parent: %+v", ci.Parents)
	}
	e.getJSON(fmt.Sprintf("/a/changes/%d/revisions/current/commit", ps.Change), &ci)
	if ci.Commit != ps.Revision {
		t.Errorf("revision commit: %+v", ci)
	}

	for _, path := range []string{
		"/a/projects/nope/branches/main",
		"/a/projects/" + enc + "/branches/nope",
		"/a/projects/" + enc + "/commits/" + strings.Repeat("0", 40),
		"/a/projects/nope/commits/" + next,
		"/a/projects/" + url.PathEscape(testProject) + "/branches/refs%2Fheads%2Fnope",
	} {
		status, _, body := e.do(http.MethodGet, path, "", nil)
		if status != http.StatusNotFound || !strings.HasPrefix(string(body), "Not found: ") {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
	if _, err := e.s.CreateBranch(testProject, "main", CommitSpec{}); err == nil {
		t.Error("duplicate branch created")
	}
}

func TestPatchSetsVotesAndMerge(t *testing.T) {
	e := newEnv(t, Options{FirstChangeNumber: 1234})
	ps1 := e.change("Feature", "alice@example.com")
	if ps1.Change != 1234 || ps1.Ref != "refs/changes/34/1234/1" || ps1.Number != 1 {
		t.Errorf("ps1: %+v", ps1)
	}
	for _, v := range []struct{ label, email string }{{"Code-Review", "r@example.com"}, {"Presubmit-Ready", "r@example.com"}} {
		if err := e.s.SetVote(ps1.Change, v.email, v.label, 1); err != nil {
			t.Fatal(err)
		}
	}
	ps2, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{Kind: KindTrivialRebase})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := e.s.Change(ps1.Change, "LABELS")
	if c.Labels["Code-Review"].Recommended == nil || c.Labels["Presubmit-Ready"].Approved != nil {
		t.Errorf("after trivial rebase: %+v", c.Labels)
	}
	if ps2.Revision == ps1.Revision || ps2.Ref != "refs/changes/34/1234/2" {
		t.Errorf("ps2: %+v", ps2)
	}
	if _, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{}); err != nil {
		t.Fatal(err)
	}
	c, _ = e.s.Change(ps1.Change, "LABELS")
	if c.Labels["Code-Review"].Recommended != nil {
		t.Errorf("after rework: %+v", c.Labels)
	}

	// The branch moved: merging makes a merge commit on the new head.
	head, _ := e.s.MoveBranch(testProject, "main", CommitSpec{Subject: "other"})
	newHead, err := e.s.Merge(ps1.Change, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := e.s.BranchHead(testProject, "main")
	if got != newHead || newHead == head {
		t.Errorf("merge head %s, branch %s", newHead, got)
	}
	c, _ = e.s.Change(ps1.Change, "DETAILED_ACCOUNTS")
	if c.Status != StatusMerged || c.Submitted == nil || c.Submitter == nil || c.Submitter.Email != "alice@example.com" {
		t.Errorf("merged change: %+v", c)
	}
	if _, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{}); err == nil {
		t.Error("upload to merged change succeeded")
	}
	// A change whose parent is the head fast-forwards.
	ff := e.change("ff", "a@example.com")
	if h, err := e.s.Merge(ff.Change, "a@example.com"); err != nil || h != ff.Revision {
		t.Errorf("fast-forward: %s %v", h, err)
	}
	if err := e.s.SetVote(ff.Change, "r@example.com", "Nope", 1); err == nil {
		t.Error("unknown label accepted")
	}
}
