package ui

import (
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// stateInfo is how the UI names and draws a job state: a glyph, so the
// state reads without colour, and a sentence for the tooltip.
var stateInfo = map[model.State]struct{ icon, name, help string }{
	model.Queued:      {"◷", "queued", "Waiting for a worker"},
	model.Started:     {"▶", "running", "A worker is running it"},
	model.Completed:   {"✓", "completed", "Ran and passed (exit code 0)"},
	model.Failed:      {"✗", "failed", "Ran and failed (non-zero exit code)"},
	model.TimedOut:    {"◕", "timed out", "Ran longer than its timeout and was killed"},
	model.Cancelled:   {"⊘", "cancelled", "Cancelled: by a newer patchset, a person, or timeouts.cl"},
	model.Interrupted: {"↯", "interrupted", "Interrupted in both attempts (its worker shut down, or could not check out the change): an infrastructure failure"},
	model.BotDied:     {"☠", "bot died", "Its worker stopped heartbeating during both attempts: an infrastructure failure"},
	model.NoResource:  {"∅", "no resource", "No live worker had the labels it requires: an infrastructure failure"},
	model.Expired:     {"⧗", "expired", "Waited in the queue longer than its expiry: an infrastructure failure"},
}

var statusInfo = map[string]struct{ icon, help string }{
	api.StatusQueued:    {"◷", "Every job is waiting for a worker"},
	api.StatusRunning:   {"▶", "Some jobs are still queued or running"},
	api.StatusPassed:    {"✓", "Every voting job passed"},
	api.StatusFailed:    {"✗", "A voting job did not pass"},
	api.StatusCancelled: {"⊘", "A job was cancelled, so no vote"},
	api.StatusUnknown:   {"?", "No jobs"},
}

// countInfra sums the counts of the states that are infrastructure failures.
func countInfra(m map[model.State]int) int {
	n := 0
	for st, c := range m {
		if st.Infra() {
			n += c
		}
	}
	return n
}

func state(v any) model.State {
	switch s := v.(type) {
	case model.State:
		return s
	case string:
		return model.State(s)
	}
	return model.State(fmt.Sprint(v))
}

// Button is an action form: a POST to Action with the XSRF token.
type Button struct {
	Action, Label, XSRF, Confirm, ID string
	Danger                           bool
}

type link struct{ Href, Text string }

type choice struct{ Key, Name string }

// funcs are the templates' functions; clock-dependent ones read now.
func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"lower":     func(v any) string { return strings.ToLower(fmt.Sprint(v)) },
		"stateIcon": func(v any) string { return stateInfo[state(v)].icon },
		"stateName": func(v any) string {
			if i, ok := stateInfo[state(v)]; ok {
				return i.name
			}
			return strings.ToLower(fmt.Sprint(v))
		},
		"stateHelp":    func(v any) string { return stateInfo[state(v)].help },
		"statusIcon":   func(s string) string { return statusInfo[s].icon },
		"statusHelp":   func(s string) string { return statusInfo[s].help },
		"stateChoices": func() []model.State { return model.AllStates },
		"hasState":     func(v []model.State, s model.State) bool { return slices.Contains(v, s) },
		"sortChoices": func() []choice {
			return []choice{{api.SortID, "id"}, {api.SortState, "state"}, {api.SortLastSeen, "last seen"}}
		},
		"srcLink":      srcLink,
		"ago":          func(t time.Time) string { return ago(u.o.Clock.Now().Sub(t)) },
		"dur":          dur,
		"since":        func(a, b time.Time) float64 { return b.Sub(a).Seconds() },
		"short":        func(rev string) string { return rev[:min(len(rev), 12)] },
		"add":          func(a, b int) int { return a + b },
		"count":        func(m map[model.State]int, st any) int { return m[state(st)] },
		"countInfra":   countInfra,
		"maxAttempts":  func() int { return model.MaxAttempts },
		"nextPage":     nextPage,
		"gerritChange": u.gerritChange,
		"button":       button,
		"exitCode": func(c *int) string {
			if c == nil || *c == 0 {
				return ""
			}
			return fmt.Sprint(*c)
		},
		"jobType": func(id string) string {
			if p, err := model.ParseJobID(id); err == nil {
				return p.Type
			}
			return id
		},
		"bytes": func(n int64) string {
			switch {
			case n >= 1<<20:
				return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
			case n >= 1<<10:
				return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
			}
			return fmt.Sprintf("%d B", n)
		},
		"utilisation": func(run, idle float64) string {
			if run+idle == 0 {
				return ""
			}
			return fmt.Sprintf("%.0f%%", 100*run/(run+idle))
		},
	}
}

// button makes a Button; flags are "danger", "confirm:TEXT" and "id:ID".
func button(action, label, xsrf string, flags ...string) Button {
	b := Button{Action: action, Label: label, XSRF: xsrf}
	for _, f := range flags {
		switch {
		case f == "danger":
			b.Danger = true
		case strings.HasPrefix(f, "confirm:"):
			b.Confirm = f[len("confirm:"):]
		case strings.HasPrefix(f, "id:"):
			b.ID = f[len("id:"):]
		}
	}
	return b
}

// srcLink links a job source: its patchset's page, or its branch's runs.
func srcLink(src string) *link {
	ps, post, err := model.ParseSrc(src)
	switch {
	case err != nil:
		return &link{Href: "/jobs?src=" + url.QueryEscape(src), Text: src}
	case ps != "":
		return &link{Href: "/cls/" + ps, Text: "patchset " + ps}
	}
	branch := post
	if i := strings.LastIndexByte(post, '-'); i > 0 {
		branch = post[:i]
	}
	return &link{Href: "/branches?branch=" + url.QueryEscape(branch), Text: "postsubmit " + branch}
}

// nextPage is the URL of the next page: the same query with the cursor.
func nextPage(q url.Values, cursor string) string {
	if cursor == "" {
		return ""
	}
	n := url.Values{}
	for k, v := range q {
		if k != "cursor" && k != "done" {
			n[k] = v
		}
	}
	n.Set("cursor", cursor)
	return "?" + n.Encode()
}

func (u *UI) gerritChange(change int, project string) string {
	if u.gerrit == "" {
		return ""
	}
	return u.gerrit + "/c/" + url.PathEscape(project) + "/+/" + fmt.Sprint(change)
}

// ago says how long ago something happened, roughly.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < 45*time.Second:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < 90*time.Minute:
		return fmt.Sprintf("%d min ago", int(d.Round(time.Minute).Minutes()))
	case d < 36*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Round(time.Hour).Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24+0.5))
}

// dur writes a duration in seconds for people: "0.4 s", "12 s",
// "4 min 05 s", "1 h 23 min".
func dur(s float64) string {
	switch {
	case s <= 0:
		return "0 s"
	case s < 10:
		return fmt.Sprintf("%.1f s", s)
	case s < 60:
		return fmt.Sprintf("%.0f s", s)
	case s < 3600:
		return fmt.Sprintf("%d min %02d s", int(s)/60, int(s)%60)
	case s < 48*3600:
		return fmt.Sprintf("%d h %02d min", int(s)/3600, int(s)%3600/60)
	}
	return fmt.Sprintf("%.1f days", s/86400)
}
