package monitoring

import (
	"fmt"
	"regexp"
	"strings"
)

// filter is a parsed monitoring filter: clauses that must all hold.
type filter []clause

// clause compares one field with a string, exactly or as a prefix.
type clause struct {
	field  string // "metric.type", "metric.labels.KEY", "resource.type", "resource.labels.KEY"
	value  string
	prefix bool
}

var clauseRE = regexp.MustCompile(`^\s*([a-z_]+(?:\.[A-Za-z0-9_]+)*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|starts_with\(\s*"((?:[^"\\]|\\.)*)"\s*\))\s*$`)

// parseFilter parses the subset of the filter language the fake supports:
// FIELD = "VALUE" and FIELD = starts_with("VALUE"), joined by AND.
func parseFilter(s string) (filter, error) {
	var f filter
	if strings.TrimSpace(s) == "" {
		return f, nil
	}
	for _, part := range strings.Split(s, " AND ") {
		m := clauseRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("the fake cannot parse filter clause %q (only FIELD = \"V\" and FIELD = starts_with(\"V\") joined by AND)", strings.TrimSpace(part))
		}
		c := clause{field: m[1], value: unquote(m[2])}
		if m[3] != "" || strings.Contains(part, "starts_with(") {
			c.value, c.prefix = unquote(m[3]), true
		}
		c.field = strings.Replace(strings.Replace(c.field, "metric.label.", "metric.labels.", 1), "resource.label.", "resource.labels.", 1)
		switch {
		case c.field == "metric.type", c.field == "resource.type",
			strings.HasPrefix(c.field, "metric.labels."), strings.HasPrefix(c.field, "resource.labels."):
		default:
			return nil, fmt.Errorf("the fake cannot filter on %q", c.field)
		}
		f = append(f, c)
	}
	return f, nil
}

func unquote(s string) string {
	return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(s)
}

func (c clause) match(v string, ok bool) bool {
	if !ok {
		return false
	}
	if c.prefix {
		return strings.HasPrefix(v, c.value)
	}
	return v == c.value
}

// metricTypeOnly reports whether every clause is on metric.type, the only
// field a descriptor list can filter on.
func (f filter) metricTypeOnly() bool {
	for _, c := range f {
		if c.field != "metric.type" {
			return false
		}
	}
	return true
}

// hasMetricType reports whether f constrains the metric type, which
// ListTimeSeries requires.
func (f filter) hasMetricType() bool {
	for _, c := range f {
		if c.field == "metric.type" {
			return true
		}
	}
	return false
}

// matchType reports whether a metric type passes the metric.type clauses.
func (f filter) matchType(t string) bool {
	for _, c := range f {
		if c.field == "metric.type" && !c.match(t, true) {
			return false
		}
	}
	return true
}

// matchPoint reports whether p's series passes every clause.
func (f filter) matchPoint(p Point) bool {
	for _, c := range f {
		var v string
		var ok bool
		switch {
		case c.field == "metric.type":
			v, ok = p.MetricType, true
		case c.field == "resource.type":
			v, ok = p.ResourceType, true
		case strings.HasPrefix(c.field, "metric.labels."):
			v, ok = p.MetricLabels[strings.TrimPrefix(c.field, "metric.labels.")]
		case strings.HasPrefix(c.field, "resource.labels."):
			v, ok = p.ResourceLabels[strings.TrimPrefix(c.field, "resource.labels.")]
		}
		if !c.match(v, ok) {
			return false
		}
	}
	return true
}
