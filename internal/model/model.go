// Package model is the small, real model that llm-worker-rbee loads and
// samples from: a character n-gram table (counts of the next character after
// each context of up to Order characters) trained from a bundled
// public-domain text.
//
// It is NOT a language model and does not pretend to be one: it has no
// understanding of the prompt beyond its last few characters, and its output
// is text-shaped noise in the style of the training text. It exists so that
// the rbee system has a model file that is really downloaded, verified,
// loaded and sampled from, with deterministic output (same model, prompt,
// seed and temperature → same tokens), which the test suites can assert on.
//
// Tokens are single characters (Unicode code points).
//
// Run its tests with: go test ./internal/model/
package model

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"unicode/utf8"
)

// Corpus is the bundled training text: the opening of chapter I ("Down the
// Rabbit-Hole") of Lewis Carroll's "Alice's Adventures in Wonderland"
// (1865, public domain), typed from memory, so it may differ from the
// printed text in small ways.
//
//go:embed alice.txt
var Corpus string

// CorpusName describes Corpus in a model's Source field.
const CorpusName = "Lewis Carroll, Alice's Adventures in Wonderland (1865), ch. I opening (public domain)"

// MaxOrder is the longest context a model may use.
const MaxOrder = 12

// Stop reasons returned by Generate (the worker's end event carries them).
const (
	StopMaxTokens      = "max_tokens"      // generated maxTokens tokens
	StopSequence       = "stop_sequence"   // a stop sequence appeared (it is not emitted)
	StopNoContinuation = "no_continuation" // the table has nothing to continue with (empty model)
	StopCancelled      = "cancelled"       // ctx was cancelled or emit failed with a context error
	StopError          = "error"           // emit returned another error
)

// Model is a character n-gram table. The zero value is an empty model that
// generates nothing; use Train or Read/Load.
type Model struct {
	// Name is the id the model is published under, e.g.
	// "rbee/tiny-ngram:model.bin"; may be empty. Workers report it when
	// nothing more specific names the model.
	Name string
	// Source says what text the model was trained from.
	Source string
	// Padding is the number of filler bytes written after the table. It
	// exists only to make large files for slow-download tests; Read skips
	// them.
	Padding int64

	order int
	table map[string]*dist
}

// dist is the distribution of the character that follows one context,
// sorted by rune so iteration (and therefore sampling) is deterministic.
type dist struct {
	runes  []rune
	counts []uint32
}

// Order returns the longest context length the model uses.
func (m *Model) Order() int { return m.order }

// Contexts returns the number of contexts in the table.
func (m *Model) Contexts() int { return len(m.table) }

// Train counts, for every position of text and every context length
// 0..order, which character follows. order is clamped to 1..MaxOrder.
func Train(text string, order int) *Model {
	order = min(max(order, 1), MaxOrder)
	runes := []rune(text)
	counts := map[string]map[rune]uint32{}
	for i, next := range runes {
		for k := 0; k <= order && k <= i; k++ {
			key := string(runes[i-k : i])
			c := counts[key]
			if c == nil {
				c = map[rune]uint32{}
				counts[key] = c
			}
			if c[next] < math.MaxUint32 {
				c[next]++
			}
		}
	}
	m := &Model{order: order, table: make(map[string]*dist, len(counts))}
	for key, c := range counts {
		d := &dist{runes: make([]rune, 0, len(c))}
		for r := range c {
			d.runes = append(d.runes, r)
		}
		sort.Slice(d.runes, func(a, b int) bool { return d.runes[a] < d.runes[b] })
		d.counts = make([]uint32, len(d.runes))
		for i, r := range d.runes {
			d.counts[i] = c[r]
		}
		m.table[key] = d
	}
	return m
}

// lookup finds the distribution for the longest known suffix of hist
// (backoff: order, order-1, …, 0 characters).
func (m *Model) lookup(hist []rune) *dist {
	for k := min(m.order, len(hist)); k >= 0; k-- {
		if d, ok := m.table[string(hist[len(hist)-k:])]; ok {
			return d
		}
	}
	return nil
}

// pick chooses the next character: argmax (ties to the smallest rune) at
// temperature 0, else sampling with weights count^(1/temperature),
// computed in log space so small temperatures do not overflow.
func pick(d *dist, temperature float64, rng *rand.Rand) rune {
	if temperature == 0 || len(d.runes) == 1 {
		best := 0
		for i, c := range d.counts {
			if c > d.counts[best] {
				best = i
			}
		}
		return d.runes[best]
	}
	logs := make([]float64, len(d.counts))
	maxLog := math.Inf(-1)
	for i, c := range d.counts {
		logs[i] = math.Log(float64(c)) / temperature
		maxLog = math.Max(maxLog, logs[i])
	}
	total := 0.0
	for i := range logs {
		logs[i] = math.Exp(logs[i] - maxLog)
		total += logs[i]
	}
	x := rng.Float64() * total
	for i, w := range logs {
		if x < w {
			return d.runes[i]
		}
		x -= w
	}
	return d.runes[len(d.runes)-1]
}

// seedStream is the fixed second PCG seed word; the request's seed is the first.
const seedStream = 0x9E3779B97F4A7C15

// Generate continues prompt one character at a time, calling emit for each
// token with its index (0, 1, …). It stops after maxTokens generated
// characters, when a stop sequence appears in the generated text (the stop
// sequence itself is held back and never emitted), when ctx is cancelled,
// or when emit returns an error. It returns how many tokens were emitted
// and why it stopped (one of the Stop* constants).
//
// The same model, prompt, maxTokens, temperature, seed and stop give the same
// tokens: sampling uses a PCG generator seeded with seed, and temperature 0
// is argmax (seed unused).
func (m *Model) Generate(ctx context.Context, prompt string, maxTokens int, temperature float64,
	seed uint64, stop []string, emit func(tok string, i int) error) (tokensOut int, stopReason string, err error) {
	if maxTokens < 1 {
		return 0, StopError, fmt.Errorf("max_tokens must be at least 1, got %d", maxTokens)
	}
	if math.IsNaN(temperature) || math.IsInf(temperature, 0) || temperature < 0 {
		return 0, StopError, fmt.Errorf("temperature must be a finite number >= 0, got %v", temperature)
	}
	stops := make([]string, 0, len(stop))
	for _, s := range stop {
		if s != "" {
			stops = append(stops, s)
		}
	}
	rng := rand.New(rand.NewPCG(seed, seedStream))
	hist := []rune(prompt)
	if len(hist) > m.order {
		hist = hist[len(hist)-m.order:]
	}
	var pending []rune // generated but held back: might be the start of a stop sequence

	emitRunes := func(rs []rune) error {
		for _, r := range rs {
			if err := emit(string(r), tokensOut); err != nil {
				return err
			}
			tokensOut++
		}
		return nil
	}
	fail := func(err error) (int, string, error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return tokensOut, StopCancelled, err
		}
		return tokensOut, StopError, err
	}

	for step := 0; step < maxTokens; step++ {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		d := m.lookup(hist)
		if d == nil {
			if err := emitRunes(pending); err != nil {
				return fail(err)
			}
			return tokensOut, StopNoContinuation, nil
		}
		r := pick(d, temperature, rng)
		hist = append(hist, r)
		if len(hist) > m.order {
			hist = hist[len(hist)-m.order:]
		}
		pending = append(pending, r)
		if len(stops) == 0 {
			if err := emitRunes(pending); err != nil {
				return fail(err)
			}
			pending = pending[:0]
			continue
		}
		p := string(pending)
		for _, s := range stops {
			if idx := strings.Index(p, s); idx >= 0 {
				if err := emitRunes([]rune(p[:idx])); err != nil {
					return fail(err)
				}
				return tokensOut, StopSequence, nil
			}
		}
		hold := heldBack(p, stops)
		flush := []rune(p[:len(p)-hold])
		if err := emitRunes(flush); err != nil {
			return fail(err)
		}
		pending = append(pending[:0], []rune(p[len(p)-hold:])...)
	}
	if err := emitRunes(pending); err != nil {
		return fail(err)
	}
	return tokensOut, StopMaxTokens, nil
}

// heldBack returns the length in bytes of the longest suffix of p that is a
// proper prefix of some stop sequence (and so might still become one). It
// only ever splits p at rune boundaries.
func heldBack(p string, stops []string) int {
	best := 0
	for _, s := range stops {
		for n := min(len(s)-1, len(p)); n > best; n-- {
			if !utf8.RuneStart(p[len(p)-n]) {
				continue
			}
			if strings.HasPrefix(s, p[len(p)-n:]) {
				best = n
				break
			}
		}
	}
	return best
}
