package report

import (
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
)

// Drawing geometry of the timeline, in SVG user units (pixels).
const (
	svgWidth   = 1360
	labelWidth = 150
	rightPad   = 24
	axisHeight = 26
	laneHeight = 34
	jobRow     = 7
	maxJobRows = 14
	plotWidth  = svgWidth - labelWidth - rightPad
)

// scale maps seconds to x.
type scale struct{ dur float64 }

func (s scale) x(t float64) float64 {
	if t < 0 {
		t = 0
	}
	if t > s.dur {
		t = s.dur
	}
	return labelWidth + t/s.dur*plotWidth
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// tickStep picks a round step that gives about ten ticks over dur.
func tickStep(dur float64) float64 {
	for _, st := range []float64{0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800} {
		if dur/st <= 12 {
			return st
		}
	}
	return 3600
}

func fmtT(t float64) string {
	if t < 10 {
		return fmt.Sprintf("%.2fs", t)
	}
	return fmt.Sprintf("%.1fs", t)
}

// timelineSVG draws the swim lanes: one per service, then the test's own
// row (checks, notes, failures), then the jobs; faults shaded over the
// lanes they affect and the failure as a red line through every lane.
func timelineSVG(tl *Timeline, fail Event, hasFail bool) template.HTML {
	sc := scale{dur: math.Max(tl.Duration, 0.001)}
	lanes := append([]string(nil), tl.Lanes...)
	laneY := map[string]float64{}
	for i, l := range lanes {
		laneY[l] = axisHeight + float64(i)*laneHeight
	}
	testY := axisHeight + float64(len(lanes))*laneHeight
	rows, nrows := packJobs(tl.Jobs)
	jobsY := testY + laneHeight
	jobsH := math.Max(float64(nrows)*jobRow+8, laneHeight)
	height := jobsY + jobsH + 4

	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" data-left="%d" data-width="%d" data-dur="%.6f">`,
		svgWidth, height, svgWidth, height, labelWidth, plotWidth, sc.dur)
	// Lane backgrounds and labels.
	band := func(cls, name string, y, h float64, i int) {
		fill := "#ffffff"
		if i%2 == 0 {
			fill = "#f4f6f8"
		}
		fmt.Fprintf(&b, `<g class="%s" data-lane="%s"><rect x="0" y="%.1f" width="%d" height="%.1f" fill="%s"/><text class="lane-label" x="8" y="%.1f">%s</text></g>`,
			cls, esc(name), y, svgWidth, h, fill, y+h/2+4, esc(name))
	}
	for i, l := range lanes {
		band("lane", l, laneY[l], laneHeight, i)
	}
	band("lane-test", "test (checks)", testY, laneHeight, len(lanes))
	band("lane-jobs", fmt.Sprintf("jobs (%d)", len(tl.Jobs)), jobsY, jobsH, len(lanes)+1)
	// Time axis with a grid line per tick.
	step := tickStep(sc.dur)
	for t := 0.0; t <= sc.dur+1e-9; t += step {
		x := sc.x(t)
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%.0f"/><text class="tick" x="%.1f" y="20" text-anchor="middle">%s</text>`,
			x, axisHeight-4, x, height, x, fmtT(t))
	}
	// Faults: one shaded rect per affected lane, the label on the first.
	for i, f := range tl.Faults {
		x1, x2 := sc.x(f.Start), sc.x(f.End)
		w := math.Max(x2-x1, 2)
		title := fmt.Sprintf("%s: %s – %s", f.Text, fmtT(f.Start), endText(f))
		if f.Rules != "" {
			title += "\n" + f.Rules
		}
		first := true
		for _, l := range f.Lanes {
			y, ok := laneY[l]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, `<rect class="fault-span" data-fault="%d" data-text="%s" data-lane="%s" x="%.1f" y="%.1f" width="%.1f" height="%d"><title>%s</title></rect>`,
				i, esc(f.Text), esc(l), x1, y+1, w, laneHeight-2, esc(title))
			if first {
				fmt.Fprintf(&b, `<text class="fault-label" x="%.1f" y="%.1f">⚡ %s</text>`, x1+3, y+11, esc(f.Text))
				first = false
			}
		}
	}
	// Lane events: heartbeats as ticks, lifecycle and states as markers.
	for _, e := range tl.Events {
		y, ok := laneY[e.Lane]
		if e.Kind == KindFailure || e.Kind == KindNote {
			continue
		}
		if !ok {
			continue
		}
		x := sc.x(e.T)
		switch e.Kind {
		case KindHeartbeat:
			fmt.Fprintf(&b, `<line class="hb" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"><title>%s %s</title></line>`, x, y+laneHeight-9, x, y+laneHeight-2, fmtT(e.T), esc(e.Text))
		case KindState:
			fmt.Fprintf(&b, `<path class="state %s" d="M%.1f %.1f l5 5 l-5 5 l-5 -5 z"><title>%s %s</title></path><text class="state-label" x="%.1f" y="%.1f" text-anchor="%s">%s</text>`,
				stateClass(e.Text), x, y+13, fmtT(e.T), esc(e.Text), x+anchorPad(x)*1.5, y+22, anchor(x), esc(short(e.Text, 28)))
		default:
			fmt.Fprintf(&b, `<circle class="ev-lifecycle %s" cx="%.1f" cy="%.1f" r="4"><title>%s %s</title></circle>`,
				lifecycleClass(e.Text), x, y+8, fmtT(e.T), esc(e.Text))
		}
	}
	// The test's row: checks as bars, notes as flags.
	for _, c := range tl.Checks {
		x1, x2 := sc.x(c.Start), sc.x(c.End)
		cls := "check running"
		switch {
		case c.Done && c.OK:
			cls = "check ok"
		case c.Done:
			cls = "check failed"
		}
		title := fmt.Sprintf("await %s: %s – %s", c.What, fmtT(c.Start), fmtT(c.End))
		if c.Err != "" {
			title += "\n" + c.Err
		}
		fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="10" rx="2"><title>%s</title></rect>`,
			cls, x1, testY+6, math.Max(x2-x1, 2), esc(title))
	}
	for _, e := range tl.Events {
		if e.Kind != KindNote {
			continue
		}
		x := sc.x(e.T)
		fmt.Fprintf(&b, `<path class="note" d="M%.1f %.1f v12 M%.1f %.1f h8 l-3 3 l3 3 h-8"><title>%s %s</title></path>`, x, testY+18, x, testY+18, fmtT(e.T), esc(e.Text))
	}
	// Jobs: a line from submit to end, coloured by terminator.
	for i, j := range tl.Jobs {
		y := jobsY + 5 + float64(rows[i])*jobRow
		x1, x2 := sc.x(j.Submit), sc.x(j.End)
		fmt.Fprintf(&b, `<line class="job %s" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"><title>%s %s: %s – %s (%s) %s %s</title></line>`,
			termClass(j), x1, y, math.Max(x2, x1+2), y, esc(j.Op), esc(j.ID), fmtT(j.Submit), endOfJob(j), fmtDur(j.Latency()), esc(j.Terminator), esc(j.Err))
	}
	// Other failure events as small marks; the pinned one as a line through every lane.
	for _, e := range tl.Events {
		if e.Kind != KindFailure || (hasFail && e == fail) {
			continue
		}
		x := sc.x(e.T)
		fmt.Fprintf(&b, `<path class="failure-event" d="M%.1f %.1f l-5 -8 h10 z"><title>%s %s</title></path>`, x, testY+laneHeight-2, fmtT(e.T), esc(e.Text))
	}
	if hasFail {
		x := sc.x(fail.T)
		fmt.Fprintf(&b, `<g id="failure-marker" data-t="%.3f"><line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f"/><text x="%.1f" y="%d" text-anchor="%s">✗ failure at %s</text><title>%s</title></g>`,
			fail.T, x, axisHeight-6, x, height, x+anchorPad(x), 10, anchor(x), fmtT(fail.T), esc(fail.Text))
	}
	// The window of the log pane, moved by the script.
	fmt.Fprintf(&b, `<rect id="window" x="0" y="%d" width="0" height="%.0f"/>`, axisHeight, height-axisHeight)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func anchor(x float64) string {
	if x > svgWidth-220 {
		return "end"
	}
	return "start"
}

func anchorPad(x float64) float64 {
	if x > svgWidth-220 {
		return -4
	}
	return 4
}

func endText(f Span) string {
	if f.Open {
		return "still in force at the end"
	}
	return fmtT(f.End)
}

func endOfJob(j Job) string {
	if !j.Ended {
		return "unfinished"
	}
	return fmtT(j.End)
}

func fmtDur(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func short(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func stateClass(text string) string {
	switch {
	case strings.Contains(text, "offline"), strings.Contains(text, "stale"), strings.Contains(text, "gone"), strings.Contains(text, "unreachable"):
		return "bad"
	case strings.Contains(text, "online"), strings.Contains(text, "fresh"), strings.Contains(text, "registered"):
		return "good"
	}
	return "other"
}

func lifecycleClass(text string) string {
	a, _, _ := strings.Cut(text, " ")
	switch a {
	case "die", "kill", "oom", "stop":
		return "bad"
	case "start", "restart", "unpause", "create":
		return "good"
	case "pause":
		return "paused"
	}
	return "other"
}

func termClass(j Job) string {
	switch {
	case !j.Ended:
		return "open"
	case strings.HasPrefix(j.Terminator, "[DONE]"):
		return "done"
	case strings.HasPrefix(j.Terminator, "[CANCELLED]"):
		return "cancelled"
	}
	return "error"
}

// packJobs puts each job in the first row free at its submit time (at most
// maxJobRows rows; more overlapping jobs share the last).
func packJobs(jobs []Job) ([]int, int) {
	idx := make([]int, len(jobs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return jobs[idx[a]].Submit < jobs[idx[b]].Submit })
	rows := make([]int, len(jobs))
	var free []float64 // end of the last job per row
	for _, i := range idx {
		r := -1
		for k, end := range free {
			if end <= jobs[i].Submit {
				r = k
				break
			}
		}
		if r < 0 {
			if len(free) < maxJobRows {
				free = append(free, 0)
				r = len(free) - 1
			} else {
				r = maxJobRows - 1
			}
		}
		free[r] = jobs[i].End
		rows[i] = r
	}
	return rows, len(free)
}

// latencySVG plots each job's latency against its submit time, on the
// timeline's time axis.
func latencySVG(tl *Timeline) template.HTML {
	const h, top, bottom = 180, 12, 24
	sc := scale{dur: math.Max(tl.Duration, 0.001)}
	maxL := 0.0
	for _, j := range tl.Jobs {
		maxL = math.Max(maxL, j.Latency())
	}
	if maxL <= 0 {
		maxL = 1
	}
	y := func(l float64) float64 { return top + (1-l/maxL)*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="latency" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, svgWidth, h, svgWidth, h)
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/><line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`,
		labelWidth, top, labelWidth, h-bottom, labelWidth, h-bottom, svgWidth-rightPad, h-bottom)
	for _, f := range []float64{0, 0.5, 1} {
		fmt.Fprintf(&b, `<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`, labelWidth-6, y(f*maxL)+4, fmtDur(f*maxL))
	}
	step := tickStep(sc.dur)
	for t := 0.0; t <= sc.dur+1e-9; t += step {
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, sc.x(t), h-6, fmtT(t))
	}
	for _, f := range tl.Faults {
		x1, x2 := sc.x(f.Start), sc.x(f.End)
		fmt.Fprintf(&b, `<rect class="fault-band" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s</title></rect>`, x1, top, math.Max(x2-x1, 2), h-top-bottom, esc(f.Text))
	}
	for _, j := range tl.Jobs {
		fmt.Fprintf(&b, `<circle class="lat %s" cx="%.1f" cy="%.1f" r="3.5"><title>%s %s at %s: %s %s</title></circle>`,
			termClass(j), sc.x(j.Submit), y(j.Latency()), esc(j.Op), esc(j.ID), fmtT(j.Submit), fmtDur(j.Latency()), esc(j.Terminator+j.Err))
	}
	fmt.Fprintf(&b, `<text class="lane-label" x="8" y="%d">latency</text></svg>`, h/2)
	return template.HTML(b.String())
}
