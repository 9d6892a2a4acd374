package gerrit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// The change query language, a subset of Gerrit's:
//
//	query   := or
//	or      := and ("OR" and)*
//	and     := unary (["AND"] unary)*
//	unary   := ("-" | "NOT") unary | "(" or ")" | term
//	term    := operator ":" value | bare
//
// Values may be quoted with "..." or {...}. See doc.go for the operators.

type evalCtx struct {
	now    time.Time
	caller *account
	s      *Server
}

type node interface {
	match(ctx *evalCtx, c *change) bool
}

type andNode []node

func (n andNode) match(ctx *evalCtx, c *change) bool {
	for _, x := range n {
		if !x.match(ctx, c) {
			return false
		}
	}
	return true
}

type orNode []node

func (n orNode) match(ctx *evalCtx, c *change) bool {
	for _, x := range n {
		if x.match(ctx, c) {
			return true
		}
	}
	return false
}

type notNode struct{ n node }

func (n notNode) match(ctx *evalCtx, c *change) bool { return !n.n.match(ctx, c) }

type pred func(ctx *evalCtx, c *change) bool

func (p pred) match(ctx *evalCtx, c *change) bool { return p(ctx, c) }

// queryExpr is a parsed query. limit is the smallest limit:N in it (0 when
// absent).
type queryExpr struct {
	root  node
	limit int
}

func (q *queryExpr) match(ctx *evalCtx, c *change) bool { return q.root.match(ctx, c) }

type tokKind int

const (
	tWord tokKind = iota
	tLParen
	tRParen
	tNeg
)

type token struct {
	kind   tokKind
	text   string
	quoted bool
}

func tokenize(q string) ([]token, error) {
	var toks []token
	rs := []rune(q)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
			continue
		case r == '(':
			toks = append(toks, token{kind: tLParen})
			i++
			continue
		case r == ')':
			toks = append(toks, token{kind: tRParen})
			i++
			continue
		case r == '-' && i+1 < len(rs) && !unicode.IsSpace(rs[i+1]) && rs[i+1] != ')':
			toks = append(toks, token{kind: tNeg})
			i++
			continue
		}
		var b strings.Builder
		quoted := false
		for i < len(rs) && !unicode.IsSpace(rs[i]) && rs[i] != ')' {
			switch rs[i] {
			case '"', '{':
				end := '"'
				if rs[i] == '{' {
					end = '}'
				}
				j := i + 1
				for j < len(rs) && rs[j] != end {
					j++
				}
				if j == len(rs) {
					return nil, fmt.Errorf("line 1:%d mismatched input, missing closing %q", i, end)
				}
				b.WriteString(string(rs[i+1 : j]))
				quoted = true
				i = j + 1
			default:
				b.WriteRune(rs[i])
				i++
			}
		}
		toks = append(toks, token{kind: tWord, text: b.String(), quoted: quoted})
	}
	return toks, nil
}

type parser struct {
	toks  []token
	pos   int
	limit int
}

func (p *parser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

func isKeyword(t *token, kw string) bool {
	return t != nil && t.kind == tWord && !t.quoted && t.text == kw
}

// parseQuery parses a Gerrit change query.
func parseQuery(q string) (*queryExpr, error) {
	toks, err := tokenize(q)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("query is empty")
	}
	p := &parser{toks: toks}
	root, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("line 1:%d extraneous input in query %q", p.pos, q)
	}
	return &queryExpr{root: root, limit: p.limit}, nil
}

func (p *parser) parseOr() (node, error) {
	left, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	items := orNode{left}
	for isKeyword(p.peek(), "OR") {
		p.pos++
		right, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		items = append(items, right)
	}
	if len(items) == 1 {
		return left, nil
	}
	return items, nil
}

func (p *parser) parseAnd() (node, error) {
	var items andNode
	for {
		t := p.peek()
		if t == nil || t.kind == tRParen || isKeyword(t, "OR") {
			break
		}
		if isKeyword(t, "AND") {
			if len(items) == 0 {
				return nil, fmt.Errorf("unexpected AND")
			}
			p.pos++
		}
		u, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		items = append(items, u)
	}
	switch len(items) {
	case 0:
		return nil, fmt.Errorf("unexpected end of query")
	case 1:
		return items[0], nil
	}
	return items, nil
}

func (p *parser) parseUnary() (node, error) {
	t := p.peek()
	if t == nil {
		return nil, fmt.Errorf("unexpected end of query")
	}
	switch {
	case t.kind == tNeg || isKeyword(t, "NOT"):
		p.pos++
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return notNode{n}, nil
	case t.kind == tLParen:
		p.pos++
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if t := p.peek(); t == nil || t.kind != tRParen {
			return nil, fmt.Errorf("missing closing parenthesis")
		}
		p.pos++
		return n, nil
	case t.kind == tRParen:
		return nil, fmt.Errorf("unexpected )")
	}
	p.pos++
	return p.term(t)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (p *parser) term(t *token) (node, error) {
	op, val, hasOp := strings.Cut(t.text, ":")
	if !hasOp {
		return bareTerm(t.text)
	}
	if val == "" {
		return nil, fmt.Errorf("empty value for operator %s", op)
	}
	switch op {
	case "project":
		return pred(func(_ *evalCtx, c *change) bool { return c.project == val }), nil
	case "projects":
		return pred(func(_ *evalCtx, c *change) bool { return strings.HasPrefix(c.project, val) }), nil
	case "branch":
		b := normBranch(val)
		return pred(func(_ *evalCtx, c *change) bool { return c.branch == b }), nil
	case "status":
		return statusPred(val)
	case "is":
		return isPred(val)
	case "after", "since", "before", "until":
		t, err := parseQueryTime(val)
		if err != nil {
			return nil, err
		}
		if op == "after" || op == "since" {
			return pred(func(_ *evalCtx, c *change) bool { return !c.updated.Before(t) }), nil
		}
		return pred(func(_ *evalCtx, c *change) bool { return !c.updated.After(t) }), nil
	case "age":
		d, err := parseAge(val)
		if err != nil {
			return nil, err
		}
		return pred(func(ctx *evalCtx, c *change) bool { return !c.updated.After(ctx.now.Add(-d)) }), nil
	case "change":
		return changePred(val)
	case "owner":
		return pred(func(ctx *evalCtx, c *change) bool { return ctx.accountMatches(c.owner, val) }), nil
	case "uploader":
		return pred(func(ctx *evalCtx, c *change) bool { return ctx.accountMatches(c.current().uploader, val) }), nil
	case "label":
		return labelPred(val)
	case "limit":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("Invalid limit: %s", val)
		}
		if p.limit == 0 || n < p.limit {
			p.limit = n
		}
		return pred(func(*evalCtx, *change) bool { return true }), nil
	}
	return nil, fmt.Errorf("Unsupported operator %s:%s", op, val)
}

// bareTerm handles a word without an operator: a change number or a
// Change-Id (the parts of Gerrit's default field the fake supports).
func bareTerm(w string) (node, error) {
	if isDigits(w) || (strings.HasPrefix(w, "I") && len(w) > 1 && isHex(w[1:])) {
		return changePred(w)
	}
	return nil, fmt.Errorf("Unsupported query: %q (the fake supports no full-text search)", w)
}

func changePred(val string) (node, error) {
	if isDigits(val) {
		n, _ := strconv.Atoi(val)
		return pred(func(_ *evalCtx, c *change) bool { return c.num == n }), nil
	}
	if strings.HasPrefix(val, "I") && len(val) > 1 && isHex(val[1:]) {
		return pred(func(_ *evalCtx, c *change) bool { return strings.HasPrefix(c.changeID, val) }), nil
	}
	return nil, fmt.Errorf("Invalid change: %s", val)
}

func statusPred(val string) (node, error) {
	switch strings.ToLower(val) {
	case "open", "pending", "new":
		return pred(func(_ *evalCtx, c *change) bool { return c.status == StatusNew }), nil
	case "closed":
		return pred(func(_ *evalCtx, c *change) bool { return c.status != StatusNew }), nil
	case "merged":
		return pred(func(_ *evalCtx, c *change) bool { return c.status == StatusMerged }), nil
	case "abandoned":
		return pred(func(_ *evalCtx, c *change) bool { return c.status == StatusAbandoned }), nil
	}
	return nil, fmt.Errorf("Unrecognized value: %s", val)
}

func isPred(val string) (node, error) {
	switch strings.ToLower(val) {
	case "open", "pending", "new", "closed", "merged", "abandoned":
		return statusPred(val)
	case "wip":
		return pred(func(_ *evalCtx, c *change) bool { return c.wip }), nil
	case "visible":
		return pred(func(*evalCtx, *change) bool { return true }), nil
	case "owner":
		return pred(func(ctx *evalCtx, c *change) bool { return ctx.caller != nil && ctx.caller.id == c.owner }), nil
	}
	return nil, fmt.Errorf("Unrecognized value: %s", val)
}

// accountMatches matches an account against "self", an account id, an
// e-mail or a user name.
func (ctx *evalCtx) accountMatches(id int, val string) bool {
	if val == "self" {
		return ctx.caller != nil && ctx.caller.id == id
	}
	if isDigits(val) {
		n, _ := strconv.Atoi(val)
		return n == id
	}
	a := ctx.s.accounts[id]
	return a != nil && (strings.EqualFold(a.email, val) || a.username == val)
}

var queryTimeLayouts = []string{
	"2006-1-2 15:04:05.999999999 -0700",
	"2006-1-2 15:04:05 -0700",
	"2006-1-2 15:04 -0700",
	"2006-1-2 15:04:05.999999999",
	"2006-1-2 15:04:05",
	"2006-1-2 15:04",
	"2006-1-2",
}

// parseQueryTime parses Gerrit's "2006-01-02[ 15:04:05[.890][ -0700]]";
// no time means 00:00:00, no zone means UTC.
func parseQueryTime(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	for _, l := range queryTimeLayouts {
		if t, err := time.ParseInLocation(l, v, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("Unrecognized date: %s", v)
}

// parseAge parses "2d", "3hours", "1week"...: a number and a unit.
func parseAge(v string) (time.Duration, error) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(v[:i])
	if err != nil {
		return 0, fmt.Errorf("Invalid age: %s", v)
	}
	unit := strings.ToLower(strings.TrimSpace(v[i:]))
	var d time.Duration
	switch unit {
	case "s", "sec", "second", "seconds":
		d = time.Second
	case "m", "min", "minute", "minutes":
		d = time.Minute
	case "h", "hr", "hour", "hours":
		d = time.Hour
	case "d", "day", "days":
		d = 24 * time.Hour
	case "w", "week", "weeks":
		d = 7 * 24 * time.Hour
	case "mon", "month", "months":
		d = 30 * 24 * time.Hour
	case "y", "year", "years":
		d = 365 * 24 * time.Hour
	default:
		return 0, fmt.Errorf("Invalid age unit: %s", v)
	}
	return time.Duration(n) * d, nil
}

var (
	labelCmpRE  = regexp.MustCompile(`^([^=<>]+?)(>=|<=|=|>|<)([+-]?[0-9]+|MAX|MIN|max|min)$`)
	labelSignRE = regexp.MustCompile(`^(.+?)([+-][0-9]+)$`)
)

// labelPred handles label:NAME<op>VALUE on the current patch set, where op
// is =, >=, <=, > or <, and VALUE a number, MAX or MIN; "label:NAME+1" and
// "label:NAME-1" mean "=". "=0" matches changes without a non-zero vote on
// the label.
func labelPred(val string) (node, error) {
	var name, op, rest string
	if m := labelCmpRE.FindStringSubmatch(val); m != nil {
		name, op, rest = m[1], m[2], m[3]
	} else if m := labelSignRE.FindStringSubmatch(val); m != nil {
		name, op, rest = m[1], "=", m[2]
	} else {
		return nil, fmt.Errorf("Invalid label: %s", val)
	}
	name = strings.ToLower(name)
	return pred(func(ctx *evalCtx, c *change) bool {
		lt := ctx.s.labelByName[name]
		if lt == nil {
			return false
		}
		var want int
		switch strings.ToUpper(rest) {
		case "MAX":
			want = lt.Max
		case "MIN":
			want = lt.Min
		default:
			want, _ = strconv.Atoi(rest)
		}
		votes := c.current().approvals[lt.Name]
		if op == "=" && want == 0 {
			return len(votes) == 0
		}
		for _, a := range votes {
			if compare(a.value, op, want) {
				return true
			}
		}
		return false
	}), nil
}

func compare(v int, op string, want int) bool {
	switch op {
	case ">=":
		return v >= want
	case "<=":
		return v <= want
	case ">":
		return v > want
	case "<":
		return v < want
	}
	return v == want
}
