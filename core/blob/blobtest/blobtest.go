// Package blobtest is the conformance suite of the Blobs port. Every Bucket
// adapter runs RunConformance, so the port's semantics are tested once, here.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// RunConformance runs the suite. newBucket returns an empty bucket; it
// registers its own cleanup with t, and the suite closes the bucket too.
func RunConformance(t *testing.T, newBucket func(t *testing.T) blob.Bucket) {
	open := func(t *testing.T) blob.Bucket {
		b := newBucket(t)
		t.Cleanup(func() { b.Close() })
		return b
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, open(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("InvalidNames", func(t *testing.T) { testInvalidNames(t, open(t)) })
	t.Run("FailedReader", func(t *testing.T) { testFailedReader(t, open(t)) })
	t.Run("ConcurrentPuts", func(t *testing.T) { testConcurrentPuts(t, open(t)) })
	t.Run("Large", func(t *testing.T) { testLarge(t, open(t)) })
}

var ctx = context.Background()

func put(t *testing.T, b blob.Bucket, name string, data []byte, contentType string) *blob.Attributes {
	t.Helper()
	a, err := b.Put(ctx, name, bytes.NewReader(data), contentType)
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return a
}

func mustRead(t *testing.T, b blob.Bucket, name string) []byte {
	t.Helper()
	data, err := blob.ReadAll(ctx, b, name)
	if err != nil {
		t.Fatalf("ReadAll(%q): %v", name, err)
	}
	return data
}

// sameAttrs compares what a backend must keep stable between Put and Stat.
func sameAttrs(a, b *blob.Attributes) bool {
	return a.Name == b.Name && a.Size == b.Size && a.ContentType == b.ContentType &&
		a.Generation == b.Generation && a.ModTime.Equal(b.ModTime)
}

func testRoundTrip(t *testing.T, b blob.Bucket) {
	cases := []struct {
		name, contentType string
		data              []byte
	}{
		{"a.txt", "text/plain; charset=utf-8", []byte("hello\n")},
		{"logs/job-1/00000000", "text/plain", []byte("line 1\nline 2\n")},
		{"deep/er/and/deeper/obj.bin", "application/octet-stream", []byte{0, 1, 2, 0xff}},
		{"empty", "application/json", nil},
		{"spaces and ünïcödé ☃/x y", "text/html", []byte("<p>")},
		{".hidden-ish/-dash", "text/css", []byte("a{}")},
	}
	for _, tc := range cases {
		a := put(t, b, tc.name, tc.data, tc.contentType)
		if a.Name != tc.name || a.Size != int64(len(tc.data)) || a.ContentType != tc.contentType || a.ModTime.IsZero() {
			t.Errorf("Put(%q) attrs = %+v, want name, size %d, content type %q and a time",
				tc.name, a, len(tc.data), tc.contentType)
		}
		if got := mustRead(t, b, tc.name); !bytes.Equal(got, tc.data) {
			t.Errorf("Get(%q) = %q, want %q", tc.name, got, tc.data)
		}
		s, err := b.Stat(ctx, tc.name)
		if err != nil {
			t.Fatalf("Stat(%q): %v", tc.name, err)
		}
		if !sameAttrs(a, s) {
			t.Errorf("Stat(%q) = %+v, Put returned %+v", tc.name, s, a)
		}
	}
}

func testOverwrite(t *testing.T, b blob.Bucket) {
	gens := map[int64]bool{}
	for i := range 5 {
		data := []byte(strings.Repeat(fmt.Sprint(i), i+1))
		a := put(t, b, "obj", data, "text/plain")
		if gens[a.Generation] {
			t.Errorf("write %d reused generation %d", i, a.Generation)
		}
		gens[a.Generation] = true
		if got := mustRead(t, b, "obj"); !bytes.Equal(got, data) {
			t.Errorf("after write %d Get = %q, want %q", i, got, data)
		}
		if s, err := b.Stat(ctx, "obj"); err != nil || s.Generation != a.Generation || s.Size != int64(len(data)) {
			t.Errorf("after write %d Stat = %+v, %v; want generation %d", i, s, err, a.Generation)
		}
	}
	// A reader opened before an overwrite sees the old object whole.
	put(t, b, "obj", []byte("old contents"), "text/plain")
	r, err := b.Get(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	put(t, b, "obj", []byte("new contents, longer"), "text/plain")
	if got, err := io.ReadAll(r); err != nil || string(got) != "old contents" && string(got) != "new contents, longer" {
		t.Errorf("reader open across an overwrite read %q, %v; want one whole version", got, err)
	}
}

func testNotFound(t *testing.T, b blob.Bucket) {
	put(t, b, "dir/obj", []byte("x"), "text/plain")
	for _, name := range []string{"missing", "dir/missing", "missing/deeper", "dir/obj/below"} {
		if _, err := b.Get(ctx, name); !errs.Is(err, errs.NotFound) {
			t.Errorf("Get(%q) = %v, want NotFound", name, err)
		}
		if _, err := b.Stat(ctx, name); !errs.Is(err, errs.NotFound) {
			t.Errorf("Stat(%q) = %v, want NotFound", name, err)
		}
	}
	// A prefix of an object is not an object.
	if _, err := b.Stat(ctx, "dir"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Stat of a prefix = %v, want NotFound", err)
	}
}

func testDelete(t *testing.T, b blob.Bucket) {
	put(t, b, "a/b", []byte("x"), "text/plain")
	put(t, b, "a/c", []byte("y"), "text/plain")
	for i := range 2 { // the second Delete finds nothing and is no error
		if err := b.Delete(ctx, "a/b"); err != nil {
			t.Errorf("Delete #%d: %v", i+1, err)
		}
	}
	if _, err := b.Stat(ctx, "a/b"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Stat after Delete = %v, want NotFound", err)
	}
	if err := b.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	if got := mustRead(t, b, "a/c"); string(got) != "y" {
		t.Errorf("sibling of a deleted object = %q", got)
	}
	if got := listAll(t, b, "", 0); !slices.Equal(got, []string{"a/c"}) {
		t.Errorf("List after Delete = %q, want [a/c]", got)
	}
	// The name can be used again, even as a prefix.
	put(t, b, "a/b/c", []byte("z"), "text/plain")
	if got := mustRead(t, b, "a/b/c"); string(got) != "z" {
		t.Errorf("Get(a/b/c) = %q", got)
	}
}

// listAll pages through List and returns the names in order.
func listAll(t *testing.T, b blob.Bucket, prefix string, limit int) []string {
	t.Helper()
	var names []string
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("List(%q, %d) never ends", prefix, limit)
		}
		attrs, next, err := b.List(ctx, prefix, limit, cursor)
		if err != nil {
			t.Fatalf("List(%q, %d, %q): %v", prefix, limit, cursor, err)
		}
		if limit > 0 && len(attrs) > limit {
			t.Fatalf("List(%q, %d) returned %d objects", prefix, limit, len(attrs))
		}
		for _, a := range attrs {
			names = append(names, a.Name)
		}
		if next == "" {
			return names
		}
		if len(attrs) == 0 && next == cursor {
			t.Fatalf("List(%q, %d) is stuck at cursor %q", prefix, limit, cursor)
		}
		cursor = next
	}
}

func testList(t *testing.T, b blob.Bucket) {
	// Name order differs from a depth-first walk of directories here: '-'
	// and '.' sort before '/', so "b/a-x" < "b/a.z" < "b/a/y".
	names := []string{
		"a", "a-b", "a.c", "ab/c", "b/a-x", "b/a/y", "b/a.z", "b/b/c/d", "c",
		"logs/1/0", "logs/1/1", "logs/10/0", "logs/2/0", "logs/2/1", "logs/2/2",
	}
	for i, n := range names {
		a := put(t, b, n, []byte(strings.Repeat("x", i)), "text/plain")
		if a.Size != int64(i) {
			t.Fatalf("Put(%q) size %d", n, a.Size)
		}
	}
	sorted := slices.Sorted(slices.Values(names))
	filter := func(prefix string) []string {
		var out []string
		for _, n := range sorted {
			if strings.HasPrefix(n, prefix) {
				out = append(out, n)
			}
		}
		return out
	}
	for _, prefix := range []string{"", "a", "b/", "b/a", "logs/1", "logs/1/", "logs/", "nope", "logs/2/2"} {
		for _, limit := range []int{0, 1, 2, 3, 100} {
			got := listAll(t, b, prefix, limit)
			if want := filter(prefix); !slices.Equal(got, want) {
				t.Errorf("List(%q, limit %d) = %q, want %q", prefix, limit, got, want)
			}
		}
	}
	attrs, next, err := b.List(ctx, "logs/2/", 2, "")
	if err != nil || len(attrs) != 2 || next == "" {
		t.Fatalf("first page = %d objects, next %q, %v; want 2 and a cursor", len(attrs), next, err)
	}
	if a := attrs[0]; a.Name != "logs/2/0" || a.Size != int64(slices.Index(names, "logs/2/0")) ||
		a.ContentType != "text/plain" || (a.Generation == 0 && a.ModTime.IsZero()) {
		t.Errorf("listed attrs = %+v, want those of logs/2/0", a)
	}
}

func testInvalidNames(t *testing.T, b blob.Bucket) {
	names := []string{
		"", "../x", "..", ".", "/abs", "trailing/", "a//b", "a/./b", "a/../b", "a/..",
		`a\b`, "a\x00b", "a\nb", "a\x7fb", strings.Repeat("n", 1025),
	}
	for _, name := range names {
		if _, err := b.Put(ctx, name, strings.NewReader("x"), "text/plain"); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Put(%q) = %v, want InvalidArgument", name, err)
		}
		if _, err := b.Get(ctx, name); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Get(%q) = %v, want InvalidArgument", name, err)
		}
		if _, err := b.Stat(ctx, name); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Stat(%q) = %v, want InvalidArgument", name, err)
		}
		if err := b.Delete(ctx, name); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Delete(%q) = %v, want InvalidArgument", name, err)
		}
	}
	if got := listAll(t, b, "", 0); len(got) != 0 {
		t.Errorf("invalid names wrote %q", got)
	}
	// The longest valid name, in segments short enough for any file system.
	long := strings.Repeat(strings.Repeat("n", 199)+"/", 5) + strings.Repeat("m", 24)
	put(t, b, long, []byte("long"), "text/plain")
	if got := mustRead(t, b, long); string(got) != "long" {
		t.Errorf("Get of a %d-byte name = %q", len(long), got)
	}
}

// failingReader yields some bytes, then an error.
type failingReader struct{ n int }

var errRead = errors.New("reader broke")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errRead
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = 'z'
	}
	r.n -= n
	return n, nil
}

func testFailedReader(t *testing.T, b blob.Bucket) {
	old := put(t, b, "obj", []byte("old"), "text/plain")
	for _, name := range []string{"obj", "new"} {
		if _, err := b.Put(ctx, name, &failingReader{n: 100 << 10}, "text/plain"); err == nil {
			t.Errorf("Put(%q) from a failing reader succeeded", name)
		}
	}
	if got := mustRead(t, b, "obj"); string(got) != "old" {
		t.Errorf("after a failed Put the object is %d bytes, want the old one", len(got))
	}
	if s, err := b.Stat(ctx, "obj"); err != nil || !sameAttrs(s, old) {
		t.Errorf("after a failed Put Stat = %+v, %v; want %+v", s, err, old)
	}
	if _, err := b.Stat(ctx, "new"); !errs.Is(err, errs.NotFound) {
		t.Errorf("a failed Put of a new object left one: %v", err)
	}
	if got := listAll(t, b, "", 0); !slices.Equal(got, []string{"obj"}) {
		t.Errorf("List after failed Puts = %q, want [obj]", got)
	}
}

func testConcurrentPuts(t *testing.T, b blob.Bucket) {
	const writers, size = 8, 256 << 10
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	stop := make(chan struct{})
	bad := make(chan string, 1)
	// A reader racing the writers must only ever see whole versions.
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := blob.ReadAll(ctx, b, "race")
			if errs.Is(err, errs.NotFound) {
				continue
			}
			if err != nil || !whole(data, versions) {
				select {
				case bad <- fmt.Sprintf("read %d bytes, %v", len(data), err):
				default:
				}
			}
		}
	})
	for i := range writers {
		wg.Go(func() {
			for range 3 {
				if _, err := b.Put(ctx, "race", bytes.NewReader(versions[i]), "application/octet-stream"); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("concurrent Put: %v", err)
	}
	select {
	case s := <-bad:
		t.Errorf("a reader during concurrent Puts saw a partial object: %s", s)
	default:
	}
	if got := mustRead(t, b, "race"); !whole(got, versions) {
		t.Errorf("after concurrent Puts the object is not one whole version (%d bytes)", len(got))
	}
	if got := listAll(t, b, "", 0); !slices.Equal(got, []string{"race"}) {
		t.Errorf("List after concurrent Puts = %q, want [race]", got)
	}
}

func whole(data []byte, versions [][]byte) bool {
	return slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(data, v) })
}

func testLarge(t *testing.T, b blob.Bucket) {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	a := put(t, b, "big/object", data, "application/octet-stream")
	if a.Size != int64(len(data)) {
		t.Errorf("size = %d, want %d", a.Size, len(data))
	}
	if got := mustRead(t, b, "big/object"); !bytes.Equal(got, data) {
		t.Errorf("read back %d bytes that differ from the %d written", len(got), len(data))
	}
}
