package workerapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// The Client implements the worker-facing part of the cache port over the
// worker API, so a remote worker hands it to its jobs' local proxy (see
// worker.Options.Cache) exactly as an in-process worker hands the cache.
var _ cache.Access = (*Client)(nil)

// FindMissing implements cache.Access, in batches of cache.MaxFindMissing.
func (c *Client) FindMissing(ctx context.Context, digests []cache.Digest) ([]cache.Digest, error) {
	for _, d := range digests {
		if err := d.Validate(); err != nil {
			return nil, err
		}
	}
	var missing []cache.Digest
	for len(digests) > 0 {
		n := min(len(digests), cache.MaxFindMissing)
		req, err := jsonRequest("cache/find_missing", cache.FindMissingRequest{Digests: digests[:n]})
		if err != nil {
			return nil, err
		}
		resp, err := c.call(ctx, req)
		if err != nil {
			return nil, err
		}
		var reply cache.FindMissingReply
		if err := json.Unmarshal(resp.body, &reply); err != nil {
			return nil, errs.Wrap(errs.Unavailable, "workerapi.cache/find_missing: malformed answer", err)
		}
		missing = append(missing, reply.Missing...)
		digests = digests[n:]
	}
	return missing, nil
}

// Put implements cache.Access. The content is kept for retries like an
// artifact's (in memory up to MemBuffer, else in a temporary file); content
// of another length than d.Size is refused before anything is sent.
func (c *Client) Put(ctx context.Context, d cache.Digest, r io.Reader) error {
	const op = "workerapi.cache.Put"
	if err := d.Validate(); err != nil {
		return err
	}
	longer := func() error {
		return errs.E(errs.InvalidArgument, op, "the content is longer than the digest's %d bytes", d.Size)
	}
	body, cleanup, err := c.replayableMax(r, d.Size, longer)
	if err != nil {
		if errs.CodeOf(err) == errs.Unknown {
			err = errs.Wrap(errs.Unavailable, op+": read content", err)
		}
		return err
	}
	defer cleanup()
	if _, n := body(); n != d.Size {
		return errs.E(errs.InvalidArgument, op, "the content has %d bytes, the digest says %d", n, d.Size)
	}
	req := &request{op: "cache/cas/" + d.String(), method: http.MethodPut, contentType: "application/octet-stream",
		unbounded: true, body: body}
	if d.Size > 64<<10 {
		// Lets the server refuse (too large, say) before the body is sent.
		req.header = http.Header{"Expect": {"100-continue"}}
	}
	_, err = c.call(ctx, req)
	return err
}

// Get implements cache.Access. The reader fails instead of reaching its
// end if the content does not match d.
func (c *Client) Get(ctx context.Context, d cache.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	resp, err := c.call(ctx, &request{op: "cache/cas/" + d.String(), method: http.MethodGet, unbounded: true, stream: true})
	if err != nil {
		return nil, err
	}
	if resp.stream == nil {
		return nil, errs.E(errs.Unavailable, "workerapi.cache.Get", "unexpected answer %d", resp.status)
	}
	return cache.VerifyingReader(resp.stream, d), nil
}

// SetRef implements cache.Access.
func (c *Client) SetRef(ctx context.Context, name string, d cache.Digest) error {
	if err := cache.ValidRefName(name); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	req, err := jsonRequest("cache/refs/"+name, cache.RefBody{Digest: d})
	if err != nil {
		return err
	}
	req.method = http.MethodPut
	_, err = c.call(ctx, req)
	return err
}

// ResolveRef implements cache.Access.
func (c *Client) ResolveRef(ctx context.Context, name string) (cache.Digest, error) {
	if err := cache.ValidRefName(name); err != nil {
		return cache.Digest{}, err
	}
	resp, err := c.call(ctx, &request{op: "cache/refs/" + name, method: http.MethodGet})
	if err != nil {
		return cache.Digest{}, err
	}
	var rb cache.RefBody
	if err := json.Unmarshal(resp.body, &rb); err != nil {
		return cache.Digest{}, errs.Wrap(errs.Unavailable, "workerapi.cache/refs: malformed answer", err)
	}
	return rb.Digest, nil
}
