package fleet_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
)

// BenchmarkClaim measures claims per second on the embedded store with 1, 8
// and 32 concurrent workers, each claim followed by its Finish (so the
// numbers are whole job hand-offs), and reports the ratio to one worker.
func BenchmarkClaim(b *testing.B) {
	var base float64
	for _, workers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			e := newEnvB(b)
			const jobs = 2000
			for cl := 1; cl <= jobs/5; cl++ {
				queueB(b, e, cl)
			}
			for w := 0; w < workers; w++ {
				if _, err := e.svc.Heartbeat(e.ctx, fleet.Heartbeat{WorkerID: fmt.Sprintf("w%d", w)}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			claimed := 0
			for w := 0; w < workers; w++ {
				id := fmt.Sprintf("w%d", w)
				wg.Go(func() {
					for {
						a, err := e.svc.Claim(e.ctx, id)
						if errs.Is(err, errs.NotFound) {
							return
						}
						if err != nil {
							b.Error(err)
							return
						}
						code := 0
						if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: id, JobID: a.Job.ID, State: model.Completed, ExitCode: &code}); err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						claimed++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			rate := float64(claimed) / time.Since(start).Seconds()
			if claimed != jobs {
				b.Fatalf("claimed %d of %d", claimed, jobs)
			}
			b.ReportMetric(rate, "claims/s")
			if workers == 1 {
				base = rate
			} else if base > 0 {
				b.ReportMetric(rate/base, "x-vs-1-worker")
			}
		})
	}
}
