package fsblob

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/blob/blobtest"
	"github.com/tollgate-ci/tollgate/core/errs"
)

func open(t *testing.T, dir string) *Bucket {
	t.Helper()
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	blobtest.RunConformance(t, func(t *testing.T) blob.Bucket { return open(t, t.TempDir()) })
}

var ctx = context.Background()

// TestSymlinkEscape plants symlinks to a file and a directory outside the
// root and checks that the bucket neither reads nor writes through them.
func TestSymlinkEscape(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := open(t, dir)
	for link, target := range map[string]string{"file-link": secret, "dir-link": outside, "rel-link": "../" + filepath.Base(outside)} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"file-link", "dir-link/secret", "rel-link/secret"} {
		if r, err := b.Get(ctx, name); err == nil {
			r.Close()
			t.Errorf("Get(%q) read through a symlink out of the root", name)
		} else if !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("Get(%q) = %v, want PermissionDenied", name, err)
		}
		if _, err := b.Stat(ctx, name); err == nil {
			t.Errorf("Stat(%q) followed a symlink out of the root", name)
		}
	}
	for _, name := range []string{"dir-link/secret", "dir-link/new", "rel-link/new", "dir-link/sub/new"} {
		if _, err := b.Put(ctx, name, strings.NewReader("pwned"), "text/plain"); !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("Put(%q) = %v, want PermissionDenied", name, err)
		}
		if err := b.Delete(ctx, name); err == nil {
			if _, serr := os.Stat(secret); serr != nil {
				t.Fatalf("Delete(%q) removed a file outside the root", name)
			}
		}
	}
	// Writing the link's own name replaces the link, not its target.
	if _, err := b.Put(ctx, "file-link", strings.NewReader("mine"), "text/plain"); err != nil {
		t.Fatalf("Put over a symlink: %v", err)
	}
	if got, err := blob.ReadAll(ctx, b, "file-link"); err != nil || string(got) != "mine" {
		t.Errorf("after Put over a symlink Get = %q, %v", got, err)
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != "secret" {
		t.Errorf("the file outside the root is now %q, %v", got, err)
	}
	entries, err := os.ReadDir(outside)
	if err != nil || len(entries) != 1 {
		t.Errorf("outside directory has %d entries (%v), want only the secret", len(entries), err)
	}
	attrs, _, err := b.List(ctx, "", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		if a.Name != "file-link" {
			t.Errorf("List shows %q, reached through a symlink", a.Name)
		}
	}
}

func TestReservedNames(t *testing.T) {
	b := open(t, t.TempDir())
	for _, name := range []string{".tmp", ".tmp/x", ".meta/ab/cd"} {
		if _, err := b.Put(ctx, name, strings.NewReader("x"), ""); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Put(%q) = %v, want InvalidArgument", name, err)
		}
	}
	// Internal files never show in List.
	if _, err := b.Put(ctx, "a", strings.NewReader("x"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	attrs, _, err := b.List(ctx, "", 0, "")
	if err != nil || len(attrs) != 1 || attrs[0].Name != "a" {
		t.Errorf("List = %v, %v; want only a", attrs, err)
	}
}

// TestContentTypeSidecar checks the fallbacks of the content type: none
// given, and a file changed behind the bucket's back.
func TestContentTypeSidecar(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	a, err := b.Put(ctx, "x", strings.NewReader("x"), "")
	if err != nil || a.ContentType != DefaultContentType {
		t.Fatalf("Put with no type = %+v, %v; want %s", a, err, DefaultContentType)
	}
	if _, err := b.Put(ctx, "y", strings.NewReader("y"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "y"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "y"), later, later); err != nil {
		t.Fatal(err)
	}
	if s, err := b.Stat(ctx, "y"); err != nil || s.ContentType != DefaultContentType || s.Size != 6 {
		t.Errorf("Stat of a hand-edited file = %+v, %v; want the default type and the new size", s, err)
	}
}

// TestDeletePrunesDirectories checks that expiring logs leaves no empty
// directories behind, and that a Put into a pruned directory works.
func TestDeletePrunesDirectories(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	for _, name := range []string{"logs/j1/0", "logs/j1/1", "logs/j2/0"} {
		if _, err := b.Put(ctx, name, bytes.NewReader([]byte(name)), "text/plain"); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"logs/j1/0", "logs/j1/1"} {
		if err := b.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "j1")); !os.IsNotExist(err) {
		t.Errorf("logs/j1 still exists after its objects were deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "j2", "0")); err != nil {
		t.Errorf("sibling object gone: %v", err)
	}
	if _, err := b.Put(ctx, "logs/j1/2", strings.NewReader("again"), ""); err != nil {
		t.Errorf("Put into a pruned directory: %v", err)
	}
}

func TestOpenRemovesStaleTemporaries(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	stale, fresh := filepath.Join(dir, tmpDir, "stale"), filepath.Join(dir, tmpDir, "fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTmp)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	open(t, dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file (a concurrent writer's) removed: %v", err)
	}
}
