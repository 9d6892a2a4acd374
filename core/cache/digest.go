package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// MaxObjectSize bounds the size a digest may name (1 TiB): far above any
// sane cache object, low enough that size arithmetic never overflows.
const MaxObjectSize = 1 << 40

// Digest names an object: the lowercase hex SHA-256 of its content and its
// size in bytes. The size is part of the name so a server can refuse an
// upload that cannot fit before reading it. Its text form is "hash/size".
type Digest struct {
	Hash string
	Size int64
}

// NewDigest returns the digest of hash and size, or InvalidArgument.
func NewDigest(hash string, size int64) (Digest, error) {
	d := Digest{Hash: hash, Size: size}
	return d, d.Validate()
}

// DigestOf returns the digest of data.
func DigestOf(data []byte) Digest {
	sum := sha256.Sum256(data)
	return Digest{Hash: hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

// DigestReader reads r to its end and returns the digest of what it read.
func DigestReader(r io.Reader) (Digest, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return Digest{}, err
	}
	return Digest{Hash: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// ParseDigest parses the text form "hash/size"; anything else is
// InvalidArgument.
func ParseDigest(s string) (Digest, error) {
	h, sz, ok := strings.Cut(s, "/")
	if !ok {
		return Digest{}, errs.E(errs.InvalidArgument, "cache.ParseDigest", "digest %q is not hash/size", clip(s))
	}
	n, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || (len(sz) > 1 && sz[0] == '0') || sz[0] == '+' {
		return Digest{}, errs.E(errs.InvalidArgument, "cache.ParseDigest", "digest %q: size is not a decimal integer", clip(s))
	}
	return NewDigest(h, n)
}

// Validate reports InvalidArgument unless Hash is 64 lowercase hex digits
// and Size is between 0 and MaxObjectSize. Only the canonical spelling is
// accepted, so one object never has two names.
func (d Digest) Validate() error {
	const op = "cache.Digest"
	if len(d.Hash) != 2*sha256.Size {
		return errs.E(errs.InvalidArgument, op, "hash %q is not 64 hex digits", clip(d.Hash))
	}
	for i := 0; i < len(d.Hash); i++ {
		c := d.Hash[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return errs.E(errs.InvalidArgument, op, "hash %q is not lowercase hex", clip(d.Hash))
		}
	}
	if d.Size < 0 || d.Size > MaxObjectSize {
		return errs.E(errs.InvalidArgument, op, "size %d is out of range [0, %d]", d.Size, int64(MaxObjectSize))
	}
	return nil
}

// String returns "hash/size".
func (d Digest) String() string { return d.Hash + "/" + strconv.FormatInt(d.Size, 10) }

// MarshalText encodes the digest as "hash/size", so JSON carries it as a string.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses "hash/size".
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// Sum returns the raw 32 bytes of a valid digest's hash.
func (d Digest) Sum() (sum [sha256.Size]byte) {
	hex.Decode(sum[:], []byte(d.Hash))
	return sum
}

// MaxRefName bounds a ref name's length.
const MaxRefName = 256

// ValidRefName reports InvalidArgument unless name is 1 to MaxRefName
// bytes of '/'-separated segments, each made of ASCII letters, digits and
// "._-+=@", and none of them empty, "." or "..". Names are safe as URL
// paths and object names as they are, with no escaping anywhere.
func ValidRefName(name string) error {
	const op = "cache.ValidRefName"
	if name == "" || len(name) > MaxRefName {
		return errs.E(errs.InvalidArgument, op, "ref name must be 1 to %d bytes", MaxRefName)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errs.E(errs.InvalidArgument, op, "ref name %q has an empty, '.' or '..' segment", clip(name))
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-+=@", c) >= 0) {
				return errs.E(errs.InvalidArgument, op, "ref name %q has the character %q", clip(name), c)
			}
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Verifier checks that a stream is exactly the content of a digest. Write
// everything through it (or read through Reader), then call Check.
type Verifier struct {
	d Digest
	h hash.Hash
	n int64
}

// NewVerifier returns a Verifier for d.
func NewVerifier(d Digest) *Verifier { return &Verifier{d: d, h: sha256.New()} }

// Write hashes p. It fails with InvalidArgument as soon as more than the
// digest's size was written, so an oversized upload stops early.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	if v.n > v.d.Size {
		return 0, v.sizeErr()
	}
	return v.h.Write(p)
}

func (v *Verifier) sizeErr() error {
	return errs.E(errs.InvalidArgument, "cache.Verify", "content of %s has %d bytes or more, want %d", v.d.Hash, v.n, v.d.Size)
}

// Check reports InvalidArgument unless exactly the digest's content was written.
func (v *Verifier) Check() error {
	if v.n != v.d.Size {
		return v.sizeErr()
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.d.Hash {
		return errs.E(errs.InvalidArgument, "cache.Verify", "content hashes to %s, not %s", got, v.d.Hash)
	}
	return nil
}

// CopyVerified copies r to w, reading at most d.Size+1 bytes, and reports
// InvalidArgument if r is not exactly d's content. Errors of r keep their
// code (a broken upload is not the caller's mistake); w's errors are
// returned as they are. On error, w has received a prefix at most.
func CopyVerified(w io.Writer, r io.Reader, d Digest) error {
	v := NewVerifier(d)
	// The verifier goes first, so w never receives a byte past the size.
	if _, err := io.Copy(io.MultiWriter(v, w), io.LimitReader(r, d.Size+1)); err != nil {
		return err
	}
	return v.Check()
}

// VerifyingReader returns a reader of rc that fails with Unavailable (the
// stored or transferred copy is at fault, not the caller) instead of
// returning io.EOF if the content does not match d. Network clients wrap
// downloads with it, so a job never builds on a corrupt object.
func VerifyingReader(rc io.ReadCloser, d Digest) io.ReadCloser {
	return &verifyingReader{rc: rc, v: NewVerifier(d)}
}

type verifyingReader struct {
	rc  io.ReadCloser
	v   *Verifier
	err error
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	if n > 0 {
		if _, werr := r.v.Write(p[:n]); werr != nil {
			r.err = errs.Wrap(errs.Unavailable, "cache: download", werr)
			return 0, r.err
		}
	}
	if err == io.EOF {
		if cerr := r.v.Check(); cerr != nil {
			r.err = errs.Wrap(errs.Unavailable, "cache: download", cerr)
			return n, r.err
		}
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.rc.Close() }
