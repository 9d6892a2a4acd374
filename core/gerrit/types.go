// Package gerrit is Tollgate's client for the Gerrit REST API: query changes,
// read branch heads and commits, post reviews and list change messages.
//
// It strips the ")]}'" XSSI prefix Gerrit puts before every JSON body, calls
// the authenticated "/a/" paths with HTTP basic auth when credentials are
// set, is bounded by a token-bucket rate limiter, and retries only transient
// failures (5xx, 429, network errors) with exponential backoff.
package gerrit

import (
	"strconv"
	"strings"
	"time"
)

// TimeLayout is Gerrit's timestamp format (always UTC).
const TimeLayout = "2006-01-02 15:04:05.000000000"

// Timestamp is a Gerrit timestamp.
type Timestamp struct{ time.Time }

// UnmarshalJSON parses "2006-01-02 15:04:05.000000000" (fewer fraction
// digits are accepted too).
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	s = strings.Trim(s, `"`)
	v, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// MarshalJSON writes Gerrit's format.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// AccountInfo is an account. Email and Name need o=DETAILED_ACCOUNTS.
type AccountInfo struct {
	AccountID int    `json:"_account_id"`
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Username  string `json:"username,omitempty"`
}

// RevisionInfo is one patchset of a change.
type RevisionInfo struct {
	Number   int          `json:"_number"`
	Ref      string       `json:"ref"`
	Uploader *AccountInfo `json:"uploader,omitempty"`
	Created  Timestamp    `json:"created"`
	Kind     string       `json:"kind,omitempty"`
}

// ApprovalInfo is one vote on a label (o=DETAILED_LABELS).
type ApprovalInfo struct {
	AccountInfo
	Value int       `json:"value"`
	Date  Timestamp `json:"date"`
}

// LabelInfo summarises a label's votes (o=LABELS). Approved names only one
// of the accounts that gave the maximum; All and Values (o=DETAILED_LABELS)
// list every vote and the label's values ("-1", " 0", "+1").
type LabelInfo struct {
	Approved    *AccountInfo      `json:"approved,omitempty"`
	Rejected    *AccountInfo      `json:"rejected,omitempty"`
	Recommended *AccountInfo      `json:"recommended,omitempty"`
	Disliked    *AccountInfo      `json:"disliked,omitempty"`
	Value       int               `json:"value,omitempty"`
	All         []ApprovalInfo    `json:"all,omitempty"`
	Values      map[string]string `json:"values,omitempty"`
}

// Max is the label's highest value; ok is false without Values.
func (l LabelInfo) Max() (max int, ok bool) {
	for k := range l.Values {
		v, err := strconv.Atoi(strings.TrimSpace(k))
		if err != nil {
			continue
		}
		if !ok || v > max {
			max, ok = v, true
		}
	}
	return max, ok
}

// ChangeInfo is a change as the query and get endpoints return it.
type ChangeInfo struct {
	ID              string                  `json:"id"` // "project~branch~Change-Id"
	Project         string                  `json:"project"`
	Branch          string                  `json:"branch"`
	ChangeID        string                  `json:"change_id"`
	Subject         string                  `json:"subject"`
	Status          string                  `json:"status"` // NEW, MERGED, ABANDONED
	Created         Timestamp               `json:"created"`
	Updated         Timestamp               `json:"updated"`
	Number          int                     `json:"_number"`
	Owner           AccountInfo             `json:"owner"`
	CurrentRevision string                  `json:"current_revision,omitempty"`
	Revisions       map[string]RevisionInfo `json:"revisions,omitempty"`
	Labels          map[string]LabelInfo    `json:"labels,omitempty"`
	MoreChanges     bool                    `json:"_more_changes,omitempty"`
}

// Current returns the current revision's info, if the change was read with
// o=CURRENT_REVISION.
func (c *ChangeInfo) Current() (RevisionInfo, bool) {
	r, ok := c.Revisions[c.CurrentRevision]
	return r, ok && c.CurrentRevision != ""
}

// ChangeMessageInfo is one message on a change.
type ChangeMessageInfo struct {
	ID             string       `json:"id"`
	Author         *AccountInfo `json:"author,omitempty"`
	Date           Timestamp    `json:"date"`
	Message        string       `json:"message"`
	Tag            string       `json:"tag,omitempty"`
	RevisionNumber int          `json:"_revision_number,omitempty"`
}

// ReviewInput is the body of a review.
type ReviewInput struct {
	Message string         `json:"message,omitempty"`
	Labels  map[string]int `json:"labels,omitempty"`
	Tag     string         `json:"tag,omitempty"`
	Notify  string         `json:"notify,omitempty"` // NONE, OWNER, OWNER_REVIEWERS, ALL
}

// BranchInfo is a branch and its head.
type BranchInfo struct {
	Ref      string `json:"ref"`
	Revision string `json:"revision"`
}

// GitPersonInfo is a commit's author or committer.
type GitPersonInfo struct {
	Name  string    `json:"name"`
	Email string    `json:"email"`
	Date  Timestamp `json:"date"`
	TZ    int       `json:"tz"`
}

// CommitInfo is a commit.
type CommitInfo struct {
	Commit    string        `json:"commit"`
	Parents   []CommitInfo  `json:"parents,omitempty"`
	Author    GitPersonInfo `json:"author"`
	Committer GitPersonInfo `json:"committer"`
	Subject   string        `json:"subject"`
	Message   string        `json:"message,omitempty"`
}
