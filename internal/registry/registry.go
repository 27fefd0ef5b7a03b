// Package registry is the queen's in-memory view of the cluster: which
// workers and hives exist, what they serve and when the queen last heard
// from them. Heartbeats update it (PROTOCOL.md §3 fix: upstream only logged
// them); a worker or hive that sent nothing for stale_after is stale, and
// stale workers are never scheduled. After a queen restart the registry is
// rebuilt from the next round of heartbeats.
//
//	go test ./internal/registry/...
package registry

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// DefaultStaleAfter is PROTOCOL.md's default stale_after.
const DefaultStaleAfter = 30 * time.Second

// HiveSpec is a hive known from hives.conf.
type HiveSpec struct {
	Alias    string
	Hostname string
	HivePort int
	SSHPort  int
}

// Worker is the registry's record of one worker.
type Worker struct {
	api.WorkerInfo
}

type workerEntry struct {
	info api.WorkerInfo
	seen time.Time // receive time on the queen's clock, with monotonic reading
	sent time.Time // sender's timestamp of the last accepted heartbeat
}

type hiveEntry struct {
	spec       HiveSpec
	configured bool   // from hives.conf (else learned from a heartbeat)
	url        string // advertised URL from the last heartbeat
	seen       time.Time
	sent       time.Time // sender's timestamp of the last accepted heartbeat
	offline    bool      // explicitly stopped; cleared by the next heartbeat
	devices    []api.Device
	workers    []string
}

// Registry is safe for concurrent use. Reads take a shared lock, so the
// hot path (heartbeat ingest) contends only with other writers.
type Registry struct {
	staleAfter time.Duration
	now        func() time.Time
	// base anchors reported wall times: lastSeen = base + (seen - base)
	// measured on the monotonic clock, so a wall-clock step backwards can
	// never make last_seen go backwards.
	base time.Time

	// evictAfter drops workers and learned hives silent this long, so that
	// heartbeats from ever-new ids cannot grow the registry without bound.
	evictAfter time.Duration
	lastSweep  time.Time

	// maxWorkers and maxLearned cap the entries that heartbeats can create
	// (configured hives are not counted); learned counts hives not in
	// hives.conf.
	maxWorkers int
	maxLearned int
	learned    int

	bind          bool
	learnHives    bool
	standaloneHiv string

	mu      sync.RWMutex
	workers map[string]*workerEntry
	hives   map[string]*hiveEntry
	order   []string // hive aliases: configured ones first in config order
}

// Options configure a Registry.
type Options struct {
	StaleAfter time.Duration    // default 30 s
	EvictAfter time.Duration    // default 10 × StaleAfter, at least 5 min
	Now        func() time.Time // default time.Now (tests inject a fake clock)
	// MaxWorkers caps the workers in the registry (default DefaultMaxWorkers).
	MaxWorkers int
	// MaxLearnedHives caps the hives learned from heartbeats, i.e. not in
	// hives.conf (default DefaultMaxLearnedHives).
	MaxLearnedHives int

	// Bind accepts a worker heartbeat only for a worker that its hive's
	// last heartbeat lists (or, with StandaloneHive, for a worker that
	// reports that pseudo-hive), whose URL is on that hive's host, and
	// never lets a known worker change its URL or hive. It also refuses
	// heartbeats of hives not in hives.conf unless LearnHives is set.
	// Without Bind (tests of other parts) anything valid is recorded.
	Bind           bool
	LearnHives     bool
	StandaloneHive string // "" = no standalone workers
}

// Defaults for Options.MaxWorkers and Options.MaxLearnedHives.
const (
	DefaultMaxWorkers      = 4096
	DefaultMaxLearnedHives = 256
)

// Refusals of a heartbeat that is valid but not acceptable. The queen
// answers ErrNotNewer with 409 and the others with 403.
var (
	ErrNotNewer     = errors.New("heartbeat is not newer than the last one accepted from this sender")
	ErrNotVouched   = errors.New("worker is not listed by its hive")
	ErrBinding      = errors.New("heartbeat contradicts the worker's registration")
	ErrUnknownHive  = errors.New("hive is not in hives.conf and learning hives is off")
	ErrStandalone   = errors.New("standalone workers are not allowed")
	ErrNoTimestamps = errors.New("missing field \"timestamp\"")
)

// New returns a registry that knows the configured hives (state unknown
// until their first heartbeat).
func New(hives []HiveSpec, opts Options) *Registry {
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.EvictAfter <= 0 {
		opts.EvictAfter = max(10*opts.StaleAfter, 5*time.Minute)
	}
	if opts.EvictAfter < opts.StaleAfter {
		opts.EvictAfter = opts.StaleAfter
	}
	if opts.MaxWorkers <= 0 {
		opts.MaxWorkers = DefaultMaxWorkers
	}
	if opts.MaxLearnedHives <= 0 {
		opts.MaxLearnedHives = DefaultMaxLearnedHives
	}
	r := &Registry{
		maxWorkers: opts.MaxWorkers,
		maxLearned: opts.MaxLearnedHives,
		evictAfter: opts.EvictAfter,
		staleAfter: opts.StaleAfter,
		now:        opts.Now,
		workers:    map[string]*workerEntry{},
		hives:      map[string]*hiveEntry{},

		bind:          opts.Bind,
		learnHives:    opts.LearnHives || !opts.Bind,
		standaloneHiv: opts.StandaloneHive,
	}
	r.base = r.now()
	for _, h := range hives {
		if _, dup := r.hives[h.Alias]; dup {
			continue
		}
		r.hives[h.Alias] = &hiveEntry{spec: h, configured: true}
		r.order = append(r.order, h.Alias)
	}
	return r
}

// StaleAfter returns the staleness threshold.
func (r *Registry) StaleAfter() time.Duration { return r.staleAfter }

// wall turns a receive time into the reported last_seen.
func (r *Registry) wall(t time.Time) time.Time {
	return r.base.Add(t.Sub(r.base)).UTC()
}

// later returns the later of prev and now; a clock that steps back never
// moves a last_seen backwards.
func later(prev, now time.Time) time.Time {
	if now.Before(prev) {
		return prev
	}
	return now
}

var validWorkerStates = map[string]bool{
	api.WorkerStarting: true, api.WorkerReady: true, api.WorkerBusy: true, api.WorkerStopping: true,
}

// ValidateWorkerHeartbeat reports what is wrong with hb, if anything.
func ValidateWorkerHeartbeat(hb api.WorkerHeartbeat) error {
	if err := hb.CheckBounds(); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(hb.WorkerID) == "":
		return fmt.Errorf("missing field \"worker_id\"")
	case strings.TrimSpace(hb.HiveID) == "":
		return fmt.Errorf("missing field \"hive_id\"")
	case strings.TrimSpace(hb.Model) == "":
		return fmt.Errorf("missing field \"model\"")
	case !validWorkerStates[hb.State]:
		return fmt.Errorf("field \"state\" must be one of starting, ready, busy, stopping; got %q", hb.State)
	}
	if err := checkURL(hb.URL); err != nil {
		return err
	}
	return nil
}

// ValidateHiveHeartbeat reports what is wrong with hb, if anything.
func ValidateHiveHeartbeat(hb api.HiveHeartbeat) error {
	if err := hb.CheckBounds(); err != nil {
		return err
	}
	if strings.TrimSpace(hb.HiveID) == "" {
		return fmt.Errorf("missing field \"hive_id\"")
	}
	return checkURL(hb.URL)
}

func checkURL(s string) error {
	if s == "" {
		return fmt.Errorf("missing field \"url\"")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("field \"url\" must be an absolute http(s) URL, got %q", s)
	}
	return nil
}

// WorkerHeartbeat records a worker heartbeat received now and says what
// changed ("" when nothing worth a log line did). The heartbeat's own
// timestamp is informational only: staleness uses the queen's clock so
// skewed hosts cannot make a worker look fresh or stale.
func (r *Registry) WorkerHeartbeat(hb api.WorkerHeartbeat) (string, error) {
	if err := ValidateWorkerHeartbeat(hb); err != nil {
		return "", err
	}
	if r.bind && hb.Timestamp.IsZero() {
		return "", ErrNoTimestamps
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	change := ""
	e, ok := r.workers[hb.WorkerID]
	if ok && !hb.Timestamp.IsZero() && !hb.Timestamp.After(e.sent) {
		return "", fmt.Errorf("%w (worker %s: sent %s, last %s)", ErrNotNewer, hb.WorkerID,
			hb.Timestamp.UTC().Format(time.RFC3339Nano), e.sent.UTC().Format(time.RFC3339Nano))
	}
	if r.bind {
		if err := r.checkBindingLocked(hb, e, ok); err != nil {
			return "", err
		}
	}
	switch {
	case !ok:
		if err := r.roomLocked(len(r.workers), r.maxWorkers, "workers"); err != nil {
			return "", err
		}
		e = &workerEntry{}
		r.workers[hb.WorkerID] = e
		change = "registered, state " + hb.State
	case now.Sub(e.seen) > r.staleAfter:
		change = "fresh again after being stale, state " + hb.State
	case e.info.State != hb.State:
		change = "state " + e.info.State + " -> " + hb.State
	case e.info.URL != hb.URL || e.info.Model != hb.Model || e.info.HiveID != hb.HiveID:
		change = "re-registered"
	}
	e.seen = later(e.seen, now)
	e.sent = hb.Timestamp
	e.info = api.WorkerInfo{
		WorkerID: hb.WorkerID, HiveID: hb.HiveID, Model: hb.Model, Device: hb.Device,
		URL: hb.URL, State: hb.State,
	}
	return change, nil
}

// checkBindingLocked decides whether hb may speak for worker hb.WorkerID.
func (r *Registry) checkBindingLocked(hb api.WorkerHeartbeat, e *workerEntry, known bool) error {
	if known && (e.info.URL != hb.URL || e.info.HiveID != hb.HiveID) {
		return fmt.Errorf("%w: worker %s is registered at %s on %s; refusing %s on %s", ErrBinding,
			hb.WorkerID, e.info.URL, e.info.HiveID, hb.URL, hb.HiveID)
	}
	if hb.HiveID == r.standaloneHiv && r.standaloneHiv != "" {
		return nil
	}
	h, ok := r.hives[hb.HiveID]
	if !ok || h.seen.IsZero() {
		if hb.HiveID == "standalone" && r.standaloneHiv == "" {
			return fmt.Errorf("%w (worker %s reports hive %q)", ErrStandalone, hb.WorkerID, hb.HiveID)
		}
		return fmt.Errorf("%w: worker %s reports hive %q, which has sent no heartbeat", ErrNotVouched, hb.WorkerID, hb.HiveID)
	}
	if !slices.Contains(h.workers, hb.WorkerID) {
		return fmt.Errorf("%w: hive %s does not list worker %s", ErrNotVouched, hb.HiveID, hb.WorkerID)
	}
	if hostOf(hb.URL) != hostOf(h.url) {
		return fmt.Errorf("%w: worker %s advertises %s, not on the host of hive %s (%s)", ErrBinding, hb.WorkerID, hb.URL, hb.HiveID, h.url)
	}
	return nil
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.ToLower(p.Hostname())
}

// WorkerHost reports whether worker w's URL is on the host its hive
// advertises (always true for standalone workers, whose URL is fixed at
// registration). The queen sends the worker token only where this holds.
func (r *Registry) WorkerHost(w api.WorkerInfo) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.standaloneHiv != "" && w.HiveID == r.standaloneHiv {
		return true
	}
	h, ok := r.hives[w.HiveID]
	return ok && h.url != "" && hostOf(h.url) == hostOf(w.URL)
}

// HiveHeartbeat records a hive heartbeat received now and says what changed
// ("online" when it was not). A hive that is not in hives.conf is learned
// from its advertised URL, so a hive started by hand still shows up (it
// cannot be driven over SSH).
func (r *Registry) HiveHeartbeat(hb api.HiveHeartbeat) (string, error) {
	if err := ValidateHiveHeartbeat(hb); err != nil {
		return "", err
	}
	if r.bind && hb.Timestamp.IsZero() {
		return "", ErrNoTimestamps
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	cur, known := r.hives[hb.HiveID]
	switch {
	case !known && !r.learnHives:
		return "", fmt.Errorf("%w (hive %q)", ErrUnknownHive, hb.HiveID)
	case known && !hb.Timestamp.IsZero() && !hb.Timestamp.After(cur.sent):
		return "", fmt.Errorf("%w (hive %s: sent %s, last %s)", ErrNotNewer, hb.HiveID,
			hb.Timestamp.UTC().Format(time.RFC3339Nano), cur.sent.UTC().Format(time.RFC3339Nano))
	case !known:
		if err := r.roomLocked(r.learned, r.maxLearned, "learned hives"); err != nil {
			return "", err
		}
	}
	e := r.hiveLocked(hb.HiveID, hb.URL)
	change := ""
	if e.seen.IsZero() || e.offline || now.Sub(e.seen) > r.staleAfter {
		change = "online"
	}
	e.seen = later(e.seen, now)
	e.sent = hb.Timestamp
	e.offline = false
	e.url = hb.URL
	if hb.Devices != nil {
		e.devices = append([]api.Device(nil), hb.Devices...)
	}
	e.workers = append([]string(nil), hb.Workers...)
	return change, nil
}

func (r *Registry) hiveLocked(alias, advertised string) *hiveEntry {
	if e, ok := r.hives[alias]; ok {
		return e
	}
	spec := HiveSpec{Alias: alias}
	if u, err := url.Parse(advertised); err == nil {
		spec.Hostname = u.Hostname()
		fmt.Sscanf(u.Port(), "%d", &spec.HivePort)
	}
	e := &hiveEntry{spec: spec}
	r.hives[alias] = e
	r.order = append(r.order, alias)
	r.learned++
	return e
}

// MarkHiveSeen records first-hand evidence that a hive is up (a successful
// health probe or start), as good as a heartbeat for its state.
func (r *Registry) MarkHiveSeen(alias string) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.hives[alias]; ok {
		e.seen = later(e.seen, now)
		e.offline = false
	}
}

// MarkHiveOffline records that a hive was stopped; it stays offline until
// its next heartbeat. Its workers stay listed (they turn stale on their own)
// but are not scheduled while the hive is offline.
func (r *Registry) MarkHiveOffline(alias string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.hives[alias]; ok {
		e.offline = true
	}
}

// SetDevices stores a hive's devices (from GET /capabilities).
func (r *Registry) SetDevices(alias string, devs []api.Device) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.hives[alias]; ok {
		e.devices = append([]api.Device{}, devs...)
	}
}

// RemoveWorker forgets a worker (deleted through the queen).
func (r *Registry) RemoveWorker(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.workers, id)
}

func (r *Registry) workerInfo(e *workerEntry, now time.Time) api.WorkerInfo {
	w := e.info
	w.LastSeen = r.wall(e.seen)
	w.Stale = now.Sub(e.seen) > r.staleAfter
	return w
}

// Workers returns every known worker, sorted by hive then worker id.
func (r *Registry) Workers() []api.WorkerInfo {
	now := r.now()
	r.mu.RLock()
	out := make([]api.WorkerInfo, 0, len(r.workers))
	for _, e := range r.workers {
		out = append(out, r.workerInfo(e, now))
	}
	r.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool {
		if out[a].HiveID != out[b].HiveID {
			return out[a].HiveID < out[b].HiveID
		}
		return out[a].WorkerID < out[b].WorkerID
	})
	return out
}

// Worker returns one worker.
func (r *Registry) Worker(id string) (api.WorkerInfo, bool) {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.workers[id]
	if !ok {
		return api.WorkerInfo{}, false
	}
	return r.workerInfo(e, now), true
}

func (r *Registry) hiveInfo(e *hiveEntry, now time.Time) api.HiveInfo {
	h := api.HiveInfo{
		Alias: e.spec.Alias, Hostname: e.spec.Hostname, HivePort: e.spec.HivePort, SSHPort: e.spec.SSHPort,
		State: api.HiveUnknown, Devices: append([]api.Device{}, e.devices...),
	}
	if !e.seen.IsZero() {
		t := r.wall(e.seen)
		h.LastSeen = &t
		h.State = api.HiveOnline
		if e.offline || now.Sub(e.seen) > r.staleAfter {
			h.State = api.HiveOffline
		}
	} else if e.offline {
		h.State = api.HiveOffline
	}
	return h
}

// Hives returns every hive: configured ones in config order, then learned ones.
func (r *Registry) Hives() []api.HiveInfo {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]api.HiveInfo, 0, len(r.order))
	for _, a := range r.order {
		out = append(out, r.hiveInfo(r.hives[a], now))
	}
	return out
}

// Hive returns one hive.
func (r *Registry) Hive(alias string) (api.HiveInfo, bool) {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.hives[alias]
	if !ok {
		return api.HiveInfo{}, false
	}
	return r.hiveInfo(e, now), true
}

// HiveURL returns the URL a hive advertised in its last heartbeat ("" if none).
func (r *Registry) HiveURL(alias string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.hives[alias]; ok {
		return e.url
	}
	return ""
}

// Candidates returns the fresh workers serving model whose state is ready
// or busy, optionally only on hive hiveID. Stale workers are never returned.
func (r *Registry) Candidates(model, hiveID string) []api.WorkerInfo {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []api.WorkerInfo
	for _, e := range r.workers {
		if e.info.Model != model || (hiveID != "" && e.info.HiveID != hiveID) {
			continue
		}
		if e.info.State != api.WorkerReady && e.info.State != api.WorkerBusy {
			continue
		}
		if now.Sub(e.seen) > r.staleAfter {
			continue
		}
		if h, ok := r.hives[e.info.HiveID]; ok && h.offline {
			continue
		}
		out = append(out, r.workerInfo(e, now))
	}
	return out
}

// FullError refuses a heartbeat that would add an entry to a registry
// already holding its cap of workers or learned hives.
type FullError struct {
	What string // "workers" or "learned hives"
	Max  int
}

func (e *FullError) Error() string {
	return fmt.Sprintf("registry is full: %d %s already registered (the cap); workers and learned hives silent for 10 × stale_after (at least 5 min) are evicted", e.Max, e.What)
}

// roomLocked reports whether one more entry fits under limit. It does not
// sweep: the regular sweep (at most once per stale_after) frees entries,
// and a refusal stays O(1) however fast a flood of new ids arrives.
func (r *Registry) roomLocked(n, limit int, what string) error {
	if n < limit {
		return nil
	}
	return &FullError{What: what, Max: limit}
}

// sweepLocked evicts workers and learned (not configured) hives that have
// been silent for evictAfter. It runs on the heartbeat path at most once
// per stale_after, so ingest stays cheap, and it is one pass over each map
// and one over the hive order, whatever it evicts (O(n) under the lock).
func (r *Registry) sweepLocked(now time.Time) {
	if now.Sub(r.lastSweep) < r.staleAfter {
		return
	}
	r.lastSweep = now
	for id, e := range r.workers {
		if now.Sub(e.seen) > r.evictAfter {
			delete(r.workers, id)
		}
	}
	evicted := 0
	for alias, h := range r.hives {
		if !h.configured && !h.seen.IsZero() && now.Sub(h.seen) > r.evictAfter {
			delete(r.hives, alias)
			evicted++
		}
	}
	if evicted > 0 {
		r.learned -= evicted
		r.order = slices.DeleteFunc(r.order, func(a string) bool { _, ok := r.hives[a]; return !ok })
	}
}
