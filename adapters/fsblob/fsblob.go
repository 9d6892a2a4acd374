// Package fsblob implements the Blobs port in a local directory, for the
// embedded runtime.
//
// Each object is a regular file at its name under the root directory. Every
// filesystem call goes through an os.Root, so neither a name (already
// checked by blob.ValidName) nor a symlink planted in the directory can reach
// a file outside it.
//
// Put writes a temporary file in the root's .tmp directory, syncs it and
// renames it over the object, so readers see the old object or the whole new
// one. The names .tmp and .meta (as first segment) are reserved and refused.
//
// Generation is the file's modification time in nanoseconds, which Put sets
// to a value that strictly increases within the process (the wall clock,
// bumped past the last value issued). It needs a file system that keeps
// nanosecond timestamps (ext4, xfs, btrfs, tmpfs, APFS); editing a file by
// hand changes it too, as it should.
//
// The content type lives in a small sidecar file under .meta, keyed by a hash
// of the name and holding the generation it belongs to; an object without a
// matching sidecar (written by hand, or whose sidecar was lost in a crash:
// sidecars are not synced) reads as application/octet-stream, which is also
// what Put stores nothing for.
package fsblob

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
)

const (
	tmpDir  = ".tmp"
	metaDir = ".meta"
	// DefaultContentType is what objects without a recorded type report.
	DefaultContentType = "application/octet-stream"
	// staleTmp is the age after which Open removes leftover temporary files.
	staleTmp = time.Hour
)

// Bucket is a blob.Bucket in a directory. Safe for concurrent use; several
// Buckets may share a directory, but concurrent Puts of one name from two
// processes may leave it with the default content type.
type Bucket struct {
	root *os.Root
	// locks serialise, per name stripe, the pair "write sidecar, rename
	// object" against each other and against reads of the pair, so an
	// object and its content type change together.
	locks [64]sync.RWMutex
	seed  maphash.Seed
}

var _ blob.Bucket = (*Bucket)(nil)

// Open returns a Bucket on dir, creating it if needed, and removes temporary
// files that crashed writers left more than an hour ago.
func Open(dir string) (*Bucket, error) {
	const op = "fsblob.Open"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, mapErr(op, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, mapErr(op, err)
	}
	for _, d := range []string{tmpDir, metaDir} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			root.Close()
			return nil, mapErr(op, err)
		}
	}
	b := &Bucket{root: root, seed: maphash.MakeSeed()}
	if entries, err := fs.ReadDir(root.FS(), tmpDir); err == nil {
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTmp {
				root.Remove(path.Join(tmpDir, e.Name()))
			}
		}
	}
	return b, nil
}

// Close releases the directory.
func (b *Bucket) Close() error { return b.root.Close() }

// check refuses names the port forbids and those this adapter reserves.
func check(op, name string) error {
	if err := blob.ValidName(name); err != nil {
		return errs.Wrap(errs.InvalidArgument, op, err)
	}
	first, _, _ := strings.Cut(name, "/")
	if first == tmpDir || first == metaDir {
		return errs.E(errs.InvalidArgument, op, "object name %q: %s and %s are reserved", name, tmpDir, metaDir)
	}
	return nil
}

func (b *Bucket) lock(name string) *sync.RWMutex {
	return &b.locks[maphash.String(b.seed, name)%uint64(len(b.locks))]
}

// lastGen is the last generation issued in this process.
var lastGen atomic.Int64

// nextGen returns a generation greater than any issued before in this process.
func nextGen() int64 {
	for {
		last := lastGen.Load()
		g := max(time.Now().UnixNano(), last+1)
		if lastGen.CompareAndSwap(last, g) {
			return g
		}
	}
}

// Put writes the object atomically: if r fails, nothing changes.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, contentType string) (*blob.Attributes, error) {
	const op = "fsblob.Put"
	if err := check(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	if contentType == "" {
		contentType = DefaultContentType
	}
	tmp, err := b.writeTemp(ctx, r)
	if err != nil {
		return nil, err
	}
	defer b.root.Remove(tmp) // a no-op once renamed

	gen := nextGen()
	mtime := time.Unix(0, gen)
	if err := b.root.Chtimes(tmp, mtime, mtime); err != nil {
		return nil, mapErr(op, err)
	}
	info, err := b.root.Stat(tmp)
	if err != nil {
		return nil, mapErr(op, err)
	}

	mu := b.lock(name)
	mu.Lock()
	defer mu.Unlock()
	b.writeMeta(name, info.ModTime().UnixNano(), contentType)
	if err := b.rename(tmp, name); err != nil {
		return nil, err
	}
	return b.attrs(name, info, contentType), nil
}

// writeTemp copies r into a synced temporary file and returns its name.
func (b *Bucket) writeTemp(ctx context.Context, r io.Reader) (string, error) {
	const op = "fsblob.Put"
	tmp := path.Join(tmpDir, randomName())
	f, err := b.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", mapErr(op, err)
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		err = errs.Wrap(errs.Unknown, op, err) // keeps the reader's code, if any
	} else if err = f.Sync(); err != nil {
		err = mapErr(op, err)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = mapErr(op, cerr)
	}
	if err != nil {
		b.root.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// rename moves tmp over name, creating parent directories, and syncs the
// parent so the rename survives a crash. A concurrent Delete may prune a
// parent directory between MkdirAll and Rename, so it tries again.
func (b *Bucket) rename(tmp, name string) error {
	const op = "fsblob.Put"
	dir := path.Dir(name)
	var err error
	for range 10 {
		if err = b.root.MkdirAll(dir, 0o755); err != nil {
			if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
				return errs.E(errs.FailedPrecondition, op, "%s: a parent of the name is an object", name)
			}
			return mapErr(op, err)
		}
		if err = b.root.Rename(tmp, name); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	switch {
	case errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST):
		return errs.E(errs.FailedPrecondition, op, "%s is a prefix of other objects", name)
	case err != nil:
		return mapErr(op, err)
	}
	if d, err := b.root.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// metaPath is where the content type of name is kept: flat under .meta, so
// sidecars never collide with each other the way "a" and "a/b" would.
func metaPath(name string) string {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	return path.Join(metaDir, h[:2], h)
}

// writeMeta records contentType for generation gen of name, best effort: a
// missing or stale sidecar only makes the object read as the default type.
// The caller holds name's lock.
func (b *Bucket) writeMeta(name string, gen int64, contentType string) {
	mp := metaPath(name)
	if contentType == DefaultContentType {
		b.root.Remove(mp)
		return
	}
	tmp := path.Join(tmpDir, randomName())
	if err := b.root.WriteFile(tmp, fmt.Appendf(nil, "%d\n%s", gen, contentType), 0o644); err != nil {
		return
	}
	if b.root.MkdirAll(path.Dir(mp), 0o755) != nil || b.root.Rename(tmp, mp) != nil {
		b.root.Remove(tmp)
	}
}

// readMeta returns the content type recorded for generation gen of name.
// The caller holds name's lock.
func (b *Bucket) readMeta(name string, gen int64) string {
	data, err := b.root.ReadFile(metaPath(name))
	if err != nil {
		return DefaultContentType
	}
	g, ct, ok := strings.Cut(string(data), "\n")
	if !ok || g != strconv.FormatInt(gen, 10) {
		return DefaultContentType
	}
	return ct
}

func (b *Bucket) attrs(name string, info fs.FileInfo, contentType string) *blob.Attributes {
	return &blob.Attributes{
		Name:        name,
		Size:        info.Size(),
		ContentType: contentType,
		ModTime:     info.ModTime().UTC(),
		Generation:  info.ModTime().UnixNano(),
	}
}

// Get opens the object. The open file keeps the version it opened even if
// the object is replaced or deleted while it is read.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "fsblob.Get"
	if err := check(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	f, err := b.root.Open(name)
	if err != nil {
		return nil, mapErr(op, err)
	}
	info, err := f.Stat()
	if err == nil && !info.Mode().IsRegular() {
		err = errs.E(errs.NotFound, op, "%s is not an object", name)
	}
	if err != nil {
		f.Close()
		return nil, mapErr(op, err)
	}
	return f, nil
}

// Stat returns the object's attributes.
func (b *Bucket) Stat(ctx context.Context, name string) (*blob.Attributes, error) {
	const op = "fsblob.Stat"
	if err := check(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	mu := b.lock(name)
	mu.RLock()
	defer mu.RUnlock()
	info, err := b.root.Stat(name)
	if err != nil {
		return nil, mapErr(op, err)
	}
	if !info.Mode().IsRegular() {
		return nil, errs.E(errs.NotFound, op, "%s is not an object", name)
	}
	return b.attrs(name, info, b.readMeta(name, info.ModTime().UnixNano())), nil
}

// List walks only the directory the prefix names (or its parent), collects
// the matching names, and sorts them: a directory walk is not in name order,
// since '-' and '.' sort before '/'.
func (b *Bucket) List(ctx context.Context, prefix string, limit int, cursor string) ([]*blob.Attributes, string, error) {
	const op = "fsblob.List"
	if limit <= 0 {
		limit = 1000
	}
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if blob.ValidName(start) != nil {
			return nil, "", nil // no valid name has this prefix
		}
	}
	type entry struct {
		name string
		d    fs.DirEntry
	}
	var found []entry
	err := fs.WalkDir(b.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // the directory vanished, or the prefix names none
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() {
			// Descend only where names can have the prefix.
			if p == tmpDir || p == metaDir ||
				(p != start && !strings.HasPrefix(prefix, p+"/") && !strings.HasPrefix(p+"/", prefix)) {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && strings.HasPrefix(p, prefix) && p > cursor {
			found = append(found, entry{p, d})
		}
		return nil
	})
	if err != nil {
		return nil, "", mapErr(op, err)
	}
	slices.SortFunc(found, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	var out []*blob.Attributes
	next := ""
	for i, e := range found {
		if len(out) == limit {
			next = found[i-1].name
			break
		}
		if a, err := b.listed(e.name, e.d); err == nil {
			out = append(out, a)
		}
	}
	return out, next, nil
}

// listed returns the attributes of a listed object, reading them again under
// the name's lock so the content type matches the generation.
func (b *Bucket) listed(name string, d fs.DirEntry) (*blob.Attributes, error) {
	mu := b.lock(name)
	mu.RLock()
	defer mu.RUnlock()
	info, err := d.Info()
	if err != nil {
		return nil, err
	}
	if s, err := b.root.Stat(name); err == nil && s.Mode().IsRegular() {
		info = s // d.Info may predate a concurrent Put
	}
	return b.attrs(name, info, b.readMeta(name, info.ModTime().UnixNano())), nil
}

// Delete removes the object and its sidecar, then the parent directories
// it leaves empty. A missing object is not an error.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	const op = "fsblob.Delete"
	if err := check(op, name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	mu := b.lock(name)
	mu.Lock()
	defer mu.Unlock()
	info, err := b.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil
	case err != nil:
		return mapErr(op, err)
	case info.IsDir():
		return nil // a prefix of other objects, not an object
	}
	if err := b.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return mapErr(op, err)
	}
	b.root.Remove(metaPath(name))
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if b.root.Remove(dir) != nil { // not empty, or gone
			break
		}
	}
	return nil
}

// mapErr gives a filesystem error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errs.CodeOf(err) != errs.Unknown:
		return err
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return errs.Wrap(errs.NotFound, op, err)
	case escapes(err):
		return errs.Wrap(errs.PermissionDenied, op, err)
	case errors.Is(err, fs.ErrPermission):
		return errs.Wrap(errs.PermissionDenied, op, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return errs.Wrap(errs.ResourceExhausted, op, err)
	case errors.Is(err, syscall.ENAMETOOLONG):
		return errs.Wrap(errs.InvalidArgument, op, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, op, err)
	default:
		return errs.Wrap(errs.Unknown, op, err)
	}
}

// escapes reports os.Root's refusal to follow a symlink out of the
// directory, whose error value is not exported.
func escapes(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == "path escapes from parent" {
			return true
		}
	}
	return false
}

// ctxReader stops a copy when the context ends.
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

func randomName() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
