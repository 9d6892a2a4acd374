package gerrit

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Version is what GET /config/server/version answers.
const Version = "3.10.0-tollgate-fake"

// xssiPrefix starts every JSON answer of the REST API.
const xssiPrefix = ")]}'\n"

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, "Internal server error")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, xssiPrefix)
	w.Write(b)
	io.WriteString(w, "\n")
}

// route is a matched REST endpoint.
type route struct {
	endpoint string   // Endpoint* constant, or EndpointOther
	params   []string // decoded path parameters, in pattern order
	allowed  string   // method the path allows, when the method is wrong
}

// matchRoute maps a path (escaped, without the /a prefix) to an endpoint.
// Path segments are split before decoding, so "%2F" inside a project name
// or a change triplet stays in its segment.
func matchRoute(method, escapedPath string) route {
	raw := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	segs := make([]string, len(raw))
	for i, r := range raw {
		d, err := url.PathUnescape(r)
		if err != nil {
			return route{endpoint: EndpointOther}
		}
		segs[i] = d
	}
	n := len(segs)
	var rt route
	switch {
	case segs[0] == "changes" && (n == 1 || (n == 2 && segs[1] == "")):
		rt = route{endpoint: EndpointQueryChanges}
	case segs[0] == "changes" && n == 2:
		rt = route{endpoint: EndpointGetChange, params: segs[1:2]}
	case segs[0] == "changes" && n == 3 && segs[2] == "detail":
		rt = route{endpoint: EndpointGetDetail, params: segs[1:2]}
	case segs[0] == "changes" && n == 3 && segs[2] == "messages":
		rt = route{endpoint: EndpointListMessages, params: segs[1:2]}
	case segs[0] == "changes" && n == 5 && segs[2] == "revisions" && segs[4] == "review":
		rt = route{endpoint: EndpointPostReview, params: []string{segs[1], segs[3]}}
	case segs[0] == "changes" && n == 5 && segs[2] == "revisions" && segs[4] == "commit":
		rt = route{endpoint: EndpointRevisionCommit, params: []string{segs[1], segs[3]}}
	case segs[0] == "projects" && n == 4 && segs[2] == "branches" && segs[3] != "":
		rt = route{endpoint: EndpointGetBranch, params: []string{segs[1], segs[3]}}
	case segs[0] == "projects" && n == 4 && segs[2] == "commits" && segs[3] != "":
		rt = route{endpoint: EndpointGetCommit, params: []string{segs[1], segs[3]}}
	case n == 3 && segs[0] == "config" && segs[1] == "server" && segs[2] == "version":
		rt = route{endpoint: EndpointServerVersion}
	case n == 2 && segs[0] == "accounts" && segs[1] == "self":
		rt = route{endpoint: EndpointAccountSelf}
	default:
		return route{endpoint: EndpointOther}
	}
	want, _, _ := strings.Cut(rt.endpoint, " ")
	if method != want && !(want == http.MethodGet && method == http.MethodHead) {
		return route{endpoint: EndpointOther, allowed: want}
	}
	return rt
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/control/") || r.URL.Path == "/control" {
		s.serveControl(w, r)
		return
	}
	path, escaped := r.URL.Path, r.URL.EscapedPath()
	authed := false
	if strings.HasPrefix(path, "/a/") {
		authed = true
		path = path[2:]
		escaped = strings.TrimPrefix(escaped, "/a")
	}
	if g, ok := s.matchGit(path); ok {
		s.serveGit(w, r, g, path, authed)
		return
	}
	rt := matchRoute(r.Method, escaped)
	s.count(rt.endpoint)
	if f, ok := s.takeFault(r.Method, path); ok && s.applyFault(w, r, f) {
		return
	}
	var caller *account
	if authed {
		caller = s.authenticate(r)
		if caller == nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="Gerrit Code Review"`)
			writeText(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
	}
	if rt.allowed != "" {
		w.Header().Set("Allow", rt.allowed)
		writeText(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	switch rt.endpoint {
	case EndpointQueryChanges:
		s.handleQuery(w, r, caller)
	case EndpointGetChange, EndpointGetDetail:
		s.handleGetChange(w, r, rt)
	case EndpointListMessages:
		s.handleMessages(w, rt.params[0])
	case EndpointPostReview:
		s.handleReview(w, r, caller, rt.params[0], rt.params[1])
	case EndpointRevisionCommit:
		s.handleRevisionCommit(w, rt.params[0], rt.params[1])
	case EndpointGetBranch:
		s.handleBranch(w, rt.params[0], rt.params[1])
	case EndpointGetCommit:
		s.handleCommit(w, rt.params[0], rt.params[1])
	case EndpointServerVersion:
		writeJSON(w, http.StatusOK, Version)
	case EndpointAccountSelf:
		if caller == nil {
			writeText(w, http.StatusForbidden, "Authentication required")
			return
		}
		writeJSON(w, http.StatusOK, caller.info(true))
	default:
		writeText(w, http.StatusNotFound, "Not Found")
	}
}

// authenticate checks HTTP basic credentials and returns the caller's
// account, or nil.
func (s *Server) authenticate(r *http.Request) *account {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	want, known := s.passwords[user]
	if !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
		return nil
	}
	return s.accounts[s.userAcct[user]]
}

// Change options (o=). The fake implements these ...
const (
	optLabels           = "LABELS"
	optDetailedLabels   = "DETAILED_LABELS"
	optCurrentRevision  = "CURRENT_REVISION"
	optAllRevisions     = "ALL_REVISIONS"
	optCurrentCommit    = "CURRENT_COMMIT"
	optAllCommits       = "ALL_COMMITS"
	optMessages         = "MESSAGES"
	optDetailedAccounts = "DETAILED_ACCOUNTS"
)

// ... and accepts these other Gerrit options without adding anything.
var ignoredOptions = []string{
	"CURRENT_FILES", "ALL_FILES", "REVIEWER_UPDATES", "SUBMITTABLE", "WEB_LINKS", "CHECK",
	"COMMIT_FOOTERS", "PUSH_CERTIFICATES", "TRACKING_IDS", "CHANGE_ACTIONS", "CURRENT_ACTIONS",
	"DOWNLOAD_COMMANDS", "DRAFT_COMMENTS", "REVIEWED", "SKIP_MERGEABLE", "SKIP_DIFFSTAT",
	"SUBMIT_REQUIREMENTS", "STAR", "PARENTS", "CUSTOM_KEYED_VALUES", "SUBMIT_RECORDS",
}

type optionSet map[string]bool

func parseOptions(values []string) (optionSet, error) {
	opts := optionSet{}
	for _, v := range values {
		name := strings.ToUpper(strings.TrimSpace(v))
		switch name {
		case optLabels, optDetailedLabels, optCurrentRevision, optAllRevisions, optCurrentCommit,
			optAllCommits, optMessages, optDetailedAccounts:
		default:
			if !contains(ignoredOptions, name) {
				return nil, fmt.Errorf("%q is not a valid value for \"-o\"", v)
			}
		}
		opts[name] = true
	}
	return opts, nil
}

// resolveChangeLocked finds a change by number, "project~number",
// "project~branch~Change-Id" or Change-Id (which must be unique).
func (s *Server) resolveChangeLocked(id string) *change {
	parts := strings.Split(id, "~")
	switch len(parts) {
	case 1:
		if n, err := strconv.Atoi(id); err == nil {
			return s.changes[n]
		}
		var found *change
		for _, c := range s.changes {
			if c.changeID == id {
				if found != nil {
					return nil // ambiguous: Gerrit answers 404 too
				}
				found = c
			}
		}
		return found
	case 2:
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil
		}
		if c := s.changes[n]; c != nil && c.project == parts[0] {
			return c
		}
	case 3:
		branch := normBranch(parts[1])
		for _, c := range s.changes {
			if c.project == parts[0] && c.branch == branch && c.changeID == parts[2] {
				return c
			}
		}
	}
	return nil
}

// resolveRevision finds a patch set as Gerrit does: "current"; a patch
// set number (up to 5 digits, the legacy syntax); or a commit id, full or
// an unambiguous prefix of at least 4 hex digits.
func resolveRevision(c *change, rev string) *patchSet {
	if rev == "current" {
		return c.current()
	}
	if len(rev) < 6 && rev != "" && rev[0] != '0' {
		if n, err := strconv.Atoi(rev); err == nil {
			if n >= 1 && n <= len(c.patchSets) {
				return c.patchSets[n-1]
			}
			return nil
		}
	}
	if len(rev) < 4 || !isHex(rev) {
		return nil
	}
	rev = strings.ToLower(rev)
	var found *patchSet
	for _, ps := range c.patchSets {
		if strings.HasPrefix(ps.sha, rev) {
			if found != nil {
				return nil
			}
			found = ps
		}
	}
	return found
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *Server) handleGetChange(w http.ResponseWriter, r *http.Request, rt route) {
	opts, err := parseOptions(r.URL.Query()["o"])
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if rt.endpoint == EndpointGetDetail {
		for _, o := range []string{optLabels, optDetailedLabels, optDetailedAccounts, optMessages} {
			opts[o] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.resolveChangeLocked(rt.params[0])
	if c == nil {
		writeText(w, http.StatusNotFound, "Not found: "+rt.params[0])
		return
	}
	writeJSON(w, http.StatusOK, s.renderLocked(c, opts))
}

func (s *Server) handleMessages(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.resolveChangeLocked(id)
	if c == nil {
		writeText(w, http.StatusNotFound, "Not found: "+id)
		return
	}
	writeJSON(w, http.StatusOK, s.messagesLocked(c, true))
}

func (s *Server) messagesLocked(c *change, detailed bool) []ChangeMessageInfo {
	out := make([]ChangeMessageInfo, 0, len(c.messages))
	for _, m := range c.messages {
		a := s.accounts[m.author].info(detailed)
		out = append(out, ChangeMessageInfo{
			ID: m.id, Author: &a, Date: ts(m.date), Message: m.text, Tag: m.tag, RevisionNumber: m.ps,
		})
	}
	return out
}

func (s *Server) commitInfoLocked(p *project, cm *commit, withID bool) *CommitInfo {
	ci := &CommitInfo{
		Parents:   []CommitInfo{},
		Author:    cm.author.info(),
		Committer: cm.committer.info(),
		Subject:   cm.subject,
		Message:   cm.message,
	}
	if withID {
		ci.Commit = cm.sha
	}
	for _, pa := range cm.parents {
		pi := CommitInfo{Commit: pa}
		if pc := p.commits[pa]; pc != nil {
			pi.Subject = pc.subject
		}
		ci.Parents = append(ci.Parents, pi)
	}
	return ci
}

// formatValue writes a label value as Gerrit's label value keys: "-1",
// " 0", "+1".
func formatValue(v int) string {
	switch {
	case v > 0:
		return "+" + strconv.Itoa(v)
	case v == 0:
		return " 0"
	}
	return strconv.Itoa(v)
}

func (s *Server) renderLocked(c *change, opts optionSet) ChangeInfo {
	detailed := opts[optDetailedAccounts]
	ci := ChangeInfo{
		ID:             c.triplet(),
		TripletID:      c.triplet(),
		Project:        c.project,
		Branch:         c.branch,
		ChangeID:       c.changeID,
		Subject:        c.subject,
		Status:         c.status,
		Created:        ts(c.created),
		Updated:        ts(c.updated),
		WorkInProgress: c.wip,
		Number:         c.num,
		Owner:          s.accounts[c.owner].info(detailed),
	}
	if c.status == StatusMerged {
		t := ts(c.submitted)
		a := s.accounts[c.submitter].info(detailed)
		ci.Submitted, ci.Submitter = &t, &a
	}
	cur := c.current()
	if opts[optLabels] || opts[optDetailedLabels] {
		ci.Labels = map[string]LabelInfo{}
		for _, lt := range s.labels {
			ci.Labels[lt.Name] = s.labelInfoLocked(c, cur, lt, opts[optDetailedLabels], detailed)
		}
	}
	if opts[optMessages] {
		ci.Messages = s.messagesLocked(c, detailed)
	}
	if opts[optCurrentRevision] || opts[optAllRevisions] {
		ci.CurrentRevision = cur.sha
		ci.Revisions = map[string]RevisionInfo{}
		p := s.projects[c.project]
		for _, ps := range c.patchSets {
			if ps != cur && !opts[optAllRevisions] {
				continue
			}
			ri := RevisionInfo{
				Kind: ps.kind, Number: ps.num, Created: ts(ps.created),
				Uploader: s.accounts[ps.uploader].info(detailed), Ref: ps.ref,
			}
			if opts[optAllCommits] || (opts[optCurrentCommit] && ps == cur) {
				ri.Commit = s.commitInfoLocked(p, p.commits[ps.sha], false)
			}
			ci.Revisions[ps.sha] = ri
		}
	}
	return ci
}

// labelInfoLocked summarises the votes on one label of patch set ps, as
// Gerrit's LabelsJson: the max vote is "approved", the min (negative) vote
// "rejected", other positive or negative votes "recommended"/"disliked".
func (s *Server) labelInfoLocked(c *change, ps *patchSet, lt LabelType, detailedLabels, detailedAccounts bool) LabelInfo {
	var li LabelInfo
	votes := ps.approvals[lt.Name]
	ids := make([]int, 0, len(votes))
	for id := range votes {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		v := votes[id].value
		a := s.accounts[id].info(detailedAccounts)
		switch {
		case v == 0:
		case v == lt.Min:
			li.Rejected = &a
		case v == lt.Max:
			li.Approved = &a
		case v < 0:
			li.Disliked = &a
			li.Value = v
		case li.Disliked == nil:
			li.Recommended = &a
			li.Value = v
		}
	}
	if !detailedLabels {
		return li
	}
	zero := 0
	li.DefaultValue = &zero
	li.Values = map[string]string{}
	for v := lt.Min; v <= lt.Max; v++ {
		d := lt.Values[v]
		if d == "" {
			d = "Value " + formatValue(v)
		}
		li.Values[formatValue(v)] = d
	}
	accts := map[int]bool{}
	for id := range c.reviewers {
		accts[id] = true
	}
	for _, id := range ids {
		accts[id] = true
	}
	all := make([]int, 0, len(accts))
	for id := range accts {
		all = append(all, id)
	}
	sort.Ints(all)
	for _, id := range all {
		ai := ApprovalInfo{AccountInfo: s.accounts[id].info(detailedAccounts),
			PermittedVotingRange: &VotingRangeInfo{Min: lt.Min, Max: lt.Max}}
		if v := votes[id]; v != nil {
			d := ts(v.date)
			ai.Value, ai.Date, ai.Tag, ai.PostSubmit = v.value, &d, v.tag, v.postSubmit
		}
		li.All = append(li.All, ai)
	}
	return li
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request, caller *account) {
	params := r.URL.Query()
	opts, err := parseOptions(params["o"])
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	limit, start := 0, 0
	if v := params.Get("n"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("%q is not a valid value for \"-n\"", v))
			return
		}
	}
	startParam := params.Get("S")
	if startParam == "" {
		startParam = params.Get("start")
	}
	if startParam != "" {
		if start, err = strconv.Atoi(startParam); err != nil || start < 0 {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("%q is not a valid value for \"-S\"", startParam))
			return
		}
	}
	queries, given := params["q"]
	if !given {
		queries = []string{"status:open"}
	}
	parsed := make([]*queryExpr, len(queries))
	for i, q := range queries {
		if parsed[i], err = parseQuery(q); err != nil {
			writeText(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := &evalCtx{now: s.now(), caller: caller, s: s}
	results := make([][]ChangeInfo, len(parsed))
	for i, q := range parsed {
		results[i] = s.runQueryLocked(ctx, q, limit, start, opts)
	}
	if len(results) == 1 {
		writeJSON(w, http.StatusOK, results[0])
		return
	}
	writeJSON(w, http.StatusOK, results)
}

// runQueryLocked returns one page of changes matching q, newest update
// first, with _more_changes on the last one when the page is truncated.
func (s *Server) runQueryLocked(ctx *evalCtx, q *queryExpr, limit, start int, opts optionSet) []ChangeInfo {
	eff := s.queryLimit
	if limit > 0 && limit < eff {
		eff = limit
	}
	if q.limit > 0 && q.limit < eff {
		eff = q.limit
	}
	var matched []*change
	for _, c := range s.changes {
		if q.match(ctx, c) {
			matched = append(matched, c)
		}
	}
	sort.Slice(matched, func(i, j int) bool {
		a, b := matched[i], matched[j]
		if !a.updated.Equal(b.updated) {
			return a.updated.After(b.updated)
		}
		return a.num > b.num
	})
	out := []ChangeInfo{}
	if start >= len(matched) {
		return out
	}
	page := matched[start:]
	more := false
	if len(page) > eff {
		page, more = page[:eff], true
	}
	for _, c := range page {
		out = append(out, s.renderLocked(c, opts))
	}
	if more {
		out[len(out)-1].MoreChanges = true
	}
	return out
}

func (s *Server) handleReview(w http.ResponseWriter, r *http.Request, caller *account, id, rev string) {
	if caller == nil {
		writeText(w, http.StatusForbidden, "Authentication required")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		writeText(w, http.StatusBadRequest, "cannot read body")
		return
	}
	if len(body) > 0 {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/json" {
			writeText(w, http.StatusUnsupportedMediaType, "Expected Content-Type: application/json")
			return
		}
	}
	var in ReviewInput
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			writeText(w, http.StatusBadRequest, "Invalid JSON in request: "+err.Error())
			return
		}
	}
	switch in.Notify {
	case "", "NONE", "OWNER", "OWNER_REVIEWERS", "ALL":
	default:
		writeText(w, http.StatusBadRequest, fmt.Sprintf("Invalid value for notify: %q", in.Notify))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.resolveChangeLocked(id)
	if c == nil {
		writeText(w, http.StatusNotFound, "Not found: "+id)
		return
	}
	ps := resolveRevision(c, rev)
	if ps == nil {
		writeText(w, http.StatusNotFound, "Not found: "+rev)
		return
	}
	strict := in.StrictLabels == nil || *in.StrictLabels
	labels, err := s.validateLabelsLocked(in.Labels, strict)
	if err != nil {
		writeText(w, http.StatusBadRequest, strings.TrimSuffix(err.Error(), ": "+ErrInvalid.Error()))
		return
	}
	if n := utf8.RuneCountInString(in.Message); n > s.maxMsg {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("Comment size exceeds limit (%d > %d)", n, s.maxMsg))
		return
	}
	now := s.now()
	deltas, err := s.applyVotesLocked(c, ps, caller.id, labels, in.Tag, now)
	if err != nil {
		if errors.Is(err, ErrConflict) {
			writeText(w, http.StatusConflict, strings.TrimSuffix(err.Error(), ": "+ErrConflict.Error()))
			return
		}
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	msg := strings.TrimSpace(in.Message)
	if len(deltas) > 0 || msg != "" {
		s.addMessageLocked(c, caller.id, voteMessage(ps.num, deltas, msg), in.Tag, ps.num, now)
		c.updated = now
	}
	s.reviews = append(s.reviews, Review{
		Change: c.num, ChangeID: c.changeID, Project: c.project, Branch: c.branch,
		PatchSet: ps.num, Revision: ps.sha, Current: ps == c.current(),
		AccountID: caller.id, Email: caller.email, Username: caller.username,
		Labels: labels, Message: in.Message, Tag: in.Tag, Notify: in.Notify, Time: now,
	})
	res := ReviewResult{}
	if len(labels) > 0 {
		res.Labels = labels
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleRevisionCommit(w http.ResponseWriter, id, rev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.resolveChangeLocked(id)
	if c == nil {
		writeText(w, http.StatusNotFound, "Not found: "+id)
		return
	}
	ps := resolveRevision(c, rev)
	if ps == nil {
		writeText(w, http.StatusNotFound, "Not found: "+rev)
		return
	}
	p := s.projects[c.project]
	writeJSON(w, http.StatusOK, s.commitInfoLocked(p, p.commits[ps.sha], true))
}

func (s *Server) handleBranch(w http.ResponseWriter, projectName, branch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	if p == nil {
		writeText(w, http.StatusNotFound, "Not found: "+projectName)
		return
	}
	ref := branch
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	head, ok := p.branches[ref]
	if !ok {
		writeText(w, http.StatusNotFound, "Not found: "+branch)
		return
	}
	writeJSON(w, http.StatusOK, BranchInfo{Ref: ref, Revision: head})
}

func (s *Server) handleCommit(w http.ResponseWriter, projectName, sha string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	if p == nil {
		writeText(w, http.StatusNotFound, "Not found: "+projectName)
		return
	}
	cm := p.commits[strings.ToLower(sha)]
	if cm == nil {
		writeText(w, http.StatusNotFound, "Not found: "+sha)
		return
	}
	writeJSON(w, http.StatusOK, s.commitInfoLocked(p, cm, true))
}
