package integration

import "time"

// Phase is how long one step of New or Close took.
type Phase struct {
	Name string
	Took time.Duration
}

// Phases returns the steps of New (connect, reap, load, images, network,
// create, start+ready) and, once closed, of Close, with their durations, in
// order: the profile `mage bench` reports.
func (h *Harness) Phases() []Phase {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Phase(nil), h.phases...)
}

// phase records a step that started at t0 and returns the time now, the
// next step's start.
func (h *Harness) phase(name string, t0 time.Time) time.Time {
	now := time.Now()
	h.mu.Lock()
	h.phases = append(h.phases, Phase{Name: name, Took: now.Sub(t0)})
	h.mu.Unlock()
	return now
}
