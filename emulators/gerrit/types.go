package gerrit

import (
	"strings"
	"time"
)

// TimeLayout is Gerrit's REST timestamp format. Gerrit always writes UTC
// with nanosecond precision, e.g. "2024-05-01 12:30:00.000000000".
const TimeLayout = "2006-01-02 15:04:05.000000000"

// Timestamp is a time written and read in Gerrit's REST format.
type Timestamp struct{ time.Time }

// MarshalJSON writes the time in UTC as TimeLayout.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// UnmarshalJSON reads TimeLayout (fewer fraction digits are accepted too).
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	v, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", strings.Trim(s, `"`), time.UTC)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

func ts(t time.Time) Timestamp { return Timestamp{t.UTC()} }

// AccountInfo is Gerrit's AccountInfo. Without o=DETAILED_ACCOUNTS only
// AccountID is set.
type AccountInfo struct {
	AccountID int    `json:"_account_id"`
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Username  string `json:"username,omitempty"`
}

// GitPersonInfo is a commit author or committer. TZ is the offset from UTC
// in minutes (always 0 in the fake).
type GitPersonInfo struct {
	Name  string    `json:"name"`
	Email string    `json:"email"`
	Date  Timestamp `json:"date"`
	TZ    int       `json:"tz"`
}

// CommitInfo is Gerrit's CommitInfo. Commit is omitted when the CommitInfo
// sits in a RevisionInfo (the revisions map is keyed by the commit id).
// Parents carry only Commit and Subject.
type CommitInfo struct {
	Commit    string         `json:"commit,omitempty"`
	Parents   []CommitInfo   `json:"parents"`
	Author    *GitPersonInfo `json:"author,omitempty"`
	Committer *GitPersonInfo `json:"committer,omitempty"`
	Subject   string         `json:"subject"`
	Message   string         `json:"message,omitempty"`
}

// RevisionInfo is one patch set (o=CURRENT_REVISION or o=ALL_REVISIONS).
// Commit needs o=CURRENT_COMMIT or o=ALL_COMMITS.
type RevisionInfo struct {
	Kind     string      `json:"kind"`
	Number   int         `json:"_number"`
	Created  Timestamp   `json:"created"`
	Uploader AccountInfo `json:"uploader"`
	Ref      string      `json:"ref"`
	Commit   *CommitInfo `json:"commit,omitempty"`
}

// VotingRangeInfo is the range of values an account may vote on a label.
type VotingRangeInfo struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// ApprovalInfo is one reviewer's vote on a label (o=DETAILED_LABELS).
// Value is always present for reviewers (the fake lets everyone vote the
// full range); Date and Tag are set when the reviewer voted.
type ApprovalInfo struct {
	AccountInfo
	Value                int              `json:"value"`
	PermittedVotingRange *VotingRangeInfo `json:"permitted_voting_range,omitempty"`
	Date                 *Timestamp       `json:"date,omitempty"`
	Tag                  string           `json:"tag,omitempty"`
	PostSubmit           bool             `json:"post_submit,omitempty"`
}

// LabelInfo summarises the votes on one label of the current patch set
// (o=LABELS). All, Values and DefaultValue need o=DETAILED_LABELS.
type LabelInfo struct {
	Approved     *AccountInfo      `json:"approved,omitempty"`
	Rejected     *AccountInfo      `json:"rejected,omitempty"`
	Recommended  *AccountInfo      `json:"recommended,omitempty"`
	Disliked     *AccountInfo      `json:"disliked,omitempty"`
	Value        int               `json:"value,omitempty"`
	DefaultValue *int              `json:"default_value,omitempty"`
	Values       map[string]string `json:"values,omitempty"`
	All          []ApprovalInfo    `json:"all,omitempty"`
}

// ChangeMessageInfo is one message on a change.
type ChangeMessageInfo struct {
	ID             string       `json:"id"`
	Author         *AccountInfo `json:"author,omitempty"`
	RealAuthor     *AccountInfo `json:"real_author,omitempty"`
	Date           Timestamp    `json:"date"`
	Message        string       `json:"message"`
	Tag            string       `json:"tag,omitempty"`
	RevisionNumber int          `json:"_revision_number,omitempty"`
}

// ChangeInfo is Gerrit's ChangeInfo as the query and get endpoints return
// it. Optional parts follow the o= options (see doc.go).
type ChangeInfo struct {
	ID              string                  `json:"id"`
	TripletID       string                  `json:"triplet_id"`
	Project         string                  `json:"project"`
	Branch          string                  `json:"branch"`
	ChangeID        string                  `json:"change_id"`
	Subject         string                  `json:"subject"`
	Status          string                  `json:"status"`
	Created         Timestamp               `json:"created"`
	Updated         Timestamp               `json:"updated"`
	Submitted       *Timestamp              `json:"submitted,omitempty"`
	Submitter       *AccountInfo            `json:"submitter,omitempty"`
	Insertions      int                     `json:"insertions"`
	Deletions       int                     `json:"deletions"`
	WorkInProgress  bool                    `json:"work_in_progress,omitempty"`
	Number          int                     `json:"_number"`
	Owner           AccountInfo             `json:"owner"`
	Labels          map[string]LabelInfo    `json:"labels,omitempty"`
	Messages        []ChangeMessageInfo     `json:"messages,omitempty"`
	CurrentRevision string                  `json:"current_revision,omitempty"`
	Revisions       map[string]RevisionInfo `json:"revisions,omitempty"`
	MoreChanges     bool                    `json:"_more_changes,omitempty"`
}

// ReviewInput is the body of POST .../revisions/{revision}/review. Fields
// Gerrit accepts but the fake ignores (comments, drafts, reviewers...) are
// decoded and dropped, as Gerrit drops unknown fields.
type ReviewInput struct {
	Message string         `json:"message,omitempty"`
	Labels  map[string]int `json:"labels,omitempty"`
	Tag     string         `json:"tag,omitempty"`
	Notify  string         `json:"notify,omitempty"`
	// StrictLabels defaults to true: an unknown label is an error. When
	// false, unknown labels are dropped silently.
	StrictLabels *bool `json:"strict_labels,omitempty"`
}

// ReviewResult is the answer to a review: the labels that were applied.
type ReviewResult struct {
	Labels map[string]int `json:"labels,omitempty"`
}

// BranchInfo is a branch and its head.
type BranchInfo struct {
	Ref      string `json:"ref"`
	Revision string `json:"revision"`
}
