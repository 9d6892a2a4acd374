package ui

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/functions/api"
)

func TestNiceMax(t *testing.T) {
	for v, want := range map[float64]float64{0: 4, 1: 4, 4: 4, 4.5: 8, 9: 20, 21: 40, 39: 40, 41: 80, 170: 200, 1e6: 2e6} {
		if got := niceMax(v); got != want {
			t.Errorf("niceMax(%v) = %v, want %v", v, got, want)
		}
	}
}

func TestCharts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pt := func(min int, q, r float64) api.QueuePoint {
		return api.QueuePoint{Time: t0.Add(time.Duration(min) * time.Minute), Queued: q, Running: r}
	}
	// A gap of an hour splits each area in two: no line across the outage.
	svg := string(QueueChart([]api.QueuePoint{pt(0, 1, 2), pt(1, 3, 1), pt(61, 2, 2), pt(62, 0, 1)}, t0, t0.Add(2*time.Hour)))
	if n := strings.Count(svg, `<path class="s-queued"`); n != 2 {
		t.Errorf("%d queued areas, want 2:\n%s", n, svg)
	}
	if !strings.HasPrefix(svg, "<svg") || !strings.HasSuffix(svg, "</svg>") || !strings.Contains(svg, "00:00") && !strings.Contains(svg, "01:00") {
		t.Errorf("queue chart:\n%s", svg)
	}
	if empty := string(QueueChart(nil, t0, t0.Add(24*time.Hour))); !strings.Contains(empty, "no data yet") {
		t.Errorf("empty queue chart:\n%s", empty)
	}
	// Labels are escaped.
	pr := string(PassRateChart([]api.JobTypeStats{{Type: "<script>x</script>", Passed: 3, Failed: 1, PassRate: 0.75}}))
	if strings.Contains(pr, "<script>") || !strings.Contains(pr, "&lt;script&gt;") || !strings.Contains(pr, "75% of 4") {
		t.Errorf("pass rate chart:\n%s", pr)
	}
	h := string(Histogram(api.Distribute([]float64{0.5, 3, 3, 7200}), "run time", false))
	if strings.Count(h, `<rect class="bar"`) != len(api.BucketBounds)+1 || !strings.Contains(h, "2s – 5s: 2") {
		t.Errorf("histogram:\n%s", h)
	}
}
