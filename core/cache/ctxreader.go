package cache

import (
	"context"
	"io"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// ContextReader returns a reader of r that fails once ctx ends, so a copy
// from a slow client stops when the request is abandoned.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, errs.Wrap(errs.Unavailable, "read", err)
	}
	return c.r.Read(p)
}
