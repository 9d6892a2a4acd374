package gerrit

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

type account struct {
	id       int
	name     string
	email    string
	username string
}

func (a *account) info(detailed bool) AccountInfo {
	if a == nil {
		return AccountInfo{}
	}
	if !detailed {
		return AccountInfo{AccountID: a.id}
	}
	return AccountInfo{AccountID: a.id, Name: a.name, Email: a.email, Username: a.username}
}

type commit struct {
	sha       string
	tree      string
	parents   []string
	author    person
	committer person
	subject   string
	message   string // full message, subject included
}

type person struct {
	name, email string
	when        time.Time
}

func (p person) info() *GitPersonInfo {
	return &GitPersonInfo{Name: p.name, Email: p.email, Date: ts(p.when), TZ: 0}
}

type project struct {
	name     string
	dir      string            // the bare repository
	branches map[string]string // full ref -> sha
	commits  map[string]*commit
	trees    map[string]flatTree // tree id -> its files
	mktree   map[string]string   // git mktree input -> tree id
	blobs    map[string]bool     // blob ids written
	updates  int                 // MoveBranch calls, for the default file
}

type approval struct {
	value      int
	date       time.Time
	tag        string
	postSubmit bool
}

type patchSet struct {
	num       int
	sha       string
	ref       string
	uploader  int
	created   time.Time
	kind      string
	approvals map[string]map[int]*approval // canonical label -> account -> vote
}

type message struct {
	id     string
	author int
	date   time.Time
	text   string
	tag    string
	ps     int
}

type change struct {
	num       int
	project   string
	branch    string // short name, without refs/heads/
	changeID  string
	subject   string
	status    string
	owner     int
	created   time.Time
	updated   time.Time
	submitted time.Time
	submitter int
	wip       bool
	patchSets []*patchSet
	messages  []*message
	reviewers map[int]bool
	diff      map[string]fileEdit // what the change does to its parent's tree, by path
}

func (c *change) current() *patchSet { return c.patchSets[len(c.patchSets)-1] }

func (c *change) triplet() string {
	return keyEncode(c.project) + "~" + keyEncode(c.branch) + "~" + c.changeID
}

// keyEncode encodes a project or branch name as Gerrit does in change ids:
// URL path escaping, with "/" as %2F.
func keyEncode(s string) string { return url.PathEscape(s) }

// CommitSpec describes a commit the control API creates.
type CommitSpec struct {
	// Subject is the first line of the message. Default "Update <branch>".
	Subject string `json:"subject,omitempty"`
	// Body is the rest of the message (optional).
	Body string `json:"body,omitempty"`
	// AuthorName and AuthorEmail default to "A U Thor" <author@example.com>.
	AuthorName  string `json:"author_name,omitempty"`
	AuthorEmail string `json:"author_email,omitempty"`
	// CommitterName and CommitterEmail default to the author.
	CommitterName  string `json:"committer_name,omitempty"`
	CommitterEmail string `json:"committer_email,omitempty"`
	// AuthorTime defaults to the clock's now; CommitTime to AuthorTime if
	// that is set, else now.
	AuthorTime time.Time `json:"author_time,omitzero"`
	CommitTime time.Time `json:"commit_time,omitzero"`
	// Files are written into the commit's tree: path ("dir/file.txt",
	// relative, no "." or ".." components) -> content. Delete lists paths
	// (files, or directories with everything under them) removed from the
	// parent's tree; deletions apply before Files, and deleting a missing
	// path is not an error. With neither, the fake writes one small file so
	// every commit changes something: README.md for CreateBranch (a root
	// commit: its tree holds only Files), UPDATE-<n>.txt (n counts the
	// project's MoveBranch calls) for MoveBranch.
	Files  map[string]string `json:"files,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// ChangeSpec describes a change to create.
type ChangeSpec struct {
	Project string `json:"project"`
	// Branch is a short name ("main") or a full ref ("refs/heads/main").
	// It must exist.
	Branch  string `json:"branch"`
	Subject string `json:"subject"`
	// Body is the commit message after the subject (optional); the fake
	// appends the Change-Id footer.
	Body string `json:"body,omitempty"`
	// OwnerEmail is required; OwnerName defaults to the e-mail's local part.
	OwnerEmail string `json:"owner_email"`
	OwnerName  string `json:"owner_name,omitempty"`
	// UploaderEmail and UploaderName describe who uploaded patch set 1.
	// Default: the owner.
	UploaderEmail string `json:"uploader_email,omitempty"`
	UploaderName  string `json:"uploader_name,omitempty"`
	// ChangeID is the Change-Id ("I" + 40 hex). Default: derived from the
	// change number, project, branch and subject.
	ChangeID string `json:"change_id,omitempty"`
	// Parent is the parent commit of patch set 1. Default: the branch head.
	Parent         string `json:"parent,omitempty"`
	WorkInProgress bool   `json:"work_in_progress,omitempty"`
	// Files and Delete are what the change does: patch set 1's tree is
	// its parent's tree with Delete removed and Files written (see
	// CommitSpec). With neither, the change writes CHANGE-<number>.txt.
	Files  map[string]string `json:"files,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// PatchSetSpec describes a new patch set of an existing change.
type PatchSetSpec struct {
	// UploaderEmail and UploaderName default to the change owner.
	UploaderEmail string `json:"uploader_email,omitempty"`
	UploaderName  string `json:"uploader_name,omitempty"`
	// Kind defaults to REWORK; see the Kind constants.
	Kind string `json:"kind,omitempty"`
	// Subject and Body default to the change's current ones.
	Subject string `json:"subject,omitempty"`
	Body    string `json:"body,omitempty"`
	// Parent defaults to the previous patch set's parent, or to the branch
	// head for a TRIVIAL_REBASE.
	Parent string `json:"parent,omitempty"`
	// Files and Delete update what the change does, as amending a commit
	// would: the new patch set's tree is its parent's tree with every
	// earlier patch set's Delete and Files applied, then these (so a
	// rebase keeps the change's files). With neither, a REWORK rewrites
	// CHANGE-<number>.txt (so the code changes) and the other kinds keep
	// the change's files as they were.
	Files  map[string]string `json:"files,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// PatchSet identifies a patch set the control API created.
type PatchSet struct {
	Change   int    `json:"change"`
	ChangeID string `json:"change_id"`
	// ID is the change's "project~branch~Change-Id" triplet.
	ID       string `json:"id"`
	Number   int    `json:"patch_set"`
	Revision string `json:"revision"`
	Ref      string `json:"ref"`
}

// Review is one review accepted by POST .../revisions/{revision}/review.
type Review struct {
	Change   int    `json:"change"`
	ChangeID string `json:"change_id"`
	Project  string `json:"project"`
	Branch   string `json:"branch"`
	PatchSet int    `json:"patch_set"`
	Revision string `json:"revision"`
	// Current tells whether the reviewed patch set was the current one when
	// the review was posted.
	Current   bool   `json:"current"`
	AccountID int    `json:"account_id"`
	Email     string `json:"email"`
	Username  string `json:"username"`
	// Labels are the posted labels (canonical names; unknown labels dropped
	// with strict_labels=false are absent).
	Labels  map[string]int `json:"labels,omitempty"`
	Message string         `json:"message,omitempty"`
	Tag     string         `json:"tag,omitempty"`
	Notify  string         `json:"notify,omitempty"`
	Time    time.Time      `json:"time"`
}

func normBranch(b string) string { return strings.TrimPrefix(b, "refs/heads/") }

func (s *Server) now() time.Time { return s.clock.Now().UTC() }

// accountLocked returns the account with this e-mail, creating it.
func (s *Server) accountLocked(email, name string) *account {
	key := strings.ToLower(strings.TrimSpace(email))
	if id, ok := s.byEmail[key]; ok {
		a := s.accounts[id]
		if a.name == "" && name != "" {
			a.name = name
		}
		return a
	}
	local := key
	if i := strings.IndexByte(key, '@'); i >= 0 {
		local = key[:i]
	}
	if name == "" {
		name = local
	}
	a := &account{id: s.nextAcct, name: name, email: strings.TrimSpace(email), username: local}
	s.nextAcct++
	s.accounts[a.id] = a
	s.byEmail[key] = a.id
	return a
}

// Account returns the account with this e-mail, creating it (with name, or
// the e-mail's local part) on first use. Account ids start at 1000000.
func (s *Server) Account(email, name string) AccountInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accountLocked(email, name).info(true)
}

func hexSum(parts ...string) string {
	h := sha1.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CreateBranch creates branch (short name or refs/heads/...) in project,
// creating the project (and its git repository, with HEAD on this branch)
// if needed, with a new root commit described by c. It returns the commit
// id. An existing branch is ErrConflict; a bad project, branch or file
// name is ErrInvalid.
func (s *Server) CreateBranch(projectName, branch string, c CommitSpec) (string, error) {
	branch = normBranch(branch)
	if projectName == "" || branch == "" {
		return "", fmt.Errorf("create branch: project and branch are required: %w", ErrInvalid)
	}
	edits, err := editsOf(c.Files, c.Delete)
	if err != nil {
		return "", fmt.Errorf("create branch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	ref := "refs/heads/" + branch
	if p != nil {
		if _, ok := p.branches[ref]; ok {
			return "", fmt.Errorf("create branch %s in %s: already exists: %w", branch, projectName, ErrConflict)
		}
	}
	if err := s.checkBranchNameLocked(branch); err != nil {
		return "", fmt.Errorf("create branch: %w", err)
	}
	if p == nil {
		if err := validProjectName(projectName); err != nil {
			return "", fmt.Errorf("create branch: %w", err)
		}
		p = &project{name: projectName, branches: map[string]string{}, commits: map[string]*commit{},
			trees: map[string]flatTree{}, mktree: map[string]string{}, blobs: map[string]bool{}}
		if err := s.initRepoLocked(p, branch); err != nil {
			return "", fmt.Errorf("create branch %s in %s: %w", branch, projectName, err)
		}
	}
	if c.Subject == "" {
		c.Subject = "Initial commit"
	}
	if len(edits) == 0 {
		edits = []fileEdit{{path: "README.md", content: fmt.Sprintf("# %s\n\nBranch %s.\n", projectName, branch)}}
	}
	cm, err := s.commitWithLocked(p, nil, edits, c, "")
	if err == nil {
		err = s.updateRefLocked(p, ref, cm.sha, zeroOID)
	}
	if err != nil {
		return "", fmt.Errorf("create branch %s in %s: %w", branch, projectName, err)
	}
	s.projects[projectName] = p
	p.branches[ref] = cm.sha
	return cm.sha, nil
}

// commitWithLocked writes the tree of parents[0] (none: empty) with edits
// applied and commits it.
func (s *Server) commitWithLocked(p *project, parents []string, edits []fileEdit, c CommitSpec, footer string) (*commit, error) {
	base := ""
	if len(parents) > 0 {
		base = parents[0]
	}
	tree, err := s.treeWithLocked(p, base, edits)
	if err != nil {
		return nil, err
	}
	return s.newCommitLocked(p, parents, tree, c, footer)
}

// MoveBranch adds a commit described by c on top of the branch head (its
// tree: the head's with c.Delete and c.Files applied) and moves the branch
// to it, as a direct push would. It returns the new head.
func (s *Server) MoveBranch(projectName, branch string, c CommitSpec) (string, error) {
	branch = normBranch(branch)
	edits, err := editsOf(c.Files, c.Delete)
	if err != nil {
		return "", fmt.Errorf("move branch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, head, err := s.branchLocked(projectName, branch)
	if err != nil {
		return "", err
	}
	if c.Subject == "" {
		c.Subject = "Update " + branch
	}
	if len(edits) == 0 {
		edits = []fileEdit{{path: fmt.Sprintf("UPDATE-%d.txt", p.updates+1), content: c.Subject + "\n"}}
	}
	ref := "refs/heads/" + branch
	cm, err := s.commitWithLocked(p, []string{head}, edits, c, "")
	if err == nil {
		err = s.updateRefLocked(p, ref, cm.sha, head)
	}
	if err != nil {
		return "", fmt.Errorf("move branch %s of %s: %w", branch, projectName, err)
	}
	p.updates++
	p.branches[ref] = cm.sha
	return cm.sha, nil
}

// BranchHead returns the commit a branch points to.
func (s *Server) BranchHead(projectName, branch string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, head, err := s.branchLocked(projectName, normBranch(branch))
	return head, err
}

func (s *Server) branchLocked(projectName, branch string) (*project, string, error) {
	p := s.projects[projectName]
	if p == nil {
		return nil, "", fmt.Errorf("project %s: %w", projectName, ErrNotFound)
	}
	head, ok := p.branches["refs/heads/"+branch]
	if !ok {
		return nil, "", fmt.Errorf("branch %s of %s: %w", branch, projectName, ErrNotFound)
	}
	return p, head, nil
}

func changeRef(num, ps int) string {
	return fmt.Sprintf("refs/changes/%02d/%d/%d", num%100, num, ps)
}

func validChangeID(id string) bool {
	if len(id) != 41 || id[0] != 'I' {
		return false
	}
	_, err := hex.DecodeString(id[1:])
	return err == nil
}

// defaultChangeFile is what a change writes when its spec gives no files.
func defaultChangeFile(num, ps int, subject string) fileEdit {
	return fileEdit{path: fmt.Sprintf("CHANGE-%d.txt", num), content: fmt.Sprintf("Change %d, patch set %d: %s\n", num, ps, subject)}
}

// CreateChange creates a change with patch set 1 (a commit on the branch
// head or spec.Parent, at refs/changes/NN/CHANGE/1) and returns it. The
// branch must exist. The owner and uploader accounts are created on first
// use.
func (s *Server) CreateChange(spec ChangeSpec) (PatchSet, error) {
	spec.Branch = normBranch(spec.Branch)
	if spec.Subject == "" || spec.OwnerEmail == "" {
		return PatchSet{}, fmt.Errorf("create change: subject and owner_email are required: %w", ErrInvalid)
	}
	if spec.ChangeID != "" && !validChangeID(spec.ChangeID) {
		return PatchSet{}, fmt.Errorf("create change: bad Change-Id %q: %w", spec.ChangeID, ErrInvalid)
	}
	edits, err := editsOf(spec.Files, spec.Delete)
	if err != nil {
		return PatchSet{}, fmt.Errorf("create change: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, head, err := s.branchLocked(spec.Project, spec.Branch)
	if err != nil {
		return PatchSet{}, fmt.Errorf("create change: %w", err)
	}
	parent := head
	if spec.Parent != "" {
		if p.commits[spec.Parent] == nil {
			return PatchSet{}, fmt.Errorf("create change: parent %s: %w", spec.Parent, ErrNotFound)
		}
		parent = spec.Parent
	}
	num := s.nextNum
	if spec.ChangeID == "" {
		spec.ChangeID = "I" + hexSum("change-id", strconv.Itoa(num), spec.Project, spec.Branch, spec.Subject)
	}
	for _, c := range s.changes {
		if c.changeID == spec.ChangeID && c.project == spec.Project && c.branch == spec.Branch {
			return PatchSet{}, fmt.Errorf("create change: Change-Id %s already used in %s %s: %w",
				spec.ChangeID, spec.Project, spec.Branch, ErrConflict)
		}
	}
	owner := s.accountLocked(spec.OwnerEmail, spec.OwnerName)
	uploader := owner
	if spec.UploaderEmail != "" {
		uploader = s.accountLocked(spec.UploaderEmail, spec.UploaderName)
	}
	if len(edits) == 0 {
		edits = []fileEdit{defaultChangeFile(num, 1, spec.Subject)}
	}
	diff := mergeDiff(nil, edits)
	cm, err := s.commitWithLocked(p, []string{parent}, diffEdits(diff), CommitSpec{
		Subject: spec.Subject, Body: spec.Body,
		AuthorName: owner.name, AuthorEmail: owner.email,
		CommitterName: uploader.name, CommitterEmail: uploader.email,
	}, "Change-Id: "+spec.ChangeID)
	ref := changeRef(num, 1)
	if err == nil {
		err = s.updateRefLocked(p, ref, cm.sha, zeroOID)
	}
	if err != nil {
		return PatchSet{}, fmt.Errorf("create change: %w", err)
	}
	s.nextNum++
	now := s.now()
	c := &change{
		num: num, project: spec.Project, branch: spec.Branch, changeID: spec.ChangeID,
		subject: spec.Subject, status: StatusNew, owner: owner.id, created: now, updated: now,
		wip: spec.WorkInProgress, reviewers: map[int]bool{}, diff: diff,
	}
	ps := &patchSet{num: 1, sha: cm.sha, ref: ref, uploader: uploader.id, created: now,
		kind: KindRework, approvals: map[string]map[int]*approval{}}
	c.patchSets = append(c.patchSets, ps)
	s.changes[num] = c
	s.addMessageLocked(c, uploader.id, "Uploaded patch set 1.", "autogenerated:gerrit:newPatchSet", 1, now)
	return s.patchSetRef(c, ps), nil
}

func (s *Server) patchSetRef(c *change, ps *patchSet) PatchSet {
	return PatchSet{Change: c.num, ChangeID: c.changeID, ID: c.triplet(), Number: ps.num, Revision: ps.sha, Ref: ps.ref}
}

func (s *Server) addMessageLocked(c *change, author int, text, tag string, ps int, now time.Time) {
	s.seq++
	c.messages = append(c.messages, &message{
		id:     hexSum("message", strconv.Itoa(c.num), strconv.Itoa(s.seq)),
		author: author, date: now, text: text, tag: tag, ps: ps,
	})
}

func (s *Server) changeLocked(num int) (*change, error) {
	c := s.changes[num]
	if c == nil {
		return nil, fmt.Errorf("change %d: %w", num, ErrNotFound)
	}
	return c, nil
}

// UploadPatchset adds a new current patch set to an open change (a commit
// at refs/changes/NN/CHANGE/PS; see PatchSetSpec for its parent and tree).
// Votes of the previous patch set are copied for labels whose CopyOnKinds
// contains the new patch set's kind. A closed change is ErrConflict.
func (s *Server) UploadPatchset(num int, spec PatchSetSpec) (PatchSet, error) {
	if spec.Kind == "" {
		spec.Kind = KindRework
	}
	switch spec.Kind {
	case KindRework, KindTrivialRebase, KindMergeFirstParentUpdate, KindNoCodeChange, KindNoChange:
	default:
		return PatchSet{}, fmt.Errorf("upload patch set: bad kind %q: %w", spec.Kind, ErrInvalid)
	}
	edits, err := editsOf(spec.Files, spec.Delete)
	if err != nil {
		return PatchSet{}, fmt.Errorf("upload patch set: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return PatchSet{}, fmt.Errorf("upload patch set: %w", err)
	}
	if c.status != StatusNew {
		return PatchSet{}, fmt.Errorf("upload patch set to change %d: change is closed: %w", num, ErrConflict)
	}
	p := s.projects[c.project]
	prev := c.current()
	prevCommit := p.commits[prev.sha]
	parent := ""
	if len(prevCommit.parents) > 0 {
		parent = prevCommit.parents[0]
	}
	switch {
	case spec.Parent != "":
		if p.commits[spec.Parent] == nil {
			return PatchSet{}, fmt.Errorf("upload patch set: parent %s: %w", spec.Parent, ErrNotFound)
		}
		parent = spec.Parent
	case spec.Kind == KindTrivialRebase:
		parent = p.branches["refs/heads/"+c.branch]
	}
	owner := s.accounts[c.owner]
	uploader := owner
	if spec.UploaderEmail != "" {
		uploader = s.accountLocked(spec.UploaderEmail, spec.UploaderName)
	}
	subject := c.subject
	if spec.Subject != "" {
		subject = spec.Subject
	}
	body := spec.Body
	if body == "" {
		body = commitBody(prevCommit.message)
	}
	n := prev.num + 1
	diff := c.diff
	switch {
	case len(edits) > 0:
		diff = mergeDiff(diff, edits)
	case spec.Kind == KindRework:
		diff = mergeDiff(diff, []fileEdit{defaultChangeFile(num, n, subject)})
	}
	now := s.now()
	cm, err := s.commitWithLocked(p, []string{parent}, diffEdits(diff), CommitSpec{
		Subject: subject, Body: body,
		AuthorName: prevCommit.author.name, AuthorEmail: prevCommit.author.email, AuthorTime: prevCommit.author.when,
		CommitterName: uploader.name, CommitterEmail: uploader.email,
		CommitTime: now,
	}, "Change-Id: "+c.changeID)
	ref := changeRef(num, n)
	if err == nil {
		err = s.updateRefLocked(p, ref, cm.sha, zeroOID)
	}
	if err != nil {
		return PatchSet{}, fmt.Errorf("upload patch set to change %d: %w", num, err)
	}
	c.subject, c.diff = subject, diff
	ps := &patchSet{num: n, sha: cm.sha, ref: ref, uploader: uploader.id, created: now,
		kind: spec.Kind, approvals: map[string]map[int]*approval{}}
	for _, lt := range s.labels {
		if !contains(lt.CopyOnKinds, spec.Kind) {
			continue
		}
		for acct, a := range prev.approvals[lt.Name] {
			if ps.approvals[lt.Name] == nil {
				ps.approvals[lt.Name] = map[int]*approval{}
			}
			cp := *a
			ps.approvals[lt.Name][acct] = &cp
		}
	}
	c.patchSets = append(c.patchSets, ps)
	c.updated = now
	s.addMessageLocked(c, uploader.id, fmt.Sprintf("Uploaded patch set %d.", n), "autogenerated:gerrit:newPatchSet", n, now)
	return s.patchSetRef(c, ps), nil
}

// commitBody returns a message without its subject line and Change-Id footer.
func commitBody(msg string) string {
	_, rest, _ := strings.Cut(msg, "\n")
	rest = strings.TrimLeft(rest, "\n")
	if i := strings.LastIndex(rest, "Change-Id: "); i >= 0 {
		rest = rest[:i]
	}
	return strings.TrimRight(rest, "\n")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// labelDelta is one changed vote.
type labelDelta struct {
	label string
	value int
}

// validateLabelsLocked checks labels against the configuration and returns
// them keyed by canonical name. Unknown labels are an error when strict,
// else dropped.
func (s *Server) validateLabelsLocked(labels map[string]int, strict bool) (map[string]int, error) {
	out := map[string]int{}
	for name, v := range labels {
		lt := s.labelByName[strings.ToLower(name)]
		if lt == nil {
			if strict {
				return nil, fmt.Errorf("label %q is not a configured label: %w", name, ErrInvalid)
			}
			continue
		}
		if v < lt.Min || v > lt.Max {
			return nil, fmt.Errorf("label %q: %d is not a valid value: %w", name, v, ErrInvalid)
		}
		out[lt.Name] = v
	}
	return out, nil
}

// applyVotesLocked records votes (canonical names, validated) of acct on ps
// following Gerrit's rules for closed changes, and returns the changed
// votes in label configuration order.
func (s *Server) applyVotesLocked(c *change, ps *patchSet, acct int, labels map[string]int, tag string, now time.Time) ([]labelDelta, error) {
	var deltas []labelDelta
	var disallowed, reduced []string
	for _, lt := range s.labels {
		v, ok := labels[lt.Name]
		if !ok {
			continue
		}
		prev := 0
		if a := ps.approvals[lt.Name][acct]; a != nil {
			prev = a.value
		}
		if v == prev {
			continue
		}
		deltas = append(deltas, labelDelta{lt.Name, v})
		if !lt.AllowPostSubmit {
			disallowed = append(disallowed, lt.Name)
		}
		if v < prev {
			reduced = append(reduced, lt.Name)
		}
	}
	if len(deltas) > 0 && c.status != StatusNew {
		if c.status != StatusMerged {
			return nil, fmt.Errorf("change is closed: %w", ErrConflict)
		}
		if len(disallowed) > 0 {
			sort.Strings(disallowed)
			return nil, fmt.Errorf("Voting on labels disallowed after submit: %s: %w", strings.Join(disallowed, ", "), ErrConflict)
		}
		if len(reduced) > 0 {
			sort.Strings(reduced)
			return nil, fmt.Errorf("Cannot reduce vote on labels for closed change: %s: %w", strings.Join(reduced, ", "), ErrConflict)
		}
	}
	for _, d := range deltas {
		if d.value == 0 {
			delete(ps.approvals[d.label], acct)
			continue
		}
		if ps.approvals[d.label] == nil {
			ps.approvals[d.label] = map[int]*approval{}
		}
		ps.approvals[d.label][acct] = &approval{value: d.value, date: now, tag: tag, postSubmit: c.status == StatusMerged}
	}
	if len(labels) > 0 {
		c.reviewers[acct] = true
	}
	return deltas, nil
}

// voteMessage formats a change message the way Gerrit does:
// "Patch Set 2: Verified+1 -Code-Review\n\ntext".
func voteMessage(ps int, deltas []labelDelta, text string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Patch Set %d:", ps)
	for _, d := range deltas {
		switch {
		case d.value == 0:
			fmt.Fprintf(&b, " -%s", d.label)
		case d.value > 0:
			fmt.Fprintf(&b, " %s+%d", d.label, d.value)
		default:
			fmt.Fprintf(&b, " %s%d", d.label, d.value)
		}
	}
	if text != "" {
		b.WriteString("\n\n" + text)
	}
	return b.String()
}

// SetVote sets the vote of the account with this e-mail (created on first
// use) on a label of the change's current patch set, as that user voting in
// the UI would; value 0 removes the vote. It adds a change message and
// bumps updated. It is not recorded as a Review. An unknown label or a
// value out of range is ErrInvalid; a vote Gerrit refuses on a closed
// change is ErrConflict.
func (s *Server) SetVote(num int, email, label string, value int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return fmt.Errorf("set vote: %w", err)
	}
	labels, err := s.validateLabelsLocked(map[string]int{label: value}, true)
	if err != nil {
		return fmt.Errorf("set vote: %w", err)
	}
	a := s.accountLocked(email, "")
	now := s.now()
	ps := c.current()
	deltas, err := s.applyVotesLocked(c, ps, a.id, labels, "", now)
	if err != nil {
		return fmt.Errorf("set vote: %w", err)
	}
	if len(deltas) > 0 {
		s.addMessageLocked(c, a.id, voteMessage(ps.num, deltas, ""), "", ps.num, now)
		c.updated = now
	}
	return nil
}

// Abandon abandons an open change on behalf of the account with this
// e-mail, with an optional message. A closed change is ErrConflict.
func (s *Server) Abandon(num int, email, msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return fmt.Errorf("abandon: %w", err)
	}
	if c.status != StatusNew {
		return fmt.Errorf("abandon change %d: change is %s: %w", num, strings.ToLower(c.status), ErrConflict)
	}
	a := s.accountLocked(email, "")
	now := s.now()
	c.status = StatusAbandoned
	c.updated = now
	text := "Abandoned"
	if msg != "" {
		text += "\n\n" + msg
	}
	s.addMessageLocked(c, a.id, text, "autogenerated:gerrit:abandon", c.current().num, now)
	return nil
}

// Restore reopens an abandoned change. Any other state is ErrConflict.
func (s *Server) Restore(num int, email string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if c.status != StatusAbandoned {
		return fmt.Errorf("restore change %d: change is %s: %w", num, strings.ToLower(c.status), ErrConflict)
	}
	a := s.accountLocked(email, "")
	now := s.now()
	c.status = StatusNew
	c.updated = now
	s.addMessageLocked(c, a.id, "Restored", "autogenerated:gerrit:restore", c.current().num, now)
	return nil
}

// Merge submits an open change on behalf of the account with this e-mail
// (no submit requirements are checked), as Gerrit's "merge if necessary"
// submit type: the branch fast-forwards to the current patch set when the
// head is one of its ancestors (e.g. its parent); otherwise the branch
// moves to a new merge commit of the head and the patch set (first parent
// the head, message `Merge "SUBJECT"`, author and committer the
// submitter), whose tree git merge-tree computes. When that merge
// conflicts, the change stays open and the error is ErrConflict. A patch
// set already in the branch leaves the branch where it is. It returns the
// new branch head.
func (s *Server) Merge(num int, email string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return "", fmt.Errorf("merge: %w", err)
	}
	if c.status != StatusNew {
		return "", fmt.Errorf("merge change %d: change is %s: %w", num, strings.ToLower(c.status), ErrConflict)
	}
	a := s.accountLocked(email, "")
	p := s.projects[c.project]
	ref := "refs/heads/" + c.branch
	head := p.branches[ref]
	ps := c.current()
	cm := p.commits[ps.sha]
	newHead := ps.sha
	switch {
	case isAncestorLocked(p, ps.sha, head):
		newHead = head
	case isAncestorLocked(p, head, ps.sha):
	default:
		tree, err := s.mergeTreeLocked(p, head, ps.sha)
		if err != nil {
			return "", fmt.Errorf("merge change %d into %s: %w", num, c.branch, err)
		}
		merged, err := s.newCommitLocked(p, []string{head, ps.sha}, tree, CommitSpec{
			Subject:    fmt.Sprintf("Merge %q", cm.subject),
			AuthorName: a.name, AuthorEmail: a.email,
		}, "")
		if err != nil {
			return "", fmt.Errorf("merge change %d: %w", num, err)
		}
		newHead = merged.sha
	}
	if newHead != head {
		if err := s.updateRefLocked(p, ref, newHead, head); err != nil {
			return "", fmt.Errorf("merge change %d: %w", num, err)
		}
	}
	p.branches[ref] = newHead
	now := s.now()
	c.status = StatusMerged
	c.submitted = now
	c.submitter = a.id
	c.updated = now
	s.addMessageLocked(c, a.id, fmt.Sprintf("Change has been successfully merged\n\n%d is the latest approved patch-set.", ps.num),
		"autogenerated:gerrit:merged", ps.num, now)
	return newHead, nil
}

// SetWorkInProgress marks a change work in progress or ready for review.
func (s *Server) SetWorkInProgress(num int, wip bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return fmt.Errorf("set work in progress: %w", err)
	}
	if c.wip == wip {
		return nil
	}
	now := s.now()
	c.wip = wip
	c.updated = now
	text := "Set Ready For Review"
	tag := "autogenerated:gerrit:setReadyForReview"
	if wip {
		text, tag = "Set Work In Progress", "autogenerated:gerrit:setWorkInProgress"
	}
	s.addMessageLocked(c, c.owner, text, tag, c.current().num, now)
	return nil
}

// Reviews returns the reviews posted on a change, oldest first.
func (s *Server) Reviews(num int) []Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Review
	for _, r := range s.reviews {
		if r.Change == num {
			out = append(out, copyReview(r))
		}
	}
	return out
}

// AllReviews returns every review posted, oldest first.
func (s *Server) AllReviews() []Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Review, 0, len(s.reviews))
	for _, r := range s.reviews {
		out = append(out, copyReview(r))
	}
	return out
}

func copyReview(r Review) Review {
	if r.Labels != nil {
		m := make(map[string]int, len(r.Labels))
		for k, v := range r.Labels {
			m[k] = v
		}
		r.Labels = m
	}
	return r
}

// Change renders a change as GET /changes/{id} would with these o= options
// (e.g. "CURRENT_REVISION", "LABELS"), for in-process inspection.
func (s *Server) Change(num int, options ...string) (ChangeInfo, error) {
	opts, err := parseOptions(options)
	if err != nil {
		return ChangeInfo{}, fmt.Errorf("change %d: %v: %w", num, err, ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.changeLocked(num)
	if err != nil {
		return ChangeInfo{}, err
	}
	return s.renderLocked(c, opts), nil
}
