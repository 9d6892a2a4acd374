// Package gcs implements the Blobs port on Google Cloud Storage, for the
// production runtime (and locally against fake-gcs-server).
//
// GCS already gives the port's guarantees: an upload becomes visible only
// when it completes, so readers see the old object or the whole new one;
// object reads and listings are strongly consistent; and every write gets a
// new generation number, which is Attributes.Generation.
//
// Put streams through the client's resumable writer and, if the source
// reader fails, cancels the upload before it is finalised, so nothing is
// written. List pages by name (the cursor is the last name returned), which
// is what GCS's startOffset orders by. Objects that blob.ValidName refuses
// (such as "folder/" placeholders other tools create) are never listed.
//
// Download links: the UI may ask SignedURL for a short-lived V4 URL that
// lets a browser fetch an artifact straight from GCS. Signing needs a
// service account (a key, or the IAM signBlob permission on the runtime's
// own account); without one, and always against the emulator, SignedURL
// reports FailedPrecondition and the API proxies the download through
// Bucket.Get instead, which works everywhere.
//
// Writes to one name are limited by GCS to about one per second; the
// callers (logs in numbered chunks, artifacts and cache entries written
// once) never rewrite a name that often.
package gcs

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// DefaultContentType is what Put stores when the caller gives none, rather
// than letting the client sniff one from the first bytes.
const DefaultContentType = "application/octet-stream"

// MaxSignedURLTTL is the longest validity a V4 signed URL may have.
const MaxSignedURLTTL = 7 * 24 * time.Hour

// Bucket is a blob.Bucket on one GCS bucket. Safe for concurrent use.
type Bucket struct {
	client   *storage.Client
	bucket   *storage.BucketHandle
	name     string
	emulator bool
}

var _ blob.Bucket = (*Bucket)(nil)

// Open returns a Bucket on the named bucket. It honours
// STORAGE_EMULATOR_HOST (the client then talks plain HTTP to the emulator,
// without credentials) and clientOpts (credentials, endpoint). It does not
// check that the bucket exists: that needs storage.buckets.get, which a
// runtime account limited to objects lacks; the first call reports
// NotFound instead.
func Open(ctx context.Context, bucket string, clientOpts ...option.ClientOption) (*Bucket, error) {
	const op = "gcs.Open"
	if bucket == "" {
		return nil, errs.E(errs.InvalidArgument, op, "no bucket name")
	}
	c, err := storage.NewClient(ctx, clientOpts...)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return &Bucket{
		client:   c,
		bucket:   c.Bucket(bucket),
		name:     bucket,
		emulator: os.Getenv("STORAGE_EMULATOR_HOST") != "",
	}, nil
}

// Close releases the client.
func (b *Bucket) Close() error { return mapErr("gcs.Close", b.client.Close()) }

// Name returns the bucket's name.
func (b *Bucket) Name() string { return b.name }

func check(op, name string) error {
	if err := blob.ValidName(name); err != nil {
		return errs.Wrap(errs.InvalidArgument, op, err)
	}
	return nil
}

// object returns a handle whose calls are retried even without a
// precondition: rewriting the same bytes, or deleting again, is harmless,
// so an upload or delete whose response was lost can safely be repeated.
func (b *Bucket) object(name string) *storage.ObjectHandle {
	return b.bucket.Object(name).Retryer(storage.WithPolicy(storage.RetryAlways))
}

// Put uploads the object. If r fails, the upload is cancelled before GCS
// finalises it, so the old object (or none) stays.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, contentType string) (*blob.Attributes, error) {
	const op = "gcs.Put"
	if err := check(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	if contentType == "" {
		contentType = DefaultContentType
	}
	// Cancelling wctx is how an upload is abandoned: Close then fails and
	// the object is never created.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.object(name).NewWriter(wctx)
	w.ContentType = contentType
	src := &trackedReader{r: r}
	if _, err := io.Copy(w, src); err != nil {
		cancel()
		w.Close()
		if src.err != nil {
			return nil, errs.Wrap(errs.Unknown, op, src.err) // keeps the reader's code, if any
		}
		return nil, mapErr(op, err)
	}
	if err := w.Close(); err != nil {
		return nil, mapErr(op, err)
	}
	return attrs(w.Attrs()), nil
}

// trackedReader remembers the error of the source, so Put can tell a
// failing caller from a failing upload.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

func attrs(a *storage.ObjectAttrs) *blob.Attributes {
	return &blob.Attributes{
		Name:        a.Name,
		Size:        a.Size,
		ContentType: a.ContentType,
		ModTime:     a.Updated.UTC(),
		Generation:  a.Generation,
	}
}

// Get opens the object. The reader is pinned to the generation it opened,
// so a concurrent overwrite cannot mix two versions.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "gcs.Get"
	if err := check(op, name); err != nil {
		return nil, err
	}
	r, err := b.object(name).NewReader(ctx)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return &reader{r: r, op: op + " " + name}, nil
}

// reader gives read errors their codes.
type reader struct {
	r  *storage.Reader
	op string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = mapErr(r.op, err)
	}
	return n, err
}

func (r *reader) Close() error { return r.r.Close() }

// Stat returns the object's attributes.
func (b *Bucket) Stat(ctx context.Context, name string) (*blob.Attributes, error) {
	const op = "gcs.Stat"
	if err := check(op, name); err != nil {
		return nil, err
	}
	a, err := b.object(name).Attrs(ctx)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return attrs(a), nil
}

// List returns up to limit objects after cursor. It asks GCS to start at
// the cursor itself (startOffset is inclusive) and skips it, and fetches one
// object more than the page to learn whether another page follows, so a
// non-empty cursor always means more objects.
func (b *Bucket) List(ctx context.Context, prefix string, limit int, cursor string) ([]*blob.Attributes, string, error) {
	const op = "gcs.List"
	if limit <= 0 {
		limit = 1000
	}
	q := &storage.Query{Prefix: prefix, StartOffset: cursor}
	if err := q.SetAttrSelection([]string{"Name", "Size", "ContentType", "Updated", "Generation"}); err != nil {
		return nil, "", errs.Wrap(errs.Unknown, op, err)
	}
	it := b.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = min(limit+2, 1000)
	var out []*blob.Attributes
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, "", nil
		}
		if err != nil {
			return nil, "", mapErr(op, err)
		}
		if a.Name <= cursor || blob.ValidName(a.Name) != nil {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].Name, nil
		}
		out = append(out, attrs(a))
	}
}

// Delete removes the object; a missing one is no error.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	const op = "gcs.Delete"
	if err := check(op, name); err != nil {
		return err
	}
	err := b.object(name).Delete(ctx)
	if err == nil || errs.Is(mapErr(op, err), errs.NotFound) {
		return nil
	}
	return mapErr(op, err)
}

// SignedURL returns a V4 URL that lets anyone holding it GET the object
// until ttl passes. It checks neither that the object exists nor that the
// caller may read it: the API does that before handing a URL out.
//
// Signing needs service account credentials: a JSON key (signed locally)
// or the runtime's account with iam.serviceAccounts.signBlob on itself
// (signed by the IAM API). Without them, and always against the emulator,
// it returns FailedPrecondition: serve the object through Get instead.
func (b *Bucket) SignedURL(ctx context.Context, name string, ttl time.Duration) (string, error) {
	const op = "gcs.SignedURL"
	if err := check(op, name); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxSignedURLTTL {
		return "", errs.E(errs.InvalidArgument, op, "ttl %v is not in (0, %v]", ttl, MaxSignedURLTTL)
	}
	if b.emulator {
		return "", errs.E(errs.FailedPrecondition, op, "the storage emulator cannot sign URLs; proxy the download")
	}
	opts := &storage.SignedURLOptions{
		Scheme:  storage.SigningSchemeV4,
		Method:  "GET",
		Expires: time.Now().Add(ttl),
	}
	// The client signs either locally or with a call to the IAM API that
	// takes no context; wait for it only as long as ctx allows.
	type result struct {
		url string
		err error
	}
	done := make(chan result, 1)
	go func() {
		u, err := b.bucket.SignedURL(name, opts)
		done <- result{u, err}
	}()
	select {
	case <-ctx.Done():
		return "", errs.Wrap(errs.Unavailable, op, ctx.Err())
	case res := <-done:
		if res.err == nil {
			return res.url, nil
		}
		// Transient failures of the IAM call keep their codes; anything
		// else means these credentials cannot sign.
		if err := mapErr(op, res.err); errs.Transient(err) && errs.CodeOf(err) != errs.Unknown {
			return "", err
		}
		return "", errs.Wrap(errs.FailedPrecondition, op, res.err)
	}
}

// mapErr gives a storage error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var coded *errs.Error
	if errors.As(err, &coded) && errs.CodeOf(err) != errs.Unknown {
		return err
	}
	code := errs.Unknown
	var gerr *googleapi.Error
	var nerr net.Error
	switch {
	case errors.Is(err, storage.ErrObjectNotExist), errors.Is(err, storage.ErrBucketNotExist):
		code = errs.NotFound
	case isContextErr(err):
		code = errs.Unavailable
	case errors.As(err, &gerr):
		code = httpCode(gerr.Code)
	case grpcCode(err) != errs.Unknown:
		code = grpcCode(err)
	case errors.As(err, &nerr), errors.Is(err, io.ErrUnexpectedEOF):
		code = errs.Unavailable
	}
	return errs.Wrap(code, op, err)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func httpCode(c int) errs.Code {
	switch {
	case c == 400:
		return errs.InvalidArgument
	case c == 401:
		return errs.Unauthenticated
	case c == 403:
		return errs.PermissionDenied
	case c == 404:
		return errs.NotFound
	case c == 409:
		return errs.Aborted
	case c == 412:
		return errs.FailedPrecondition
	case c == 429:
		return errs.ResourceExhausted
	case c == 408, c >= 500:
		return errs.Unavailable
	}
	return errs.Unknown
}

// grpcCode covers a client made with storage.NewGRPCClient.
func grpcCode(err error) errs.Code {
	s, ok := status.FromError(err)
	if !ok {
		return errs.Unknown
	}
	switch s.Code() {
	case codes.NotFound:
		return errs.NotFound
	case codes.AlreadyExists:
		return errs.AlreadyExists
	case codes.FailedPrecondition:
		return errs.FailedPrecondition
	case codes.ResourceExhausted:
		return errs.ResourceExhausted
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal:
		return errs.Unavailable
	case codes.InvalidArgument, codes.OutOfRange:
		return errs.InvalidArgument
	case codes.PermissionDenied:
		return errs.PermissionDenied
	case codes.Unauthenticated:
		return errs.Unauthenticated
	case codes.Aborted:
		return errs.Aborted
	}
	return errs.Unknown
}
