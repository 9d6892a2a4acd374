package gerrit

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// The git side of the fake: every project is a bare repository under the
// git root (Options.GitDir or a temporary directory), and every commit the
// fake reports is a real commit there, built with plumbing commands
// (hash-object, mktree, commit-tree, update-ref) and no working tree. The
// git CLI runs with a clean environment: no system or global config, HOME
// set to the git root, no terminal prompts. Commands run under s.mu: they
// are short, and they keep the repositories and the in-memory state in step.

// zeroOID is the old value update-ref needs to create a ref that must not
// exist yet.
const zeroOID = "0000000000000000000000000000000000000000"

// errGitClosed is returned by operations that need git after Close removed
// the temporary git root.
var errGitClosed = errors.New("gerrit fake: closed (its temporary git directory was removed)")

// repoConfig is appended to the config of every repository: fetching by
// commit id works for any object (as Gerrit allows for reachable ones),
// nothing is garbage collected behind the fake's back, and pushes are off.
const repoConfig = `[uploadpack]
	allowTipSHA1InWant = true
	allowReachableSHA1InWant = true
	allowAnySHA1InWant = true
[gc]
	auto = 0
[http]
	receivepack = false
`

// treeEntry is one file of a flattened tree, as git ls-tree -r shows it.
type treeEntry struct {
	mode, typ, sha string
}

// flatTree maps a slash-separated path to its entry. A flatTree stored in
// project.trees is never modified; edits work on copies.
type flatTree map[string]treeEntry

// fileEdit writes content at path, or deletes path (a file, or a directory
// with everything under it).
type fileEdit struct {
	path    string
	content string
	del     bool
}

// validPath checks a file path of Files or Delete: relative, slash
// separated, without empty, "." or ".." components or a ".git" component,
// without backslashes or control characters.
func validPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty file path: %w", ErrInvalid)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("file path %q is absolute: %w", p, ErrInvalid)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("file path %q has a control character or backslash: %w", p, ErrInvalid)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("file path %q has an empty component: %w", p, ErrInvalid)
		case seg == "." || seg == "..":
			return fmt.Errorf("file path %q has a %q component: %w", p, seg, ErrInvalid)
		case strings.EqualFold(seg, ".git"):
			return fmt.Errorf("file path %q has a .git component: %w", p, ErrInvalid)
		}
	}
	return nil
}

// validProjectName checks a new project's name, which is also the path of
// its repository under the git root (plus ".git"): a valid file path
// whose components do not end with ".git" (so no repository nests in
// another).
func validProjectName(name string) error {
	if err := validPath(name); err != nil {
		return fmt.Errorf("project name %q: %w", name, err)
	}
	for _, seg := range strings.Split(name, "/") {
		if strings.HasSuffix(seg, ".git") {
			return fmt.Errorf("project name %q has a component ending with .git: %w", name, ErrInvalid)
		}
	}
	return nil
}

// editsOf validates Files and Delete and returns the edits in the order
// they apply: deletions first, then writes, each sorted by path.
func editsOf(files map[string]string, del []string) ([]fileEdit, error) {
	var out []fileEdit
	dels := append([]string(nil), del...)
	sort.Strings(dels)
	for _, p := range dels {
		if err := validPath(p); err != nil {
			return nil, err
		}
		out = append(out, fileEdit{path: p, del: true})
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := validPath(p); err != nil {
			return nil, err
		}
		out = append(out, fileEdit{path: p, content: files[p]})
	}
	return out, nil
}

// mergeDiff returns diff (a change's cumulative edits, by path) updated by
// edits: a deletion replaces every earlier edit at or under its path.
func mergeDiff(diff map[string]fileEdit, edits []fileEdit) map[string]fileEdit {
	out := make(map[string]fileEdit, len(diff)+len(edits))
	for k, v := range diff {
		out[k] = v
	}
	for _, e := range edits {
		if e.del {
			for k := range out {
				if k == e.path || strings.HasPrefix(k, e.path+"/") {
					delete(out, k)
				}
			}
		}
		out[e.path] = e
	}
	return out
}

// diffEdits orders a change's cumulative edits for applying: deletions
// first, then writes.
func diffEdits(diff map[string]fileEdit) []fileEdit {
	out := make([]fileEdit, 0, len(diff))
	for _, e := range diff {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].del != out[j].del {
			return out[i].del
		}
		return out[i].path < out[j].path
	})
	return out
}

// isCrud reports the bytes git strips from both ends of a name or e-mail
// in an ident line (ident.c).
func isCrud(c byte) bool {
	return c <= 32 || strings.IndexByte(".,:;<>\"\\'", c) >= 0
}

// cleanIdent returns a name or e-mail as git records it: crud stripped
// from both ends, and '\n', '<' and '>' removed.
func cleanIdent(s string) string {
	i, j := 0, len(s)
	for i < j && isCrud(s[i]) {
		i++
	}
	for j > i && isCrud(s[j-1]) {
		j--
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '<' || r == '>' {
			return -1
		}
		return r
	}, s[i:j])
}

// gitRootLocked returns the directory holding the repositories, creating
// it on first use.
func (s *Server) gitRootLocked() (string, error) {
	if s.gitErr != nil {
		return "", s.gitErr
	}
	if s.gitRoot != "" {
		return s.gitRoot, nil
	}
	bin, err := exec.LookPath("git")
	if err != nil {
		return "", fmt.Errorf("gerrit fake needs the git CLI: %w", err)
	}
	root := s.gitDirOpt
	if root == "" {
		if root, err = os.MkdirTemp("", "fakegerrit-git-"); err != nil {
			return "", fmt.Errorf("gerrit fake: git directory: %w", err)
		}
		s.gitOwned = true
		// A Server dropped without Close still cleans up when collected.
		runtime.AddCleanup(s, func(dir string) { os.RemoveAll(dir) }, root)
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("gerrit fake: git directory: %w", err)
	}
	if root, err = filepath.Abs(root); err != nil {
		return "", fmt.Errorf("gerrit fake: git directory: %w", err)
	}
	s.gitBin, s.gitRoot = bin, root
	return root, nil
}

// gitEnv is the whole environment of every git command the fake runs.
func (s *Server) gitEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + path,
		"HOME=" + s.gitRoot,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
	}
}

// gitLocked runs git on the repository dir (GIT_DIR=dir; none when dir is
// the git root) with stdin and extra environment, and returns its standard
// output. A failure carries git's standard error and wraps the
// *exec.ExitError.
func (s *Server) gitLocked(dir string, stdin []byte, env []string, args ...string) ([]byte, error) {
	root, err := s.gitRootLocked()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.gitBin, args...)
	cmd.Dir = dir
	cmd.Env = s.gitEnv()
	if dir != root {
		cmd.Env = append(cmd.Env, "GIT_DIR="+dir)
	}
	cmd.Env = append(cmd.Env, env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// repoDir is where project name's bare repository lives.
func repoDir(root, name string) string {
	return filepath.Join(root, filepath.FromSlash(name)+".git")
}

// initRepoLocked creates p's bare repository with HEAD on branch. A
// repository left in its place by an earlier fake (or a failed attempt) is
// replaced; any other existing path is ErrConflict.
func (s *Server) initRepoLocked(p *project, branch string) error {
	root, err := s.gitRootLocked()
	if err != nil {
		return err
	}
	dir := repoDir(root, p.name)
	if _, err := os.Stat(dir); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
			return fmt.Errorf("%s exists and is not a git repository: %w", dir, ErrConflict)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if _, err := s.gitLocked(root, nil, nil, "init", "--bare", "--quiet", "--template=", "--initial-branch="+branch, dir); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(repoConfig)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	p.dir = dir
	return nil
}

// checkBranchNameLocked validates a short branch name as git does.
func (s *Server) checkBranchNameLocked(branch string) error {
	root, err := s.gitRootLocked()
	if err != nil {
		return err
	}
	if _, err := s.gitLocked(root, nil, nil, "check-ref-format", "refs/heads/"+branch); err != nil {
		return fmt.Errorf("bad branch name %q: %w", branch, ErrInvalid)
	}
	return nil
}

// blobLocked writes content as a blob (once per project) and returns its id.
func (s *Server) blobLocked(p *project, content string) (string, error) {
	sum := sha1.Sum([]byte(fmt.Sprintf("blob %d\x00%s", len(content), content)))
	id := hex.EncodeToString(sum[:])
	if p.blobs[id] {
		return id, nil
	}
	out, err := s.gitLocked(p.dir, []byte(content), nil, "hash-object", "-w", "--no-filters", "--stdin")
	if err != nil {
		return "", err
	}
	id = strings.TrimSpace(string(out))
	p.blobs[id] = true
	return id, nil
}

// treeOfLocked returns the flattened tree of a commit of p ("" means no
// commit: the empty tree).
func (s *Server) treeOfLocked(p *project, sha string) (flatTree, error) {
	if sha == "" {
		return flatTree{}, nil
	}
	cm := p.commits[sha]
	if cm == nil {
		return nil, fmt.Errorf("commit %s: %w", sha, ErrNotFound)
	}
	if t, ok := p.trees[cm.tree]; ok {
		return t, nil
	}
	out, err := s.gitLocked(p.dir, nil, nil, "ls-tree", "-r", "-z", cm.tree)
	if err != nil {
		return nil, err
	}
	t := flatTree{}
	for _, rec := range strings.Split(string(out), "\x00") {
		meta, path, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		f := strings.Fields(meta)
		if len(f) != 3 {
			return nil, fmt.Errorf("git ls-tree: bad line %q", rec)
		}
		t[path] = treeEntry{mode: f[0], typ: f[1], sha: f[2]}
	}
	p.trees[cm.tree] = t
	return t, nil
}

// applyEditsLocked returns a copy of base with edits applied, writing the
// blobs.
func (s *Server) applyEditsLocked(p *project, base flatTree, edits []fileEdit) (flatTree, error) {
	t := make(flatTree, len(base)+len(edits))
	for k, v := range base {
		t[k] = v
	}
	for _, e := range edits {
		if e.del {
			for k := range t {
				if k == e.path || strings.HasPrefix(k, e.path+"/") {
					delete(t, k)
				}
			}
			continue
		}
		id, err := s.blobLocked(p, e.content)
		if err != nil {
			return nil, err
		}
		t[e.path] = treeEntry{mode: "100644", typ: "blob", sha: id}
	}
	return t, nil
}

type treeDir struct {
	files map[string]treeEntry
	dirs  map[string]*treeDir
}

func newTreeDir() *treeDir {
	return &treeDir{files: map[string]treeEntry{}, dirs: map[string]*treeDir{}}
}

// writeTreeLocked writes a flattened tree with git mktree, one call per
// directory whose listing the project has not written before, and returns
// the root tree's id. A path that is both a file and a directory is
// ErrInvalid.
func (s *Server) writeTreeLocked(p *project, t flatTree) (string, error) {
	root := newTreeDir()
	for path, e := range t {
		d := root
		segs := strings.Split(path, "/")
		for i, seg := range segs[:len(segs)-1] {
			if _, ok := d.files[seg]; ok {
				return "", fmt.Errorf("path %s is a file, so %s cannot be written: %w", strings.Join(segs[:i+1], "/"), path, ErrInvalid)
			}
			sub := d.dirs[seg]
			if sub == nil {
				sub = newTreeDir()
				d.dirs[seg] = sub
			}
			d = sub
		}
		name := segs[len(segs)-1]
		if _, ok := d.dirs[name]; ok {
			return "", fmt.Errorf("path %s is a directory, so it cannot be a file: %w", path, ErrInvalid)
		}
		d.files[name] = e
	}
	id, err := s.mktreeLocked(p, root)
	if err != nil {
		return "", err
	}
	p.trees[id] = t
	return id, nil
}

func (s *Server) mktreeLocked(p *project, d *treeDir) (string, error) {
	names := make([]string, 0, len(d.files)+len(d.dirs))
	for n := range d.files {
		names = append(names, n)
	}
	for n := range d.dirs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		if sub, ok := d.dirs[n]; ok {
			id, err := s.mktreeLocked(p, sub)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "040000 tree %s\t%s\x00", id, n)
			continue
		}
		e := d.files[n]
		fmt.Fprintf(&b, "%s %s %s\t%s\x00", e.mode, e.typ, e.sha, n)
	}
	key := b.String()
	if id, ok := p.mktree[key]; ok {
		return id, nil
	}
	out, err := s.gitLocked(p.dir, []byte(key), nil, "mktree", "-z")
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(out))
	p.mktree[key] = id
	return id, nil
}

// treeWithLocked writes the tree of commit base with edits applied.
func (s *Server) treeWithLocked(p *project, base string, edits []fileEdit) (string, error) {
	t, err := s.treeOfLocked(p, base)
	if err != nil {
		return "", err
	}
	if t, err = s.applyEditsLocked(p, t, edits); err != nil {
		return "", err
	}
	return s.writeTreeLocked(p, t)
}

func gitDate(t time.Time) string { return fmt.Sprintf("@%d +0000", t.Unix()) }

// newCommitLocked creates a commit of tree with these parents in p's
// repository (no ref moves) and records it. Defaults: author "A U Thor"
// <author@example.com>, committer the author, author time the clock's
// now, commit time the author time. Names and e-mails are cleaned as git
// cleans them, times are whole seconds in UTC. When the commit would be
// identical to one the project already has (the clock stood still), its
// commit time moves on a second at a time until it is new.
func (s *Server) newCommitLocked(p *project, parents []string, tree string, c CommitSpec, footer string) (*commit, error) {
	if strings.ContainsAny(c.Subject, "\r\n") {
		return nil, fmt.Errorf("subject %q has a line break: %w", c.Subject, ErrInvalid)
	}
	now := s.now()
	c.AuthorName, c.AuthorEmail = cleanIdent(c.AuthorName), cleanIdent(c.AuthorEmail)
	c.CommitterName, c.CommitterEmail = cleanIdent(c.CommitterName), cleanIdent(c.CommitterEmail)
	if c.AuthorName == "" {
		c.AuthorName = "A U Thor"
	}
	if c.AuthorEmail == "" {
		c.AuthorEmail = "author@example.com"
	}
	if c.CommitterName == "" {
		c.CommitterName = c.AuthorName
	}
	if c.CommitterEmail == "" {
		c.CommitterEmail = c.AuthorEmail
	}
	if c.AuthorTime.IsZero() {
		c.AuthorTime = now
	}
	if c.CommitTime.IsZero() {
		c.CommitTime = c.AuthorTime
	}
	author := c.AuthorTime.UTC().Truncate(time.Second)
	committed := c.CommitTime.UTC().Truncate(time.Second)
	msg := c.Subject + "\n"
	if c.Body != "" {
		msg += "\n" + strings.TrimRight(c.Body, "\n") + "\n"
	}
	if footer != "" {
		msg += "\n" + footer + "\n"
	}
	args := []string{"commit-tree", tree}
	for _, pa := range parents {
		args = append(args, "-p", pa)
	}
	for try := 0; ; try++ {
		env := []string{
			"GIT_AUTHOR_NAME=" + c.AuthorName, "GIT_AUTHOR_EMAIL=" + c.AuthorEmail, "GIT_AUTHOR_DATE=" + gitDate(author),
			"GIT_COMMITTER_NAME=" + c.CommitterName, "GIT_COMMITTER_EMAIL=" + c.CommitterEmail, "GIT_COMMITTER_DATE=" + gitDate(committed),
		}
		out, err := s.gitLocked(p.dir, []byte(msg), env, args...)
		if err != nil {
			return nil, err
		}
		sha := strings.TrimSpace(string(out))
		if p.commits[sha] != nil && try < 1000 {
			committed = committed.Add(time.Second)
			continue
		}
		cm := &commit{
			sha:       sha,
			tree:      tree,
			parents:   append([]string(nil), parents...),
			author:    person{c.AuthorName, c.AuthorEmail, author},
			committer: person{c.CommitterName, c.CommitterEmail, committed},
			subject:   c.Subject,
			message:   msg,
		}
		p.commits[sha] = cm
		return cm, nil
	}
}

// updateRefLocked moves ref to sha, checking that it pointed to old
// (zeroOID: must not exist).
func (s *Server) updateRefLocked(p *project, ref, sha, old string) error {
	_, err := s.gitLocked(p.dir, nil, nil, "update-ref", "-m", "gerrit fake", ref, sha, old)
	return err
}

// isAncestorLocked tells whether commit anc is desc or one of its
// ancestors, walking the commits the fake recorded.
func isAncestorLocked(p *project, anc, desc string) bool {
	seen := map[string]bool{}
	todo := []string{desc}
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if c == anc {
			return true
		}
		if seen[c] {
			continue
		}
		seen[c] = true
		if cm := p.commits[c]; cm != nil {
			todo = append(todo, cm.parents...)
		}
	}
	return false
}

// mergeTreeLocked merges commits ours and theirs with git merge-tree and
// returns the merged tree, or ErrConflict naming the conflicting paths.
func (s *Server) mergeTreeLocked(p *project, ours, theirs string) (string, error) {
	out, err := s.gitLocked(p.dir, nil, nil, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours, theirs)
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return "", err
	}
	recs := strings.Split(string(out), "\x00")
	if err == nil {
		return strings.TrimSpace(recs[0]), nil
	}
	var paths []string
	seen := map[string]bool{}
	for _, r := range recs[1:] {
		if r == "" {
			break
		}
		if !seen[r] {
			seen[r] = true
			paths = append(paths, r)
		}
	}
	return "", fmt.Errorf("merge conflict in %s: %w", strings.Join(paths, ", "), ErrConflict)
}

// GitDir returns the directory holding the project repositories
// ("PROJECT.git", bare), creating it if needed, or "" when that fails or
// Close removed it.
func (s *Server) GitDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := s.gitRootLocked()
	if err != nil {
		return ""
	}
	return root
}

// RepoDir returns the path of a project's bare repository, for tests that
// want to inspect it with git directly. An unknown project is ErrNotFound.
func (s *Server) RepoDir(projectName string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	if p == nil {
		return "", fmt.Errorf("project %s: %w", projectName, ErrNotFound)
	}
	return p.dir, nil
}

// closeGitLocked removes the git root if the fake created it.
func (s *Server) closeGitLocked() {
	if s.gitOwned && s.gitErr == nil {
		os.RemoveAll(s.gitRoot)
		s.gitErr = errGitClosed
	}
}
