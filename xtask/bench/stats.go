package bench

import (
	"math"
	"slices"
	"time"
)

// Stats summarises a sample: count, extremes, quartiles, tail.
type Stats struct {
	N                          int
	Min, P25, Median, P75, Max float64
	P99, Mean                  float64
}

// Summarize computes Stats of xs (which it does not modify). Percentiles
// interpolate linearly between the closest ranks, like numpy's default, so
// that small samples (5 runs) give a median that is the middle run.
func Summarize(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return Stats{
		N:      len(s),
		Min:    s[0],
		P25:    percentileSorted(s, 25),
		Median: percentileSorted(s, 50),
		P75:    percentileSorted(s, 75),
		P99:    percentileSorted(s, 99),
		Max:    s[len(s)-1],
		Mean:   sum / float64(len(s)),
	}
}

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of xs; NaN for an
// empty sample or a p out of range.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || p < 0 || p > 100 || math.IsNaN(p) {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	if lo == hi {
		return s[lo]
	}
	return s[lo] + (s[hi]-s[lo])*(rank-float64(lo))
}

// Seconds converts durations to float seconds for Summarize.
func Seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// Ratio is a/b, NaN when b is zero or either is NaN (so a table shows "n/a"
// instead of a made-up number).
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}
