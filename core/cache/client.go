package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// EnvURL is the variable through which the worker tells a job where its
// cache is: the base URL of the protocol, with the job's token in it.
const EnvURL = "TOLLGATE_CACHE_URL"

// HTTPClientOptions configure an HTTPClient.
type HTTPClientOptions struct {
	// HTTPClient sends the requests (default: a client without timeout;
	// bound calls with the context).
	HTTPClient *http.Client
	// Header is added to every request (for instance Authorization).
	Header http.Header
	// Retries is how many times a transient failure (network error, 502,
	// 503, 504) is retried (default 3; negative: never). An upload is
	// retried only if its reader is an io.Seeker.
	Retries int
	// BackoffBase is the first retry's delay, doubled each time (default 200ms).
	BackoffBase time.Duration
}

// HTTPClient implements Access over the cache's HTTP protocol; jobs use it
// through TOLLGATE_CACHE_URL. Downloads are checked against their digest.
// Safe for concurrent use.
type HTTPClient struct {
	base string // ends with '/'
	o    HTTPClientOptions
}

var _ Access = (*HTTPClient)(nil)

// NewHTTPClient returns a client of the protocol served at baseURL;
// InvalidArgument if it is not an http(s) URL.
func NewHTTPClient(baseURL string, o *HTTPClientOptions) (*HTTPClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errs.E(errs.InvalidArgument, "cache.NewHTTPClient", "want an http or https URL, got %q", baseURL)
	}
	var opts HTTPClientOptions
	if o != nil {
		opts = *o
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.Retries == 0 {
		opts.Retries = 3
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 200 * time.Millisecond
	}
	return &HTTPClient{base: strings.TrimRight(baseURL, "/") + "/", o: opts}, nil
}

// HTTPClientFromEnv returns a client of the URL in TOLLGATE_CACHE_URL, or
// FailedPrecondition if the variable is not set (the job runs without a
// cache). getenv is os.Getenv outside tests.
func HTTPClientFromEnv(getenv func(string) string) (*HTTPClient, error) {
	u := getenv(EnvURL)
	if u == "" {
		return nil, errs.E(errs.FailedPrecondition, "cache", "%s is not set: this job has no cache", EnvURL)
	}
	return NewHTTPClient(u, nil)
}

// FindMissing implements Access, in batches of MaxFindMissing.
func (c *HTTPClient) FindMissing(ctx context.Context, digests []Digest) ([]Digest, error) {
	var missing []Digest
	for len(digests) > 0 {
		n := min(len(digests), MaxFindMissing)
		body, err := json.Marshal(FindMissingRequest{Digests: digests[:n]})
		if err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, "cache.FindMissing", err)
		}
		var reply FindMissingReply
		if err := c.doJSON(ctx, "FindMissing", http.MethodPost, "find_missing", body, &reply); err != nil {
			return nil, err
		}
		missing = append(missing, reply.Missing...)
		digests = digests[n:]
	}
	return missing, nil
}

// Put implements Access. The content is checked locally too: a reader with
// more than d.Size bytes fails with InvalidArgument.
func (c *HTTPClient) Put(ctx context.Context, d Digest, r io.Reader) error {
	const op = "cache.Put"
	if err := d.Validate(); err != nil {
		return err
	}
	seeker, _ := r.(io.Seeker)
	var start int64
	if seeker != nil {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	retries := c.o.Retries
	if seeker == nil {
		retries = 0
	}
	return c.retry(ctx, op, retries, func(attempt int) (bool, error) {
		if attempt > 0 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return false, errs.Wrap(errs.Unavailable, op, err)
			}
		}
		body := &exactReader{r: r, left: d.Size}
		req, err := c.newRequest(ctx, http.MethodPut, "cas/"+d.String(), body)
		if err != nil {
			return false, err
		}
		req.ContentLength = d.Size
		if d.Size == 0 {
			// The transport sends no body, so check for content here.
			if _, err := body.Read(make([]byte, 1)); err != io.EOF {
				return false, err
			}
			req.Body, req.GetBody = http.NoBody, nil
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		if d.Size > expectContinueOver {
			// Lets the server refuse (too large, already present) before
			// the body is sent.
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := c.o.HTTPClient.Do(req)
		if body.err != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return false, body.err
		}
		if err != nil {
			return true, errs.Wrap(errs.Unavailable, op, err)
		}
		return c.finish(op, resp, nil)
	})
}

// expectContinueOver is the upload size above which the client asks the
// server whether to send the body.
const expectContinueOver = 64 << 10

// exactReader yields exactly left bytes of r, and fails if r has fewer or
// more. It looks one byte ahead before handing over the last ones, so an
// over-long reader fails before the request is complete and the server
// never stores it.
type exactReader struct {
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		if e.extra() {
			return 0, e.err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		e.err = errs.E(errs.InvalidArgument, "cache.Put", "the content is shorter than the digest's size")
		return 0, e.err
	case err != nil && err != io.EOF:
		return n, err
	case e.left == 0 && e.extra():
		return 0, e.err
	}
	return n, nil
}

// extra reports whether r has a byte past the size, and records the error.
func (e *exactReader) extra() bool {
	var one [1]byte
	if n, _ := io.ReadFull(e.r, one[:]); n > 0 {
		e.err = errs.E(errs.InvalidArgument, "cache.Put", "the content is longer than the digest's size")
		return true
	}
	return false
}

func (e *exactReader) Close() error { return nil }

// Get implements Access. The reader fails instead of reaching its end if
// the content does not match d.
func (c *HTTPClient) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	const op = "cache.Get"
	if err := d.Validate(); err != nil {
		return nil, err
	}
	var body io.ReadCloser
	err := c.retry(ctx, op, c.o.Retries, func(int) (bool, error) {
		req, err := c.newRequest(ctx, http.MethodGet, "cas/"+d.String(), nil)
		if err != nil {
			return false, err
		}
		resp, err := c.o.HTTPClient.Do(req)
		if err != nil {
			return true, errs.Wrap(errs.Unavailable, op, err)
		}
		if resp.StatusCode == http.StatusOK {
			body = resp.Body
			return false, nil
		}
		return c.finish(op, resp, nil)
	})
	if err != nil {
		return nil, err
	}
	return VerifyingReader(body, d), nil
}

// SetRef implements Access.
func (c *HTTPClient) SetRef(ctx context.Context, name string, d Digest) error {
	if err := ValidRefName(name); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	body, _ := json.Marshal(RefBody{Digest: d})
	return c.doJSON(ctx, "SetRef", http.MethodPut, "refs/"+name, body, nil)
}

// ResolveRef implements Access.
func (c *HTTPClient) ResolveRef(ctx context.Context, name string) (Digest, error) {
	if err := ValidRefName(name); err != nil {
		return Digest{}, err
	}
	var rb RefBody
	if err := c.doJSON(ctx, "ResolveRef", http.MethodGet, "refs/"+name, nil, &rb); err != nil {
		return Digest{}, err
	}
	return rb.Digest, rb.Digest.Validate()
}

func (c *HTTPClient) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, "cache: request", err)
	}
	for k, v := range c.o.Header {
		req.Header[k] = v
	}
	return req, nil
}

// doJSON sends a small request, retrying transient failures, and decodes
// the answer into out (if not nil).
func (c *HTTPClient) doJSON(ctx context.Context, name, method, path string, body []byte, out any) error {
	op := "cache." + name
	return c.retry(ctx, op, c.o.Retries, func(int) (bool, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := c.newRequest(ctx, method, path, rd)
		if err != nil {
			return false, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.o.HTTPClient.Do(req)
		if err != nil {
			return true, errs.Wrap(errs.Unavailable, op, err)
		}
		return c.finish(op, resp, out)
	})
}

// finish reads and closes an answer: nil (decoding a 2xx body into out),
// or its error and whether it is worth retrying.
func (c *HTTPClient) finish(op string, resp *http.Response, out any) (bool, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return true, errs.Wrap(errs.Unavailable, op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true, ResponseError(op, resp.StatusCode, b)
		}
		return false, ResponseError(op, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return false, errs.E(errs.Unavailable, op, "malformed answer: %v", err)
		}
	}
	return false, nil
}

// retry calls try until it succeeds, fails for good, or retries are spent,
// with exponential backoff and jitter between attempts.
func (c *HTTPClient) retry(ctx context.Context, op string, retries int, try func(attempt int) (retry bool, err error)) error {
	delay := c.o.BackoffBase
	for attempt := 0; ; attempt++ {
		again, err := try(attempt)
		if err == nil || !again || attempt >= retries {
			return err
		}
		t := time.NewTimer(time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return errs.Wrap(errs.Unavailable, op, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Second)
	}
}
