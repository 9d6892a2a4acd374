//go:build linux

package worker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// BenchmarkCheckout compares a checkout with the worker's mirror warm (the
// normal case: it fetches only the new change) against one that fetches
// the whole repository each time (no object cache), on a repository of
// 200 files and 8 MiB of poorly compressible content, over Gerrit's smart
// HTTP as the fake serves it. It prints the ratio.
//
//	go test ./core/worker -run XXX -bench Checkout -benchtime 20x
func BenchmarkCheckout(b *testing.B) {
	h := newGitHost(b)
	files := map[string]string{}
	for i := range 200 {
		buf := make([]byte, 20<<10)
		rand.Read(buf)
		files[fmt.Sprintf("src/f%03d.txt", i)] = hex.EncodeToString(buf)
	}
	if _, err := h.g.CreateBranch("demo", "main", gerrit.CommitSpec{Files: files}); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, cold bool) time.Duration {
		w, err := New(Options{Backend: newFake(), ID: "w1", WorkDir: b.TempDir(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		var start time.Time
		for i := -1; i < b.N; i++ { // i = -1 fills the mirror, untimed
			if i == 0 {
				h.fetched.Store(0)
				start = time.Now()
			}
			ps, err := h.g.CreateChange(gerrit.ChangeSpec{Project: "demo", Branch: "main", Subject: "c", OwnerEmail: "dev@example.com",
				Files: map[string]string{fmt.Sprintf("change-%d.txt", i+1): "x\n"}})
			if err != nil {
				b.Fatal(err)
			}
			if cold {
				os.RemoveAll(filepath.Join(w.workDir, ".git-cache"))
			}
			a := &fleet.Assignment{Job: &model.Job{ID: fmt.Sprintf("j%d", i+1)}, Checkout: &fleet.Checkout{
				Checkout: model.Checkout{Project: "demo", Branch: "main", Ref: ps.Ref, Revision: ps.Revision, Merge: true},
				URL:      h.url + "/demo", AuthURL: h.url + "/a/demo"}}
			j := &job{a: a, id: a.Job.ID, dir: filepath.Join(w.workDir, a.Job.ID), stopped: make(chan struct{})}
			j.logs = newLogShipper(newFake(), "w1", j.id, time.Hour, slog.New(slog.DiscardHandler), func(error) {})
			if err := os.MkdirAll(filepath.Join(j.dir, ".home"), 0o755); err != nil {
				b.Fatal(err)
			}
			if _, cerr := w.checkout(b.Context(), j); cerr != nil {
				b.Fatal(cerr)
			}
			os.RemoveAll(j.dir)
		}
		return time.Since(start) / time.Duration(b.N)
	}
	var warm, cold time.Duration
	var warmBytes, coldBytes int64
	b.Run("warm-mirror", func(b *testing.B) {
		warm = run(b, false)
		warmBytes = h.fetched.Load() / int64(b.N)
		b.ReportMetric(float64(warmBytes), "fetched-B/op")
	})
	b.Run("no-cache", func(b *testing.B) {
		cold = run(b, true)
		coldBytes = h.fetched.Load() / int64(b.N)
		b.ReportMetric(float64(coldBytes), "fetched-B/op")
	})
	if warm > 0 && warmBytes > 0 {
		fmt.Printf("checkout: warm mirror %v and %d bytes fetched; no cache %v and %d bytes: %.1fx faster, %.0fx fewer bytes",
			warm.Round(time.Millisecond), warmBytes, cold.Round(time.Millisecond), coldBytes,
			float64(cold)/float64(warm), float64(coldBytes)/float64(warmBytes))
		fmt.Println()
	}
}
