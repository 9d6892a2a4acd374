// Package gerrit is a fake Gerrit Code Review server for tests, demos and
// the local topology. It serves the part of the Gerrit REST API a CI
// controller uses, following Gerrit's documented behaviour and limits,
// real git repositories over smart HTTP (fetch only) so workers can fetch a
// change and merge it onto its branch, and a control API that sets up and
// inspects its state. It needs the git CLI (2.38 or later, for
// merge-tree --write-tree).
//
// # REST API
//
// Every path exists anonymously and under /a/. Requests under /a/ need
// HTTP basic credentials matching Options.Users (else 401 with
// WWW-Authenticate); anonymous requests may read but not post reviews
// (403 "Authentication required"). JSON answers start with the ")]}'" XSSI
// line and have Content-Type "application/json; charset=UTF-8"; errors are
// text/plain, as Gerrit's. Timestamps use Gerrit's format
// "2006-01-02 15:04:05.000000000" in UTC (see Timestamp).
//
//	GET  /changes/?q=QUERY&o=OPTION&n=LIMIT&S=SKIP    query changes
//	GET  /changes/{change-id}[?o=...]                  one change
//	GET  /changes/{change-id}/detail[?o=...]           + LABELS, DETAILED_LABELS, DETAILED_ACCOUNTS, MESSAGES
//	GET  /changes/{change-id}/messages                 ChangeMessageInfo list (detailed accounts)
//	POST /changes/{change-id}/revisions/{revision-id}/review   ReviewInput -> ReviewResult
//	GET  /changes/{change-id}/revisions/{revision-id}/commit   CommitInfo
//	GET  /projects/{project-name}/branches/{branch-id}         BranchInfo
//	GET  /projects/{project-name}/commits/{commit-id}          CommitInfo
//	GET  /config/server/version                                 Version
//	GET  /accounts/self                                         the caller's AccountInfo
//
// {change-id} is a change number, "project~number",
// "project~branch~Change-Id" (the id field of ChangeInfo, with "/" in
// names encoded as %2F) or a Change-Id (404 when several changes share
// it). {revision-id} is "current", a patch set number or a commit id (or an
// unambiguous prefix of at least 4 hex digits). {branch-id} is a name or a
// full ref. Unknown resources answer 404 "Not found: ID".
//
// Queries. Results are sorted by updated, newest first (then by number,
// highest first); n limits a page (default and maximum
// Options.QueryLimit, 500 unless set; n <= 0 means the default), S skips
// results, and the last change of a truncated page carries
// "_more_changes": true. Several q parameters answer a list of lists, one
// per query, as Gerrit does; no q means "status:open". Operators, combined
// by spaces (or "+" in the URL) or AND, OR, NOT, "-" and parentheses:
//
//	project:P  projects:PREFIX  branch:B (name or refs/heads/B)
//	status:open|pending|new|closed|merged|abandoned
//	is:open|pending|new|closed|merged|abandoned|wip|owner|visible
//	after:T / since:T, before:T / until:T   compare updated, inclusive; T is
//	    2006-01-02[ 15:04:05[.890][ -0700]], quoted ("..." or {...}) when it
//	    has a time; no time means 00:00:00, no zone means UTC
//	age:2d   updated at least that long ago (s, m, h, d, w, mon, y)
//	change:N or change:I...   a number or Change-Id (prefix); a bare number
//	    or Change-Id means the same
//	owner:X, uploader:X   X is self, an account id, an e-mail or a user name
//	label:NAME=V, >=, <=, >, <, NAME+1, NAME-1 (V may be MAX or MIN) on the
//	    current patch set
//	limit:N
//
// Any other operator or free text answers 400.
//
// Options (o=, case-insensitive; an unknown name answers 400):
// CURRENT_REVISION and ALL_REVISIONS add current_revision and revisions
// (RevisionInfo: kind, _number, created, uploader, ref); CURRENT_COMMIT and
// ALL_COMMITS add the commit to the current or every listed revision;
// DETAILED_ACCOUNTS adds name, email and username to every AccountInfo
// (otherwise only _account_id); LABELS adds labels (approved for a vote of
// the label's max, rejected for its min, recommended/disliked with value
// for other votes, computed from the current patch set's votes);
// DETAILED_LABELS adds all (one ApprovalInfo per reviewer), values and
// default_value; MESSAGES adds messages. Other Gerrit option names
// (CURRENT_FILES, SUBMITTABLE, SKIP_MERGEABLE, ...) are accepted and
// ignored.
//
// Reviews. The body must be JSON with Content-Type application/json (else
// 415). Labels are checked against the configured labels: an unknown label
// answers 400 `label "X" is not a configured label` (unless
// "strict_labels": false, which drops it), a value out of range 400
// `label "X": 3 is not a valid value`. A message longer than
// Options.MaxMessageLength characters (16384 by default, Gerrit's
// change.commentSizeLimit) answers 400 "Comment size exceeds limit (N > M)".
// notify must be NONE, OWNER, OWNER_REVIEWERS or ALL. Changing votes on an
// abandoned change answers 409 "change is closed"; on a merged change,
// Gerrit's post-submit rules apply (409 "Voting on labels disallowed after
// submit: X" unless the label allows post-submit votes, 409 "Cannot reduce
// vote on labels for closed change: X"); messages alone are always
// accepted. A vote of 0 removes the caller's vote. An accepted review adds
// a change message "Patch Set N: Label+1 ...\n\nmessage" with the tag and
// the caller as author (none when it changes nothing and has no message),
// bumps updated, makes the caller a reviewer when it carries labels, and is
// recorded as a Review. Votes on an outdated patch set are accepted (as in
// current Gerrit) but do not show in labels, which describe the current
// patch set.
//
// # Git
//
// Every project is a bare git repository, PROJECT.git under Options.GitDir
// (by default a temporary directory, created by the first CreateBranch and
// removed by Close; see Server.GitDir and Server.RepoDir). Every commit the
// fake makes is a real commit there, and every commit id the REST API and
// the control API report is its real id; CommitInfo and BranchInfo report
// the real parents, subjects, messages, and authors and committers with
// their dates (whole seconds, UTC, following the fake's Clock). Branches
// are refs/heads/*, patch sets refs/changes/NN/CHANGE/PS; HEAD points to a
// project's first branch.
//
// Fetches use git smart HTTP, protocol v0 or v2, through git http-backend:
//
//	GET  /PROJECT/info/refs?service=git-upload-pack    ref advertisement
//	POST /PROJECT/git-upload-pack                      fetch
//
// anonymously or under /a/ with the REST API's basic auth (e.g.
// "git fetch http://user:pass@host/a/demo/hello refs/changes/01/1/2");
// PROJECT may contain "/" and may end with ".git". Every ref is advertised,
// refs/changes/* included, and any commit may be fetched by id
// (uploadpack.allowAnySHA1InWant). Pushes (receive-pack) answer 403, the
// dumb protocol 403. Git requests count under the EndpointGit* names and
// faults apply to them as to REST requests (their path without /a, e.g.
// "/demo/hello/info/refs").
//
// Commits are built with plumbing (hash-object, mktree, commit-tree,
// update-ref; no working tree, no user or system git config), a few git
// processes per commit (a few milliseconds). Trees:
//
//   - CreateBranch makes a root commit holding CommitSpec.Files, or
//     README.md when none are given.
//   - MoveBranch commits the head's tree with CommitSpec.Delete removed and
//     CommitSpec.Files written, or with UPDATE-<n>.txt added when neither
//     is given (n counts the project's MoveBranch calls), and moves the
//     branch to it.
//   - CreateChange commits its parent's tree (the branch head or
//     ChangeSpec.Parent) with ChangeSpec.Delete and Files applied, or with
//     CHANGE-<number>.txt added when neither is given.
//   - UploadPatchset commits its parent's tree (see PatchSetSpec.Parent)
//     with the change's cumulative edits applied: every earlier patch
//     set's Delete and Files, then its own, as amending a commit would. So
//     a rebase keeps the change's files (whole files: a rebase never
//     conflicts). Without Files or Delete, a REWORK rewrites
//     CHANGE-<number>.txt and other kinds change no file.
//   - Merge fast-forwards the branch when the head is an ancestor of the
//     current patch set, and otherwise adds a merge commit (parents: the
//     head, then the patch set; message `Merge "SUBJECT"`; tree from git
//     merge-tree). A conflicting merge is ErrConflict and leaves the change
//     open.
//
// File paths are relative and slash separated, without empty, "." or ".."
// components or a ".git" component (else ErrInvalid; so is a path that
// would be both a file and a directory). Files are regular (mode 100644).
// Deletions apply before writes; deleting a path that does not exist is
// not an error. Commit messages are the subject, the body and, for patch
// sets, the "Change-Id: I..." footer, separated by blank lines; a subject
// must be one line. Names and e-mails are cleaned as git cleans them. When
// a commit would be identical to one the project already has (e.g. a
// NO_CHANGE patch set while the clock stands still), its commit time is
// moved on a second at a time until it is new, so every commit is
// distinct; otherwise commit ids are deterministic for the same sequence
// of operations at the same clock times.
//
// # Control API
//
// The same operations exist as methods on *Server (for in-process tests
// and demos) and as plain-JSON HTTP endpoints under /control/ (see
// control.go): create a branch with a root commit, move a branch head,
// create a change, upload a patch set, vote, abandon, restore, merge,
// toggle work in progress, read posted reviews, inject faults, and read the
// per-endpoint request counters. Accounts are created on first use from an
// e-mail, with ids from 1000000 up. Change numbers start at
// Options.FirstChangeNumber (1); patch set refs are
// refs/changes/NN/CHANGE/PS with NN the change number's last two digits.
// Commits are real git commits (see Git).
//
// Faults (Fault) apply to REST and git requests matching a path prefix and
// method, for the next Count requests and/or for a Duration on the server
// Clock: answer a 429/5xx status, hold the request for a Delay, or drop the
// connection. Every REST and git request counts under its Endpoint name,
// including those that fail authentication or hit a fault.
//
// # Differences from real Gerrit
//
//   - One Gerrit host, every change visible to everyone; no groups, ACLs or
//     per-group voting ranges: every account may vote a label's full range.
//     Project and branch permissions are not modelled.
//   - Git is served for fetching only: no push, no refs/for/*, no
//     refs/meta/config or NoteDb refs, no ssh. Patch set kinds are whatever
//     the control API says (not computed from the commits); insertions and
//     deletions are 0; file lists (CURRENT_FILES) are not served. Merge is
//     "merge if necessary" without submit rules or submit requirements: it
//     succeeds on any open change that merges without conflict.
//   - Vote copying on new patch sets is simplified to LabelType.CopyOnKinds
//     (Gerrit's copyCondition "changekind:..." clauses only).
//   - Queries support the operators above only; there is no secondary
//     index lag: a change is queryable as soon as it changes (real Gerrit
//     may lag briefly, so clients should overlap their polling windows).
//   - No inline comments, robot comments, drafts, reviewers/CC management,
//     attention set, hashtags, topics, e-mail (notify is only validated and
//     recorded), on_behalf_of, change edits, or the 5000-updates cap.
//   - The review message limit applies to the whole message in characters;
//     Gerrit's wording of that error differs slightly by version.
//   - Only HTTP basic auth; no access_token or cookie auth, no quotas or
//     rate limiting except what Fault injects.
//   - JSON is compact, never pretty-printed.
package gerrit
