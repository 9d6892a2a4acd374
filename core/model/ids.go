package model

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// IDTimeLayout is the timestamp at the front of job ids and postsubmit keys.
const IDTimeLayout = "20060102150405"

var (
	typeRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.]|-[a-z0-9_.])*$`)
	branchRE = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)
	slugRE   = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// ValidJobType reports whether name may be a job type: lower-case letters,
// digits, '.', '_' and single '-', so "--" stays a separator in job ids.
func ValidJobType(name string) bool { return len(name) <= 100 && typeRE.MatchString(name) }

// ValidBranch reports whether name is a branch name Tollgate accepts.
func ValidBranch(name string) bool {
	return len(name) <= 200 && branchRE.MatchString(name) && !strings.Contains(name, "..") &&
		!strings.HasPrefix(name, "/") && !strings.HasSuffix(name, "/")
}

// JobID returns the id of a job of type typ for src created at t:
// "YYYYmmddHHMMSS--{src with / as -}--{type}". Ids sort by creation time.
func JobID(t time.Time, src, typ string) string {
	return t.UTC().Format(IDTimeLayout) + "--" + strings.ReplaceAll(src, "/", "-") + "--" + typ
}

// JobIDParts is a parsed job id.
type JobIDParts struct {
	Created time.Time
	SrcSlug string // the src with '/' replaced by '-'
	Type    string
}

// ParseJobID parses a job id made by JobID. It refuses anything else with
// InvalidArgument, so ids from URLs can be checked before any lookup.
func ParseJobID(id string) (JobIDParts, error) {
	const op = "model.ParseJobID"
	if len(id) > 400 {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id longer than 400 bytes")
	}
	if len(id) < len(IDTimeLayout)+2 || id[len(IDTimeLayout):len(IDTimeLayout)+2] != "--" {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q does not start with YYYYmmddHHMMSS--", id)
	}
	ts, err := time.Parse(IDTimeLayout, id[:len(IDTimeLayout)])
	if err != nil {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q has a bad timestamp", id)
	}
	rest := id[len(IDTimeLayout)+2:]
	i := strings.LastIndex(rest, "--")
	if i <= 0 {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q has no --{type} suffix", id)
	}
	src, typ := rest[:i], rest[i+2:]
	if !ValidJobType(typ) {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q has a bad type %q", id, typ)
	}
	if !slugRE.MatchString(src) || strings.Contains(src, "..") {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q has a bad source %q", id, src)
	}
	if !strings.HasPrefix(src, "cls-") && !strings.HasPrefix(src, "branches-") {
		return JobIDParts{}, errs.E(errs.InvalidArgument, op, "job id %q has source %q, neither cls- nor branches-", id, src)
	}
	return JobIDParts{Created: ts, SrcSlug: src, Type: typ}, nil
}

// PatchsetID returns "{cl}-{ps}".
func PatchsetID(cl, ps int) string { return strconv.Itoa(cl) + "-" + strconv.Itoa(ps) }

// PatchsetSrc returns the job source of a patchset: "cls/{cl}-{ps}".
func PatchsetSrc(cl, ps int) string { return "cls/" + PatchsetID(cl, ps) }

// ParsePatchsetID parses "{cl}-{ps}" with both numbers positive.
func ParsePatchsetID(id string) (cl, ps int, err error) {
	const op = "model.ParsePatchsetID"
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, errs.E(errs.InvalidArgument, op, "patchset id %q is not {change}-{patchset}", id)
	}
	cl, err1 := strconv.Atoi(a)
	ps, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || cl <= 0 || ps <= 0 || strconv.Itoa(cl) != a || strconv.Itoa(ps) != b {
		return 0, 0, errs.E(errs.InvalidArgument, op, "patchset id %q is not {change}-{patchset}", id)
	}
	return cl, ps, nil
}

// PostsubmitID returns "{branch}-{committed as YYYYmmddHHMMSS}".
func PostsubmitID(branch string, committed time.Time) string {
	return branch + "-" + committed.UTC().Format(IDTimeLayout)
}

// PostsubmitSrc returns the job source of a postsubmit run.
func PostsubmitSrc(id string) string { return "branches/" + id }

// ParseSrc names the record of a job source: the patchset id of
// "cls/{cl}-{ps}", or the postsubmit id of "branches/{id}" (one of the two
// is ""). Anything else is InvalidArgument.
func ParseSrc(src string) (patchset, postsubmit string, err error) {
	const op = "model.ParseSrc"
	if id, ok := strings.CutPrefix(src, "cls/"); ok {
		if _, _, err := ParsePatchsetID(id); err != nil {
			return "", "", errs.E(errs.InvalidArgument, op, "job source %q names no patchset", src)
		}
		return id, "", nil
	}
	if id, ok := strings.CutPrefix(src, "branches/"); ok && id != "" && len(id) <= 300 && !strings.Contains(id, "..") {
		return "", id, nil
	}
	return "", "", errs.E(errs.InvalidArgument, op, "job source %q is neither cls/{cl}-{ps} nor branches/{id}", src)
}
