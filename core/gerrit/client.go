package gerrit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Options configure a Client.
type Options struct {
	URL      string // base URL, e.g. https://review.example.com
	User     string // with Password: use /a/ paths and basic auth
	Password string
	// MaxQPS bounds the request rate (token bucket, burst of MaxQPS rounded
	// up). Default 10.
	MaxQPS float64
	// Retries is how many times a transient failure is retried. Default 3.
	Retries int
	// BackoffBase is the first retry delay, doubling each time. Default 500ms.
	BackoffBase time.Duration
	// Timeout bounds one HTTP attempt. Default 30s.
	Timeout time.Duration
	// HTTPClient defaults to a client with Timeout.
	HTTPClient *http.Client
	// Metrics counts calls and errors (metrics.GerritCalls, GerritErrors).
	Metrics metrics.Metrics
}

// Client calls one Gerrit host. Safe for concurrent use.
type Client struct {
	base    *url.URL
	o       Options
	limiter *rate.Limiter
	hc      *http.Client
}

// New returns a client, or InvalidArgument for a bad URL.
func New(o Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errs.E(errs.InvalidArgument, "gerrit.New", "bad Gerrit URL %q", o.URL)
	}
	if o.MaxQPS <= 0 {
		o.MaxQPS = 10
	}
	if o.Retries == 0 {
		o.Retries = 3
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Discard{}
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: o.Timeout}
	}
	burst := int(o.MaxQPS + 0.999)
	return &Client{base: u, o: o, limiter: rate.NewLimiter(rate.Limit(o.MaxQPS), burst), hc: hc}, nil
}

// URL returns the base URL.
func (c *Client) URL() string { return c.base.String() }

// QueryChanges runs a change query (the q parameter, operators joined by
// spaces) with o= options, returning up to limit changes after skipping
// start, and whether more changes follow (_more_changes on the last one).
func (c *Client) QueryChanges(ctx context.Context, query string, opts []string, limit, start int) ([]*ChangeInfo, bool, error) {
	v := url.Values{"q": {query}}
	for _, o := range opts {
		v.Add("o", o)
	}
	if limit > 0 {
		v.Set("n", strconv.Itoa(limit))
	}
	if start > 0 {
		v.Set("S", strconv.Itoa(start))
	}
	body, err := c.do(ctx, "query_changes", http.MethodGet, "/changes/", v, nil)
	if err != nil {
		return nil, false, err
	}
	changes, err := ParseChanges(body)
	if err != nil {
		return nil, false, fmt.Errorf("gerrit query %q: %w", query, err)
	}
	more := len(changes) > 0 && changes[len(changes)-1].MoreChanges
	return changes, more, nil
}

// GetChange reads one change by number or id with o= options.
func (c *Client) GetChange(ctx context.Context, id string, opts ...string) (*ChangeInfo, error) {
	v := url.Values{}
	for _, o := range opts {
		v.Add("o", o)
	}
	body, err := c.do(ctx, "get_change", http.MethodGet, "/changes/"+url.PathEscape(id), v, nil)
	if err != nil {
		return nil, err
	}
	var ch ChangeInfo
	if err := decode(body, &ch); err != nil {
		return nil, fmt.Errorf("gerrit change %s: %w", id, err)
	}
	return &ch, nil
}

// ListMessages lists a change's messages, oldest first.
func (c *Client) ListMessages(ctx context.Context, id string) ([]ChangeMessageInfo, error) {
	body, err := c.do(ctx, "list_messages", http.MethodGet, "/changes/"+url.PathEscape(id)+"/messages", nil, nil)
	if err != nil {
		return nil, err
	}
	var msgs []ChangeMessageInfo
	if err := decode(body, &msgs); err != nil {
		return nil, fmt.Errorf("gerrit messages of %s: %w", id, err)
	}
	return msgs, nil
}

// PostReview posts a review on a revision of a change.
func (c *Client) PostReview(ctx context.Context, id, revision string, in ReviewInput) error {
	b, err := json.Marshal(in)
	if err != nil {
		return errs.Wrap(errs.InvalidArgument, "gerrit.PostReview", err)
	}
	path := "/changes/" + url.PathEscape(id) + "/revisions/" + url.PathEscape(revision) + "/review"
	_, err = c.do(ctx, "post_review", http.MethodPost, path, nil, b)
	return err
}

// GetBranch returns a branch of a project with its head revision.
func (c *Client) GetBranch(ctx context.Context, project, branch string) (*BranchInfo, error) {
	path := "/projects/" + url.PathEscape(project) + "/branches/" + url.PathEscape(branch)
	body, err := c.do(ctx, "get_branch", http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	var bi BranchInfo
	if err := decode(body, &bi); err != nil {
		return nil, fmt.Errorf("gerrit branch %s of %s: %w", branch, project, err)
	}
	if bi.Revision == "" {
		return nil, fmt.Errorf("gerrit branch %s of %s: response has no revision", branch, project)
	}
	return &bi, nil
}

// GetCommit returns a commit of a project.
func (c *Client) GetCommit(ctx context.Context, project, sha string) (*CommitInfo, error) {
	path := "/projects/" + url.PathEscape(project) + "/commits/" + url.PathEscape(sha)
	body, err := c.do(ctx, "get_commit", http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	var ci CommitInfo
	if err := decode(body, &ci); err != nil {
		return nil, fmt.Errorf("gerrit commit %s of %s: %w", sha, project, err)
	}
	return &ci, nil
}

// do sends one request, retrying transient failures. It returns the body
// with the XSSI prefix still on; decode strips it.
func (c *Client) do(ctx context.Context, method, verb, path string, q url.Values, body []byte) ([]byte, error) {
	op := "gerrit." + method
	prefix := ""
	if c.o.User != "" {
		prefix = "/a"
	}
	// path segments are already escaped (url.PathEscape), so join as text.
	target := c.base.String() + prefix + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	labels := map[string]string{"method": method}
	var lastErr error
	for attempt := 0; attempt <= c.o.Retries; attempt++ {
		if attempt > 0 {
			d := c.o.BackoffBase << (attempt - 1)
			d += time.Duration(rand.Int64N(int64(d)/2 + 1))
			select {
			case <-ctx.Done():
				return nil, errs.Wrap(errs.Unavailable, op, fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr))
			case <-time.After(d):
			}
		}
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, errs.Wrap(errs.Unavailable, op, err)
		}
		_ = c.o.Metrics.Add(ctx, metrics.GerritCalls, labels, 1)
		out, retry, err := c.once(ctx, verb, target, body)
		if err == nil {
			return out, nil
		}
		_ = c.o.Metrics.Add(ctx, metrics.GerritErrors, labels, 1)
		lastErr = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// once makes one attempt and says whether a failure may be retried. A POST
// is retried only when Gerrit certainly did not act on it (it answered
// 429/502/503/504 or the connection was never made), so a review is never
// posted twice by the client itself.
func (c *Client) once(ctx context.Context, verb, target string, body []byte) ([]byte, bool, error) {
	op := "gerrit " + verb + " " + redact(target)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, verb, target, rd)
	if err != nil {
		return nil, false, errs.Wrap(errs.InvalidArgument, op, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	}
	if c.o.User != "" {
		req.SetBasicAuth(c.o.User, c.o.Password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op2 *net.OpError
		dialFailed := errors.As(err, &op2) && op2.Op == "dial"
		return nil, verb == http.MethodGet || dialFailed, errs.Wrap(errs.Unavailable, op, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, verb == http.MethodGet, errs.Wrap(errs.Unavailable, op, err)
	}
	if resp.StatusCode/100 == 2 {
		return out, false, nil
	}
	msg := strings.TrimSpace(string(out))
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	st := resp.StatusCode
	err = errs.E(codeOf(st), op, "HTTP %d: %s", st, msg)
	switch {
	case st == 429 || st == 502 || st == 503 || st == 504:
		return nil, true, err
	case st >= 500:
		return nil, verb == http.MethodGet, err
	}
	return nil, false, err
}

func codeOf(status int) errs.Code {
	switch {
	case status == 404:
		return errs.NotFound
	case status == 401:
		return errs.Unauthenticated
	case status == 403:
		return errs.PermissionDenied
	case status == 409:
		return errs.FailedPrecondition
	case status == 429:
		return errs.ResourceExhausted
	case status >= 500:
		return errs.Unavailable
	}
	return errs.InvalidArgument
}

// redact keeps a URL short for error messages; URLs never carry credentials
// (they travel in the Authorization header).
func redact(u string) string {
	if len(u) > 300 {
		return u[:300] + "..."
	}
	return u
}

// xssiPrefix is the line Gerrit puts before every JSON body.
const xssiPrefix = ")]}'"

// StripPrefix removes Gerrit's XSSI prefix line, if present.
func StripPrefix(b []byte) []byte {
	b = bytes.TrimLeft(b, "\ufeff")
	if rest, ok := bytes.CutPrefix(b, []byte(xssiPrefix)); ok {
		return rest
	}
	return b
}

func decode(b []byte, v any) error {
	if err := json.Unmarshal(StripPrefix(b), v); err != nil {
		return errs.E(errs.Unknown, "gerrit.decode", "malformed JSON from Gerrit: %v", err)
	}
	return nil
}

// ParseChanges parses the body of a change query: a JSON list of ChangeInfo
// after the XSSI prefix. Changes without a number are refused: every caller
// keys on it.
func ParseChanges(b []byte) ([]*ChangeInfo, error) {
	var changes []*ChangeInfo
	if err := decode(b, &changes); err != nil {
		return nil, err
	}
	for i, ch := range changes {
		if ch == nil || ch.Number <= 0 {
			return nil, errs.E(errs.Unknown, "gerrit.ParseChanges", "change %d of the response has no _number", i)
		}
	}
	return changes, nil
}
