package gerrit

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const gitProject = "demo/hello"

// gitClient is a working repository driven with the real git CLI, with a
// clean environment (no user config, no prompts).
type gitClient struct {
	t   *testing.T
	dir string
	env []string
}

func newGitClient(t *testing.T) *gitClient {
	t.Helper()
	home := t.TempDir()
	dir := filepath.Join(home, "work")
	g := &gitClient{t: t, dir: dir, env: []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=",
		"GIT_AUTHOR_NAME=Worker", "GIT_AUTHOR_EMAIL=worker@example.com",
		"GIT_COMMITTER_NAME=Worker", "GIT_COMMITTER_EMAIL=worker@example.com",
	}}
	g.run("init", "-q", "-b", "work", dir)
	return g
}

// try runs git in the client's repository and returns its combined output.
func (g *gitClient) try(args ...string) (string, error) {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = filepath.Dir(g.dir)
	if _, err := os.Stat(g.dir); err == nil {
		cmd.Dir = g.dir
	}
	cmd.Env = g.env
	out, err := cmd.CombinedOutput()
	return strings.TrimRight(string(out), "\n"), err
}

func (g *gitClient) run(args ...string) string {
	g.t.Helper()
	out, err := g.try(args...)
	if err != nil {
		g.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// files lists the files of a commit.
func (g *gitClient) files(rev string) []string {
	g.t.Helper()
	return strings.Split(g.run("ls-tree", "-r", "--name-only", rev), "\n")
}

// lsRemote maps ref -> sha as the remote advertises them.
func (g *gitClient) lsRemote(remote string, extra ...string) map[string]string {
	g.t.Helper()
	out := g.run(append(append([]string{"ls-remote"}, extra...), remote)...)
	refs := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		sha, ref, ok := strings.Cut(line, "\t")
		if ok {
			refs[ref] = sha
		}
	}
	return refs
}

// gitEnv is a test env with the project gitProject: main holds README.md
// and src/main.c.
func newGitEnv(t *testing.T, opts Options) (*env, string) {
	t.Helper()
	e := newEnv(t, opts)
	head, err := e.s.CreateBranch(gitProject, "main", CommitSpec{
		Subject: "Initial commit", AuthorName: "Ann", AuthorEmail: "ann@example.com",
		Files: map[string]string{"README.md": "hello\n", "src/main.c": "int main() { return 0; }\n"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	return e, head
}

func TestGitFetchChangeRefs(t *testing.T) {
	e, head := newGitEnv(t, Options{})
	ps1, err := e.s.CreateChange(ChangeSpec{
		Project: gitProject, Branch: "main", Subject: "Rework main", Body: "Longer text.", OwnerEmail: "dev@example.com", OwnerName: "Dev",
		Files:  map[string]string{"src/main.c": "int main() { return 1; }\n", "docs/a.txt": "A\n"},
		Delete: []string{"README.md"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	ps2, err := e.s.UploadPatchset(ps1.Change, PatchSetSpec{Files: map[string]string{"docs/b.txt": "B\n"}})
	if err != nil {
		t.Fatal(err)
	}
	if ps2.Ref != "refs/changes/01/1/2" {
		t.Fatalf("ref %s", ps2.Ref)
	}

	g := newGitClient(t)
	remote := e.url + "/" + gitProject
	g.run("fetch", "-q", remote, ps2.Ref)
	if got := g.run("rev-parse", "FETCH_HEAD"); got != ps2.Revision {
		t.Errorf("fetched %s, REST says %s", got, ps2.Revision)
	}
	// Patch set 2 keeps what patch set 1 did and adds its own file.
	if got, want := g.files("FETCH_HEAD"), []string{"docs/a.txt", "docs/b.txt", "src/main.c"}; !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	if got := g.run("show", "FETCH_HEAD:src/main.c"); got != "int main() { return 1; }" {
		t.Errorf("src/main.c = %q", got)
	}
	if got := g.run("rev-parse", "FETCH_HEAD^"); got != head {
		t.Errorf("parent %s, branch head %s", got, head)
	}
	msg := g.run("log", "-1", "--format=%B", "FETCH_HEAD")
	if want := "Rework main\n\nLonger text.\n\nChange-Id: " + ps1.ChangeID; msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	// Dates follow the fake clock: patch set 2 keeps patch set 1's author
	// date and is committed a minute later.
	dates := g.run("log", "-1", "--format=%an <%ae> %at|%cn <%ce> %ct", "FETCH_HEAD")
	want := fmt.Sprintf("Dev <dev@example.com> %d|Dev <dev@example.com> %d", t0.Add(time.Minute).Unix(), t0.Add(2*time.Minute).Unix())
	if dates != want {
		t.Errorf("idents %q, want %q", dates, want)
	}

	// Patch set 1 by ref, and any commit by id.
	g.run("fetch", "-q", remote, ps1.Ref)
	if got := g.files("FETCH_HEAD"); !slices.Equal(got, []string{"docs/a.txt", "src/main.c"}) {
		t.Errorf("patch set 1 files %q", got)
	}
	g2 := newGitClient(t)
	g2.run("fetch", "-q", remote, ps1.Revision)
	if got := g2.run("rev-parse", "FETCH_HEAD"); got != ps1.Revision {
		t.Errorf("fetch by id: %s", got)
	}

	// The REST API reports the real commits.
	var ci CommitInfo
	e.getJSON(fmt.Sprintf("/a/changes/%d/revisions/current/commit", ps1.Change), &ci)
	raw := g.run("cat-file", "commit", ps2.Revision)
	_, body, _ := strings.Cut(raw, "\n\n")
	if ci.Commit != ps2.Revision || ci.Message != body+"\n" || ci.Subject != "Rework main" ||
		len(ci.Parents) != 1 || ci.Parents[0].Commit != head || ci.Parents[0].Subject != "Initial commit" ||
		!ci.Author.Date.Equal(t0.Add(time.Minute)) || !ci.Committer.Date.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("commit info %+v %+v %+v; git:\n%s", ci, ci.Author, ci.Committer, raw)
	}
}

func TestGitRefsMatchREST(t *testing.T) {
	e, _ := newGitEnv(t, Options{FirstChangeNumber: 1234})
	a, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "A", OwnerEmail: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "B on A", OwnerEmail: "b@example.com", Parent: a.Revision})
	if err != nil {
		t.Fatal(err)
	}
	// Same clock, nothing changed: still a new commit.
	a2, err := e.s.UploadPatchset(a.Change, PatchSetSpec{Kind: KindNoChange})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.CreateBranch(gitProject, "release/1.0", CommitSpec{}); err != nil {
		t.Fatal(err)
	}
	if a2.Revision == a.Revision {
		t.Error("a NO_CHANGE patch set at the same time has the same commit")
	}

	g := newGitClient(t)
	remote := e.url + "/" + gitProject
	for _, extra := range [][]string{nil, {"-c", "protocol.version=0"}} {
		args := append(extra, "ls-remote", remote)
		out := g.run(args...)
		refs := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			sha, ref, _ := strings.Cut(line, "\t")
			refs[ref] = sha
		}
		main, _ := e.s.BranchHead(gitProject, "main")
		rel, _ := e.s.BranchHead(gitProject, "release/1.0")
		want := map[string]string{
			"HEAD": main, "refs/heads/main": main, "refs/heads/release/1.0": rel,
			"refs/changes/34/1234/1": a.Revision, "refs/changes/34/1234/2": a2.Revision, "refs/changes/35/1235/1": b.Revision,
		}
		for ref, sha := range want {
			if refs[ref] != sha {
				t.Errorf("%v: %s = %s, want %s (all: %v)", extra, ref, refs[ref], sha, refs)
			}
		}
	}
	// Every revision the REST API reports resolves in git to itself, with
	// the parents, subject and idents the REST API reports.
	g.run("fetch", "-q", remote, "+refs/*:refs/remotes/fake/*")
	enc := url.PathEscape(gitProject)
	for _, num := range []int{a.Change, b.Change} {
		var ch ChangeInfo
		e.getJSON(fmt.Sprintf("/a/changes/%d?o=ALL_REVISIONS&o=ALL_COMMITS", num), &ch)
		for sha, ri := range ch.Revisions {
			if got := g.run("rev-parse", "refs/remotes/fake/"+strings.TrimPrefix(ri.Ref, "refs/")); got != sha {
				t.Errorf("%s: git %s, REST %s", ri.Ref, got, sha)
			}
			var ci CommitInfo
			e.getJSON("/a/projects/"+enc+"/commits/"+sha, &ci)
			gitInfo := g.run("log", "-1", "--format=%P|%s|%an|%ae|%at|%cn|%ce|%ct", sha)
			var parents []string
			for _, p := range ci.Parents {
				parents = append(parents, p.Commit)
			}
			restInfo := strings.Join([]string{strings.Join(parents, " "), ci.Subject,
				ci.Author.Name, ci.Author.Email, strconv.FormatInt(ci.Author.Date.Unix(), 10),
				ci.Committer.Name, ci.Committer.Email, strconv.FormatInt(ci.Committer.Date.Unix(), 10)}, "|")
			if gitInfo != restInfo {
				t.Errorf("%s: git %q, REST %q", sha, gitInfo, restInfo)
			}
		}
	}
	var br BranchInfo
	e.getJSON("/a/projects/"+enc+"/branches/release%2F1.0", &br)
	if got := g.run("rev-parse", "refs/remotes/fake/heads/release/1.0"); br.Revision != got {
		t.Errorf("branch: REST %s, git %s", br.Revision, got)
	}
	// B is stacked on A.
	if got := g.run("rev-parse", b.Revision+"^"); got != a.Revision {
		t.Errorf("B's parent %s, want %s", got, a.Revision)
	}
	// Nothing the fake wrote is broken.
	dir, err := e.s.RepoDir(gitProject)
	if err != nil {
		t.Fatal(err)
	}
	g.run("--git-dir="+dir, "fsck", "--strict", "--no-progress")
}

func TestGitMoveBranchAndMerge(t *testing.T) {
	e, head := newGitEnv(t, Options{})
	clean, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "Add feature", OwnerEmail: "dev@example.com",
		Files: map[string]string{"src/feature.c": "void feature(void) {}\n"}})
	if err != nil {
		t.Fatal(err)
	}
	conflicting, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "Edit README", OwnerEmail: "dev@example.com",
		Files: map[string]string{"README.md": "hello from the change\n"}})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	moved, err := e.s.MoveBranch(gitProject, "main", CommitSpec{Subject: "Edit README upstream",
		Files: map[string]string{"README.md": "hello upstream\n"}})
	if err != nil {
		t.Fatal(err)
	}
	g := newGitClient(t)
	remote := e.url + "/" + gitProject
	if refs := g.lsRemote(remote); refs["refs/heads/main"] != moved {
		t.Fatalf("ls-remote main = %s, want %s", refs["refs/heads/main"], moved)
	}

	// A worker merges each change onto the moved branch, as against Gerrit.
	g.run("fetch", "-q", remote, "main")
	g.run("checkout", "-q", "-B", "work", "FETCH_HEAD")
	if got := g.run("rev-parse", "HEAD^"); got != head {
		t.Errorf("moved branch's parent %s, want %s", got, head)
	}
	g.run("fetch", "-q", remote, clean.Ref)
	g.run("merge", "-q", "--no-edit", "FETCH_HEAD")
	if got := g.files("HEAD"); !slices.Equal(got, []string{"README.md", "src/feature.c", "src/main.c"}) {
		t.Errorf("merged files %q", got)
	}
	if got := g.run("show", "HEAD:README.md"); got != "hello upstream" {
		t.Errorf("README.md = %q", got)
	}
	g.run("fetch", "-q", remote, conflicting.Ref)
	if out, err := g.try("merge", "--no-edit", "FETCH_HEAD"); err == nil || !strings.Contains(out, "CONFLICT") {
		t.Errorf("conflicting merge: %v\n%s", err, out)
	}

	// Submitting: a conflict leaves the change open; a clean change lands
	// as a merge commit of the head and the patch set.
	if _, err := e.s.Merge(conflicting.Change, "lead@example.com"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "README.md") {
		t.Errorf("merge of a conflicting change: %v", err)
	}
	if c, _ := e.s.Change(conflicting.Change); c.Status != StatusNew {
		t.Errorf("conflicting change is %s", c.Status)
	}
	merged, err := e.s.Merge(clean.Change, "lead@example.com")
	if err != nil {
		t.Fatal(err)
	}
	g2 := newGitClient(t)
	if refs := g2.lsRemote(remote); refs["refs/heads/main"] != merged {
		t.Errorf("ls-remote main = %s, want %s", refs["refs/heads/main"], merged)
	}
	g2.run("fetch", "-q", remote, "main")
	if got := g2.run("log", "-1", "--format=%P|%s|%an", "FETCH_HEAD"); got != moved+" "+clean.Revision+`|Merge "Add feature"|lead` {
		t.Errorf("merge commit %q", got)
	}
	if got := g2.files("FETCH_HEAD"); !slices.Equal(got, []string{"README.md", "src/feature.c", "src/main.c"}) {
		t.Errorf("merged branch files %q", got)
	}
	var ci CommitInfo
	e.getJSON("/a/projects/"+url.PathEscape(gitProject)+"/commits/"+merged, &ci)
	if len(ci.Parents) != 2 || ci.Parents[1].Commit != clean.Revision || ci.Parents[1].Subject != "Add feature" {
		t.Errorf("merge commit info %+v", ci)
	}

	// Rebased onto the new head with the conflict resolved, the
	// conflicting change fast-forwards.
	ps2, err := e.s.UploadPatchset(conflicting.Change, PatchSetSpec{Parent: merged,
		Files: map[string]string{"README.md": "hello upstream and from the change\n"}})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := e.s.Merge(conflicting.Change, "lead@example.com"); err != nil || h != ps2.Revision {
		t.Errorf("fast-forward: %s %v, want %s", h, err, ps2.Revision)
	}
	g2.run("fetch", "-q", remote, "main")
	if got := g2.run("show", "FETCH_HEAD:README.md"); got != "hello upstream and from the change" {
		t.Errorf("README.md after the merges: %q", got)
	}
}

func TestGitAuthPushAndFaults(t *testing.T) {
	e, head := newGitEnv(t, Options{})
	ps, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "x", OwnerEmail: "dev@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.url)
	authed := func(user, pass string) string {
		v := *u
		v.User = url.UserPassword(user, pass)
		return v.String() + "/a/" + gitProject
	}
	g := newGitClient(t)
	if out, err := g.try("fetch", "-q", e.url+"/a/"+gitProject, ps.Ref); err == nil {
		t.Errorf("fetch under /a/ without credentials succeeded: %s", out)
	}
	if out, err := g.try("fetch", "-q", authed(testUser, "wrong"), ps.Ref); err == nil {
		t.Errorf("fetch with a wrong password succeeded: %s", out)
	}
	g.run("fetch", "-q", authed(testUser, testPass), ps.Ref)
	if got := g.run("rev-parse", "FETCH_HEAD"); got != ps.Revision {
		t.Errorf("authenticated fetch: %s", got)
	}
	// The same with the ".git" suffix, and a clone.
	g.run("fetch", "-q", authed(testUser, testPass)+".git", "main")
	clone := newGitClient(t)
	clone.run("clone", "-q", e.url+"/"+gitProject+".git", filepath.Join(filepath.Dir(clone.dir), "clone"))
	cloned := filepath.Join(filepath.Dir(clone.dir), "clone")
	if b, err := os.ReadFile(filepath.Join(cloned, "src", "main.c")); err != nil || string(b) != "int main() { return 0; }\n" {
		t.Errorf("clone: %q %v", b, err)
	}
	if got := clone.run("-C", cloned, "rev-parse", "HEAD"); got != head {
		t.Errorf("cloned HEAD %s, want %s", got, head)
	}

	// Plain HTTP: 401 with a challenge, 403 for pushes.
	for _, tc := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{"GET", "/a/" + gitProject + "/info/refs?service=git-upload-pack", false, 401},
		{"GET", "/a/" + gitProject + "/info/refs?service=git-upload-pack", true, 200},
		{"GET", "/" + gitProject + "/info/refs?service=git-upload-pack", false, 200},
		{"GET", "/" + gitProject + "/info/refs?service=git-receive-pack", false, 403},
		{"GET", "/a/" + gitProject + "/info/refs?service=git-receive-pack", true, 403},
		{"POST", "/a/" + gitProject + "/git-receive-pack", true, 403},
		{"GET", "/" + gitProject + "/info/refs", false, 403},
		{"GET", "/" + gitProject + "/git-upload-pack", false, 405},
		{"GET", "/demo/nope/info/refs?service=git-upload-pack", false, 404},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, nil)
		if tc.auth {
			req.SetBasicAuth(testUser, testPass)
		}
		resp, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s (auth %v): %d, want %d", tc.method, tc.path, tc.auth, resp.StatusCode, tc.want)
		}
		if tc.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without a challenge", tc.path)
		}
		if tc.want == 200 && resp.Header.Get("Content-Type") != "application/x-git-upload-pack-advertisement" {
			t.Errorf("%s: Content-Type %q", tc.path, resp.Header.Get("Content-Type"))
		}
	}
	g.run("checkout", "-q", "FETCH_HEAD")
	if out, err := g.try("push", authed(testUser, testPass), "HEAD:refs/heads/pushed"); err == nil || !strings.Contains(out, "403") {
		t.Errorf("push: %v\n%s", err, out)
	}
	if _, err := e.s.BranchHead(gitProject, "pushed"); err == nil {
		t.Error("pushed branch exists")
	}

	// Faults apply to git paths: the next fetch fails, the one after works.
	e.s.ResetRequestCounts()
	if _, err := e.s.InjectFault(Fault{PathPrefix: "/" + gitProject + "/", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if out, err := g.try("fetch", "-q", authed(testUser, testPass), ps.Ref); err == nil || !strings.Contains(out, "503") {
		t.Errorf("fetch during a fault: %v\n%s", err, out)
	}
	g.run("fetch", "-q", e.url+"/"+gitProject, ps.Ref)
	if _, err := e.s.InjectFault(Fault{PathPrefix: "/" + gitProject + "/git-upload-pack", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	g2 := newGitClient(t)
	if out, err := g2.try("fetch", "-q", e.url+"/"+gitProject, ps.Ref); err == nil || !strings.Contains(out, "500") {
		t.Errorf("fetch with a failing upload-pack: %v\n%s", err, out)
	}
	counts := e.s.RequestCounts()
	if counts[EndpointGitInfoRefs] != 3 || counts[EndpointGitUploadPack] < 2 {
		t.Errorf("request counts %v", counts)
	}
}

func TestGitFilesValidationAndDefaults(t *testing.T) {
	e, head := newGitEnv(t, Options{})
	for _, files := range []map[string]string{
		{"../x": "x"}, {"/etc/passwd": "x"}, {"a//b": "x"}, {"a/./b": "x"}, {".git/config": "x"},
		{"a/.GIT/x": "x"}, {"": "x"}, {"a/": "x"}, {"a\\b": "x"}, {"a\nb": "x"},
		{"src/main.c/x": "x"}, // src/main.c is a file
		{"src": "x"},          // src is a directory
	} {
		if _, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "bad", OwnerEmail: "a@example.com", Files: files}); !errors.Is(err, ErrInvalid) {
			t.Errorf("files %q: %v", files, err)
		}
	}
	if _, err := e.s.MoveBranch(gitProject, "main", CommitSpec{Delete: []string{"../x"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("delete ../x: %v", err)
	}
	for _, name := range []string{"../evil", "/abs", "x.git", "demo/hello.git/x", "a//b", ""} {
		if _, err := e.s.CreateBranch(name, "main", CommitSpec{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("project %q: %v", name, err)
		}
	}
	if _, err := e.s.CreateBranch(gitProject, "bad..name", CommitSpec{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("branch bad..name: %v", err)
	}
	if _, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "two\nlines", OwnerEmail: "a@example.com"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("two-line subject: %v", err)
	}
	if cur, _ := e.s.BranchHead(gitProject, "main"); cur != head {
		t.Errorf("failed calls moved the branch")
	}
	// The failed calls used no change number.
	ps, err := e.s.CreateChange(ChangeSpec{Project: gitProject, Branch: "main", Subject: "Default", OwnerEmail: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Change != 1 {
		t.Errorf("change number %d", ps.Change)
	}
	// Defaults: a file per change (rewritten by a REWORK, kept by other
	// kinds), UPDATE-n.txt per branch move, README.md for a new branch;
	// deleting a directory removes what is under it.
	ps2, _ := e.s.UploadPatchset(ps.Change, PatchSetSpec{})
	ps3, _ := e.s.UploadPatchset(ps.Change, PatchSetSpec{Kind: KindNoCodeChange, Subject: "Default, reworded", Delete: []string{"src"}})
	moved, _ := e.s.MoveBranch(gitProject, "main", CommitSpec{})
	root, _ := e.s.CreateBranch(gitProject, "other", CommitSpec{})
	dir, _ := e.s.RepoDir(gitProject)
	g := newGitClient(t)
	show := func(rev string) string { return g.run("--git-dir="+dir, "show", rev) }
	ls := func(rev string) []string {
		return strings.Split(g.run("--git-dir="+dir, "ls-tree", "-r", "--name-only", rev), "\n")
	}
	if got := show(ps.Revision + ":CHANGE-1.txt"); got != "Change 1, patch set 1: Default" {
		t.Errorf("ps1 default file %q", got)
	}
	if got := show(ps2.Revision + ":CHANGE-1.txt"); got != "Change 1, patch set 2: Default" {
		t.Errorf("ps2 default file %q", got)
	}
	if got := ls(ps3.Revision); !slices.Equal(got, []string{"CHANGE-1.txt", "README.md"}) {
		t.Errorf("ps3 files %q", got)
	}
	if got := show(ps3.Revision + ":CHANGE-1.txt"); got != "Change 1, patch set 2: Default" {
		t.Errorf("ps3 default file %q", got)
	}
	if got := ls(moved); !slices.Equal(got, []string{"README.md", "UPDATE-1.txt", "src/main.c"}) {
		t.Errorf("moved files %q", got)
	}
	if got := ls(root); !slices.Equal(got, []string{"README.md"}) || show(root+":README.md") != "# demo/hello\n\nBranch other." {
		t.Errorf("new branch files %q: %q", got, show(root+":README.md"))
	}
	if got := g.run("--git-dir="+dir, "log", "-1", "--format=%s", ps3.Revision); got != "Default, reworded" {
		t.Errorf("ps3 subject %q", got)
	}
}

func TestGitIdentsAsGitRecordsThem(t *testing.T) {
	e, _ := newGitEnv(t, Options{})
	sha, err := e.s.MoveBranch(gitProject, "main", CommitSpec{
		AuthorName: ` 'Jr. Foo<x>.' `, AuthorEmail: " <ann@example.com>. ",
		CommitterName: "Bot,", CommitterEmail: "bot@example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := e.s.RepoDir(gitProject)
	g := newGitClient(t)
	gitInfo := g.run("--git-dir="+dir, "log", "-1", "--format=%an|%ae|%cn|%ce", sha)
	var ci CommitInfo
	e.getJSON("/projects/"+url.PathEscape(gitProject)+"/commits/"+sha, &ci)
	if rest := strings.Join([]string{ci.Author.Name, ci.Author.Email, ci.Committer.Name, ci.Committer.Email}, "|"); rest != gitInfo || rest != "Jr. Foox|ann@example.com|Bot|bot@example.com" {
		t.Errorf("REST %q, git %q", rest, gitInfo)
	}
}

func TestGitDirOption(t *testing.T) {
	// Default: a temporary directory, removed by Close.
	s := New(Options{})
	if _, err := s.CreateBranch(gitProject, "main", CommitSpec{}); err != nil {
		t.Fatal(err)
	}
	tmp := s.GitDir()
	dir, _ := s.RepoDir(gitProject)
	if dir != filepath.Join(tmp, "demo", "hello.git") {
		t.Errorf("repo dir %s in %s", dir, tmp)
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary git dir after Close: %v", err)
	}
	if _, err := s.MoveBranch(gitProject, "main", CommitSpec{}); err == nil {
		t.Error("MoveBranch after Close succeeded")
	}
	if _, err := s.BranchHead(gitProject, "main"); err != nil {
		t.Errorf("state after Close: %v", err)
	}

	// A configured directory is kept, and a later fake replaces the
	// repository of a project it creates again.
	root := filepath.Join(t.TempDir(), "git")
	s1 := New(Options{GitDir: root})
	first, err := s1.CreateBranch(gitProject, "main", CommitSpec{Subject: "one"})
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	s2 := New(Options{GitDir: root})
	defer s2.Close()
	second, err := s2.CreateBranch(gitProject, "main", CommitSpec{Subject: "two"})
	if err != nil {
		t.Fatal(err)
	}
	g := newGitClient(t)
	repo := filepath.Join(root, "demo", "hello.git")
	if got := g.run("--git-dir="+repo, "rev-parse", "main"); got != second || first == second {
		t.Errorf("main %s, want %s", got, second)
	}
	if _, err := g.try("--git-dir="+repo, "cat-file", "-e", first); err == nil {
		t.Error("the old repository's commit survived")
	}
}

// A chunked request body (git sends one when it exceeds http.postBuffer)
// is served too, although CGI needs a length.
func TestGitChunkedUploadPack(t *testing.T) {
	e, head := newGitEnv(t, Options{})
	pkt := func(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
	body := pkt("want "+head+"\n") + "0000" + pkt("done\n")
	req, _ := http.NewRequest(http.MethodPost, e.url+"/"+gitProject+"/git-upload-pack", io.MultiReader(strings.NewReader(body))) // unknown length: chunked
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(out), "0008NAK\n") || !strings.Contains(string(out), "PACK") {
		t.Errorf("chunked upload-pack: %d %q", resp.StatusCode, out)
	}
}
