package controller

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tollgate-ci/tollgate/core/model"
)

// MaxMessageBytes is Gerrit's default limit on a change message (16 KiB).
const MaxMessageBytes = 16 << 10

// review returns the vote and the message for an ended patchset, judged on
// the latest run of each job type (earlier runs were retried). The verdict
// comes first and is never cut; the job lists are truncated to keep the
// message within MaxMessageBytes.
func (c *Controller) review(ps *model.Patchset, all []*model.Job) (int, string) {
	latest := model.Latest(all)
	jobs := make([]*model.Job, 0, len(latest))
	for _, j := range latest {
		jobs = append(jobs, j)
	}
	var fail, pass, cancelled []string
	failedVoting, failedTotal := 0, 0
	sort.SliceStable(jobs, func(i, k int) bool { return jobs[i].Type < jobs[k].Type })
	for _, j := range jobs {
		line := j.Type + c.jobLink(j)
		switch {
		case j.State == model.Completed:
			pass = append(pass, "PASS: "+line)
		case j.State == model.Cancelled:
			cancelled = append(cancelled, "CANCELLED: "+line)
		default:
			failedTotal++
			if !j.SkipVoting {
				failedVoting++
			}
			kind := failureKind(j)
			if j.SkipVoting {
				kind += ", not voting"
			}
			fail = append(fail, "FAIL: "+j.Type+" ("+kind+")"+c.jobLink(j))
		}
	}
	total := len(jobs)
	var head string
	round := ""
	if ps.CurrentRound() > 1 {
		round = fmt.Sprintf(" (round %d, after a retry)", ps.CurrentRound())
	}
	vote := 0
	switch {
	case len(cancelled) > 0:
		head = fmt.Sprintf("Tollgate: %d of %d jobs were cancelled (usually because a newer patchset was uploaded). No vote.", len(cancelled), total)
	case failedVoting > 0:
		vote = -1
		head = fmt.Sprintf("Tollgate: %d of %d jobs failed.", failedTotal, total)
	case failedTotal > 0:
		vote = 1
		head = fmt.Sprintf("Tollgate: all voting jobs passed; %d non-voting job(s) failed.", failedTotal)
	default:
		vote = 1
		head = fmt.Sprintf("Tollgate: all %d jobs passed.", total)
	}
	head = strings.Replace(head, "Tollgate:", "Tollgate"+round+":", 1)
	if vote != 0 {
		if !c.cfg.Vote.Enabled {
			head += " (Voting is disabled: no " + c.cfg.Vote.Label + " vote.)"
			vote = 0
		} else {
			head += fmt.Sprintf(" %s%+d", c.cfg.Vote.Label, vote)
		}
	}
	tail := ""
	if c.cfg.Vote.UIURL != "" {
		tail = "\n\nDetails: " + strings.TrimRight(c.cfg.Vote.UIURL, "/") + "/cls/" + ps.ID
	}
	lines := append(append(fail, cancelled...), pass...)
	return vote, fit(head, lines, tail, MaxMessageBytes)
}

// failureKind says, for a user, why a job did not pass; infrastructure
// failures are named so nobody mistakes them for test failures.
func failureKind(j *model.Job) string {
	switch j.State {
	case model.Failed:
		if j.ExitCode != nil {
			return fmt.Sprintf("exit code %d", *j.ExitCode)
		}
		return "failed"
	case model.TimedOut:
		return "timed out"
	case model.BotDied:
		return "infrastructure failure: the worker died during both attempts, not a test failure"
	case model.Interrupted:
		if j.Reason != "" {
			return "infrastructure failure: interrupted during both attempts (" + j.Reason + "), not a test failure"
		}
		return "infrastructure failure: the worker was shut down during both attempts, not a test failure"
	case model.NoResource:
		if j.Pool == "" {
			return "infrastructure failure: no live worker could run it, not a test failure"
		}
		return "infrastructure failure: no live worker has the labels it requires (" + j.Pool + "), not a test failure"
	case model.Expired:
		return "infrastructure failure: no worker took it before it expired, not a test failure"
	}
	return strings.ToLower(string(j.State))
}

func (c *Controller) jobLink(j *model.Job) string {
	if c.cfg.Vote.UIURL == "" {
		return ""
	}
	return ": " + strings.TrimRight(c.cfg.Vote.UIURL, "/") + "/jobs/" + j.ID
}

// fit joins head, as many lines as fit, a count of the lines left out, and
// tail, in at most limit bytes. The head is kept whole.
func fit(head string, lines []string, tail string, limit int) string {
	var b strings.Builder
	b.WriteString(head)
	if len(lines) > 0 {
		b.WriteString("\n")
	}
	const reserve = 64 // room for the "... and N more" line
	for i, l := range lines {
		if b.Len()+1+len(l)+reserve+len(tail) > limit {
			fmt.Fprintf(&b, "\n... and %d more jobs (see the details page)", len(lines)-i)
			break
		}
		b.WriteString("\n" + l)
	}
	if b.Len()+len(tail) <= limit {
		b.WriteString(tail)
	}
	s := b.String()
	if len(s) > limit { // only if head itself is huge
		s = strings.ToValidUTF8(s[:limit], "")
	}
	return s
}
