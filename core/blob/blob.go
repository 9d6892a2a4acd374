// Package blob defines the Blobs port: named byte objects for logs,
// artifacts and cache entries (Go CDK's blob is the model).
//
// Names are slash-separated relative paths; ValidName states which ones are
// allowed and every adapter refuses others with InvalidArgument before
// touching storage, so no name can escape the bucket. Writes are atomic: a
// reader sees the old object or the whole new one, never a part. All methods
// are safe for concurrent use.
package blob

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// Attributes describe a stored object.
type Attributes struct {
	Name        string
	Size        int64
	ContentType string
	ModTime     time.Time
	// Generation changes on every write; use it as a precondition.
	Generation int64
}

// Bucket is the Blobs port.
type Bucket interface {
	// Put writes the object name from r, replacing any existing one, and
	// returns its attributes. If r fails, nothing is written.
	Put(ctx context.Context, name string, r io.Reader, contentType string) (*Attributes, error)

	// Get opens the object for reading; NotFound if missing. The caller closes it.
	Get(ctx context.Context, name string) (io.ReadCloser, error)

	// Stat returns the object's attributes; NotFound if missing.
	Stat(ctx context.Context, name string) (*Attributes, error)

	// List returns objects whose names start with prefix, in name order, up to
	// limit (default 1000), after the cursor; and the cursor of the next page
	// ("" at the end).
	List(ctx context.Context, prefix string, limit int, cursor string) ([]*Attributes, string, error)

	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error

	// Close releases resources.
	Close() error
}

// ValidName reports nil when name is a clean relative object name: not
// empty, at most 1024 bytes, no leading or trailing '/', no empty, "." or
// ".." segments, no backslash and no control characters.
func ValidName(name string) error {
	const op = "blob.ValidName"
	if name == "" || len(name) > 1024 {
		return errs.E(errs.InvalidArgument, op, "object name must be 1 to 1024 bytes")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return errs.E(errs.InvalidArgument, op, "object name %q has a control character or backslash", name)
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errs.E(errs.InvalidArgument, op, "object name %q has an empty, '.' or '..' segment", name)
		}
	}
	return nil
}

// ReadAll reads a whole object.
func ReadAll(ctx context.Context, b Bucket, name string) ([]byte, error) {
	r, err := b.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
