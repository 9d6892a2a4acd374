package cachetest

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// Mem is an in-memory cache.Access without eviction, for tests of what
// carries the cache (the HTTP protocol, proxies, commands), not of a
// backend. Objects larger than Limit are refused with ResourceExhausted.
type Mem struct {
	Limit int64

	mu   sync.Mutex
	objs map[cache.Digest][]byte
	refs map[string]cache.Digest
	puts int
}

var _ cache.Access = (*Mem)(nil)

// NewMem returns an empty Mem accepting objects of up to 1 MiB.
func NewMem() *Mem {
	return &Mem{Limit: 1 << 20, objs: map[cache.Digest][]byte{}, refs: map[string]cache.Digest{}}
}

// Stored returns how many Puts stored an object.
func (m *Mem) Stored() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.puts
}

// FindMissing implements cache.Access.
func (m *Mem) FindMissing(_ context.Context, ds []cache.Digest) ([]cache.Digest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []cache.Digest
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			return nil, err
		}
		if _, ok := m.objs[d]; !ok && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// Put implements cache.Access.
func (m *Mem) Put(_ context.Context, d cache.Digest, r io.Reader) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Size > m.Limit {
		return errs.E(errs.ResourceExhausted, "cachetest.Mem", "%d bytes is over the limit", d.Size)
	}
	var b bytes.Buffer
	if err := cache.CopyVerified(&b, r, d); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[d] = b.Bytes()
	m.puts++
	return nil
}

// Get implements cache.Access.
func (m *Mem) Get(_ context.Context, d cache.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[d]
	if !ok {
		return nil, errs.E(errs.NotFound, "cachetest.Mem", "%s is not in the cache", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// SetRef implements cache.Access.
func (m *Mem) SetRef(_ context.Context, name string, d cache.Digest) error {
	if err := cache.ValidRefName(name); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[d]; !ok {
		return errs.E(errs.FailedPrecondition, "cachetest.Mem", "%s is not in the cache", d)
	}
	m.refs[name] = d
	return nil
}

// ResolveRef implements cache.Access.
func (m *Mem) ResolveRef(_ context.Context, name string) (cache.Digest, error) {
	if err := cache.ValidRefName(name); err != nil {
		return cache.Digest{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.refs[name]
	if !ok {
		return cache.Digest{}, errs.E(errs.NotFound, "cachetest.Mem", "no ref %s", name)
	}
	return d, nil
}
