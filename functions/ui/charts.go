package ui

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/functions/api"
)

// The stats page's charts are SVG drawn here, on the server: no charting
// library, no script, nothing fetched. Every text in them is escaped; the
// rest is numbers.

// chart is the frame of a time chart: its size, plot margins and ranges.
type chart struct {
	w, h                     float64
	left, right, top, bottom float64
	t0, t1                   time.Time
	ymax                     float64
}

func (c chart) x(t time.Time) float64 {
	span := c.t1.Sub(c.t0).Seconds()
	if span <= 0 {
		return c.left
	}
	return c.left + (c.w-c.left-c.right)*t.Sub(c.t0).Seconds()/span
}

func (c chart) y(v float64) float64 {
	return c.h - c.bottom - (c.h-c.top-c.bottom)*v/c.ymax
}

// niceMax returns an axis maximum for values up to v: four steps of 1, 2
// or 5 times a power of ten, so the grid lines fall on whole numbers.
func niceMax(v float64) float64 {
	step := 1.0
	if v > 4 {
		p := math.Pow(10, math.Floor(math.Log10(v/4)))
		step = 10 * p
		for _, m := range []float64{1, 2, 5} {
			if v/4 <= m*p {
				step = m * p
				break
			}
		}
	}
	return 4 * step
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// frame draws the axes, horizontal grid lines with their values and time
// ticks, and opens the svg element.
func (c chart) frame(b *strings.Builder, label string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s"><title>%s</title>`,
		c.w, c.h, esc(label), esc(label))
	for i := 0; i <= 4; i++ {
		v := c.ymax * float64(i) / 4
		y := c.y(v)
		fmt.Fprintf(b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, c.left, c.w-c.right, y, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, c.left-6, y+4, esc(num(v)))
	}
	fmt.Fprintf(b, `<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, c.left, c.w-c.right, c.h-c.bottom, c.h-c.bottom)
	span := c.t1.Sub(c.t0)
	step := time.Hour
	for _, s := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		step = s
		if span/s <= 8 {
			break
		}
	}
	layout := "15:04"
	if step >= 24*time.Hour {
		layout = "Jan 2"
	}
	for t := c.t0.Truncate(step).Add(step); t.Before(c.t1); t = t.Add(step) {
		x := c.x(t)
		fmt.Fprintf(b, `<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, x, x, c.h-c.bottom, c.h-c.bottom+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, c.h-c.bottom+16, esc(t.UTC().Format(layout)))
	}
}

func num(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// segments splits times into runs without a gap longer than gap, so a
// chart does not draw a line across minutes with no data (the controller
// was down).
func segments(times []time.Time, gap time.Duration) [][2]int {
	var out [][2]int
	start := 0
	for i := 1; i <= len(times); i++ {
		if i == len(times) || times[i].Sub(times[i-1]) > gap {
			out = append(out, [2]int{start, i})
			start = i
		}
	}
	return out
}

func legend(b *strings.Builder, x, y float64, items ...[2]string) {
	for _, it := range items {
		fmt.Fprintf(b, `<g class="legend"><rect class="%s" x="%.1f" y="%.1f" width="10" height="10"/><text x="%.1f" y="%.1f">%s</text></g>`,
			esc(it[0]), x, y, x+14, y+9, esc(it[1]))
		x += 14 + 7*float64(len(it[1])) + 16
	}
}

func emptyNote(b *strings.Builder, c chart, note string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (c.left+c.w-c.right)/2, (c.top+c.h-c.bottom)/2, esc(note))
}

const noSamples = "no data yet: update_queue_metrics records a point every minute"

// QueueChart draws the queue length as stacked areas: waiting below,
// running above.
func QueueChart(points []api.QueuePoint, since, until time.Time) template.HTML {
	c := chart{w: 720, h: 220, left: 44, right: 12, top: 26, bottom: 24, t0: since, t1: until}
	var most float64
	times := make([]time.Time, len(points))
	for i, p := range points {
		most = max(most, p.Queued+p.Running)
		times[i] = p.Time
	}
	c.ymax = niceMax(most)
	var b strings.Builder
	c.frame(&b, "Queue length over time")
	legend(&b, c.left, 4, [2]string{"s-queued", "waiting"}, [2]string{"s-running", "running"})
	if len(points) == 0 {
		emptyNote(&b, c, noSamples)
	}
	base := c.y(0)
	area := func(class string, v func(api.QueuePoint) float64) {
		for _, seg := range segments(times, 2*time.Minute) {
			fmt.Fprintf(&b, `<path class="%s" d="M%.1f,%.1f`, class, c.x(points[seg[0]].Time), base)
			for _, p := range points[seg[0]:seg[1]] {
				fmt.Fprintf(&b, ` L%.1f,%.1f`, c.x(p.Time), c.y(v(p)))
			}
			// A lone point still gets a minute's width.
			end := c.x(points[seg[1]-1].Time)
			if seg[1]-seg[0] == 1 {
				end = c.x(points[seg[0]].Time.Add(time.Minute))
				fmt.Fprintf(&b, ` L%.1f,%.1f`, end, c.y(v(points[seg[0]])))
			}
			fmt.Fprintf(&b, ` L%.1f,%.1f Z"/>`, end, base)
		}
	}
	area("s-running", func(p api.QueuePoint) float64 { return p.Queued + p.Running })
	area("s-queued", func(p api.QueuePoint) float64 { return p.Queued })
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// WorkersChart draws workers alive and busy as lines.
func WorkersChart(points []api.WorkerPoint, since, until time.Time) template.HTML {
	c := chart{w: 720, h: 220, left: 44, right: 12, top: 26, bottom: 24, t0: since, t1: until}
	var most float64
	times := make([]time.Time, len(points))
	for i, p := range points {
		most = max(most, p.Alive, p.Busy)
		times[i] = p.Time
	}
	c.ymax = niceMax(most)
	var b strings.Builder
	c.frame(&b, "Workers alive and busy over time")
	legend(&b, c.left, 4, [2]string{"bar-ok", "alive"}, [2]string{"s-running", "busy"})
	if len(points) == 0 {
		emptyNote(&b, c, noSamples)
	}
	line := func(class string, v func(api.WorkerPoint) float64) {
		for _, seg := range segments(times, 2*time.Minute) {
			fmt.Fprintf(&b, `<polyline class="%s" points="`, class)
			for _, p := range points[seg[0]:seg[1]] {
				fmt.Fprintf(&b, "%.1f,%.1f ", c.x(p.Time), c.y(v(p)))
			}
			if seg[1]-seg[0] == 1 {
				p := points[seg[0]]
				fmt.Fprintf(&b, "%.1f,%.1f", c.x(p.Time.Add(time.Minute)), c.y(v(p)))
			}
			b.WriteString(`"/>`)
		}
	}
	line("l-alive", func(p api.WorkerPoint) float64 { return p.Alive })
	line("l-busy", func(p api.WorkerPoint) float64 { return p.Busy })
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// bucketLabel names a histogram bucket by its upper bound.
func bucketLabel(i int) string {
	if i >= len(api.BucketBounds) {
		return ">" + shortDur(api.BucketBounds[len(api.BucketBounds)-1])
	}
	return shortDur(api.BucketBounds[i])
}

func shortDur(s float64) string {
	switch {
	case s >= 3600:
		return num(s/3600) + "h"
	case s >= 60:
		return num(s/60) + "m"
	}
	return num(s) + "s"
}

// Histogram draws a distribution's buckets as bars; compact is the small
// version in the per-type table (no axis labels, a tooltip per bar).
func Histogram(d api.Distribution, label string, compact bool) template.HTML {
	w, h, left, bottom, top := 560.0, 200.0, 36.0, 34.0, 10.0
	if compact {
		w, h, left, bottom, top = 180, 40, 0, 0, 2
	}
	most := 0
	for _, bk := range d.Buckets {
		most = max(most, bk.Count)
	}
	ymax := niceMax(float64(most))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s"><title>%s</title>`, w, h, esc(label), esc(label))
	n := float64(len(d.Buckets))
	bw := (w - left) / n
	if !compact {
		for i := 0; i <= 4; i++ {
			v := ymax * float64(i) / 4
			y := h - bottom - (h-top-bottom)*v/ymax
			fmt.Fprintf(&b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/><text x="%.1f" y="%.1f" text-anchor="end">%s</text>`,
				left, w, y, y, left-4, y+4, esc(num(v)))
		}
	}
	for i, bk := range d.Buckets {
		bh := (h - top - bottom) * float64(bk.Count) / ymax
		x := left + float64(i)*bw
		lo := "0s"
		if i > 0 {
			lo = bucketLabel(i - 1)
		}
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s – %s: %d</title></rect>`,
			x+1, h-bottom-bh, max(bw-2, 1), bh, esc(lo), esc(bucketLabel(i)), bk.Count)
		if !compact && i%2 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x+bw/2, h-bottom+14, esc(bucketLabel(i)))
		}
	}
	if d.Count == 0 {
		if compact {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">no data</text>`, w/2, h/2+4)
		} else {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">no data in this window</text>`, (left+w)/2, h/2)
		}
	}
	if !compact {
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, left, w, h-bottom, h-bottom)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// PassRateChart draws one horizontal bar per job type.
func PassRateChart(types []api.JobTypeStats) template.HTML {
	row, left, w := 26.0, 120.0, 560.0
	h := max(row*float64(len(types))+10, 40)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="Pass rate per job type"><title>Pass rate per job type</title>`, w, h)
	if len(types) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="24" text-anchor="middle">no job ended in this window</text>`, w/2)
	}
	bar := w - left - 110
	for i, t := range types {
		y := 6 + float64(i)*row
		n := t.Passed + t.Failed + t.Infra
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-8, y+13, esc(t.Type))
		if n > 0 {
			fmt.Fprintf(&b, `<rect class="bar-bad" x="%.1f" y="%.1f" width="%.1f" height="16"/>`, left, y, bar)
		}
		fmt.Fprintf(&b, `<rect class="bar-ok" x="%.1f" y="%.1f" width="%.1f" height="16"><title>%s: %d passed, %d failed, %d infrastructure failures</title></rect>`,
			left, y, bar*t.PassRate, esc(t.Type), t.Passed, t.Failed, t.Infra)
		label := "no ended run"
		if n > 0 {
			label = fmt.Sprintf("%.0f%% of %d", 100*t.PassRate, n)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, left+bar+8, y+13, esc(label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
