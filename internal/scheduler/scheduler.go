// Package scheduler picks the worker that serves an `infer` job: a fresh
// (not stale), ready or busy worker serving the model, optionally on one
// hive; the one with the fewest inferences the queen has in flight on it
// first; ties broken round-robin, first across hives and then across the
// workers of a hive, so that equal load spreads over machines.
//
//	go test ./internal/scheduler/...
package scheduler

import (
	"fmt"
	"sort"
	"sync"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/registry"
)

// NoWorkerError is returned by Pick when no worker can serve the request.
type NoWorkerError struct {
	Model, HiveID string
}

func (e *NoWorkerError) Error() string {
	if e.HiveID != "" {
		return fmt.Sprintf("no ready worker for model %s on hive %s", e.Model, e.HiveID)
	}
	return fmt.Sprintf("no ready worker for model %s", e.Model)
}

// Scheduler is safe for concurrent use.
type Scheduler struct {
	reg *registry.Registry

	mu       sync.Mutex
	inflight map[string]int    // worker id → inferences in flight through this queen
	seq      uint64            // pick counter
	lastHive map[string]uint64 // hive id → seq of its last pick
	lastWkr  map[string]uint64 // worker id → seq of its last pick
	pruneAt  int               // prune lastHive/lastWkr when either grows past this
}

// minPruneAt is the map size below which the round-robin maps are never
// pruned; above it they are pruned when they double, so pruning costs O(1)
// per pick on average.
const minPruneAt = 1024

// New returns a scheduler over reg.
func New(reg *registry.Registry) *Scheduler {
	return &Scheduler{reg: reg, inflight: map[string]int{}, lastHive: map[string]uint64{}, lastWkr: map[string]uint64{}, pruneAt: minPruneAt}
}

// Pick chooses a worker for model (on hiveID if non-empty) and counts one
// inference in flight on it; call release exactly once when it ends.
// Exclude lists workers not to pick (e.g. one that just refused).
func (s *Scheduler) Pick(model, hiveID string, exclude ...string) (api.WorkerInfo, func(), error) {
	cands := s.reg.Candidates(model, hiveID)
	if len(exclude) > 0 {
		kept := cands[:0]
		for _, c := range cands {
			skip := false
			for _, x := range exclude {
				skip = skip || c.WorkerID == x
			}
			if !skip {
				kept = append(kept, c)
			}
		}
		cands = kept
	}
	if len(cands) == 0 {
		return api.WorkerInfo{}, nil, &NoWorkerError{Model: model, HiveID: hiveID}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	busy := func(w api.WorkerInfo) int {
		if w.State == api.WorkerBusy {
			return 1
		}
		return 0
	}
	sort.Slice(cands, func(a, b int) bool {
		ca, cb := cands[a], cands[b]
		if ia, ib := s.inflight[ca.WorkerID], s.inflight[cb.WorkerID]; ia != ib {
			return ia < ib
		}
		if ba, bb := busy(ca), busy(cb); ba != bb {
			return ba < bb // a worker that says it is idle before one that says busy
		}
		if ha, hb := s.lastHive[ca.HiveID], s.lastHive[cb.HiveID]; ha != hb {
			return ha < hb // the hive picked longest ago first
		}
		if wa, wb := s.lastWkr[ca.WorkerID], s.lastWkr[cb.WorkerID]; wa != wb {
			return wa < wb
		}
		if ca.HiveID != cb.HiveID {
			return ca.HiveID < cb.HiveID
		}
		return ca.WorkerID < cb.WorkerID
	})
	w := cands[0]
	s.seq++
	s.lastHive[w.HiveID] = s.seq
	s.lastWkr[w.WorkerID] = s.seq
	s.inflight[w.WorkerID]++
	if len(s.lastWkr) > s.pruneAt || len(s.lastHive) > s.pruneAt {
		s.pruneLocked()
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.inflight[w.WorkerID]--; s.inflight[w.WorkerID] <= 0 {
				delete(s.inflight, w.WorkerID)
			}
		})
	}
	return w, release, nil
}

// pruneLocked forgets the round-robin history of workers the registry no
// longer has (evicted or deleted) and of hives none of its workers is on,
// so ever-new worker ids cannot grow the maps without bound.
func (s *Scheduler) pruneLocked() {
	workers := s.reg.Workers()
	keepW := make(map[string]bool, len(workers))
	keepH := map[string]bool{}
	for _, w := range workers {
		keepW[w.WorkerID] = true
		keepH[w.HiveID] = true
	}
	for id := range s.lastWkr {
		if !keepW[id] {
			delete(s.lastWkr, id)
		}
	}
	for id := range s.lastHive {
		if !keepH[id] {
			delete(s.lastHive, id)
		}
	}
	s.pruneAt = max(minPruneAt, 2*max(len(s.lastWkr), len(s.lastHive)))
}

// HistoryLen returns the sizes of the round-robin maps (worker ids, hive ids).
func (s *Scheduler) HistoryLen() (workers, hives int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lastWkr), len(s.lastHive)
}

// InFlight returns how many inferences are in flight on worker id.
func (s *Scheduler) InFlight(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id]
}
