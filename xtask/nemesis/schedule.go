package nemesis

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Role is what a fault can be aimed at.
type Role int

const (
	// Hive is a hive machine (a hive-N container: the rbee-hive daemon and
	// the workers it spawned).
	Hive Role = iota + 1
	// Worker is a standalone worker machine (a worker-N container).
	Worker
)

// Targets are the services of a topology that faults may be aimed at, by
// role, in a fixed order (the schedule depends on it). The queen is never a
// target: it is the clients' only way in, and it keeps jobs in memory, so
// killing it loses every job by design (docs/PROTOCOL.md).
type Targets struct {
	Hives   []string
	Workers []string
}

// TargetsOf sorts a topology's service names into targets: hive-* are
// hives, worker-* standalone workers; the queen, the model hub and anything
// else are left alone.
func TargetsOf(services []string) Targets {
	var t Targets
	for _, s := range services {
		switch {
		case strings.HasPrefix(s, "hive-"):
			t.Hives = append(t.Hives, s)
		case strings.HasPrefix(s, "worker-"):
			t.Workers = append(t.Workers, s)
		}
	}
	slices.Sort(t.Hives)
	slices.Sort(t.Workers)
	return t
}

// of lists the targets of the given roles, in role order.
func (t Targets) of(roles []Role) []string {
	var out []string
	for _, r := range roles {
		switch r {
		case Hive:
			out = append(out, t.Hives...)
		case Worker:
			out = append(out, t.Workers...)
		}
	}
	return out
}

func (t Targets) String() string {
	return strings.Join(append(slices.Clone(t.Hives), t.Workers...), ", ")
}

// Event is one fault of a schedule: injected At (offset from the start of
// the run) on Target, held for Hold, then healed.
type Event struct {
	At     time.Duration
	Hold   time.Duration
	Kind   string // a Kind's Name
	Target string
	Param  string // the kind's parameter, drawn from the seed ("" if none)
}

// Heal is when the event's fault is healed.
func (e Event) Heal() time.Duration { return e.At + e.Hold }

// Fault names the fault as the schedule prints it: kind(target[,param]).
func (e Event) Fault() string {
	if e.Param != "" {
		return fmt.Sprintf("%s(%s,%s)", e.Kind, e.Target, e.Param)
	}
	return fmt.Sprintf("%s(%s)", e.Kind, e.Target)
}

func (e Event) String() string {
	return fmt.Sprintf("%9s  %-28s hold %-8s healed %s", offset(e.At), e.Fault(), secs(e.Hold), offset(e.Heal()))
}

func offset(d time.Duration) string { return "+" + secs(d) }
func secs(d time.Duration) string   { return fmt.Sprintf("%.3fs", d.Seconds()) }

// Schedule is a timed list of faults, generated from a seed: the same seed,
// targets, duration and menu give the same schedule, byte for byte.
type Schedule struct {
	Seed     uint64
	Duration time.Duration
	Targets  Targets
	Menu     []string // kind names offered, in menu order
	Events   []Event  // by At
}

// String is the human-readable schedule: a header, one line per fault with
// its offsets, and how to replay it.
func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nemesis seed %d: %s on %s, menu %s, %d faults\n", s.Seed, s.Duration, s.Targets, strings.Join(s.Menu, " "), len(s.Events))
	for _, e := range s.Events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	fmt.Fprintf(&b, "replay: %s=%d", SeedEnv, s.Seed)
	return b.String()
}

// Kinds counts the schedule's faults by kind, in menu order
// ("partition×2 kill×1").
func (s Schedule) Kinds() string {
	n := map[string]int{}
	for _, e := range s.Events {
		n[e.Kind]++
	}
	var parts []string
	for _, k := range s.Menu {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", k, n[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// Timing bounds a schedule's shape.
type Timing struct {
	// Gap is the quiet time before each fault, drawn in [MinGap, MaxGap].
	MinGap, MaxGap time.Duration
	// Tail is kept free of faults at the end of the run, so traffic runs on
	// a healed system before it stops.
	Tail time.Duration
}

// DefaultTiming leaves a few seconds between faults and at the end.
var DefaultTiming = Timing{MinGap: time.Second, MaxGap: 5 * time.Second, Tail: 3 * time.Second}

// quantum is the resolution of every offset and hold (the schedule prints
// milliseconds, so what it prints is exactly what runs).
const quantum = time.Millisecond

// between draws a duration in [lo, hi] in whole milliseconds.
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	n := int64((hi - lo) / quantum)
	return lo + time.Duration(r.Int64N(n+1))*quantum
}

// Generate draws a schedule for seed: after a gap, a kind from the menu
// (among those with a free target), a target of it and a hold; repeated
// until the run's duration (less the tail) is used up. At most one fault is
// active per target, and while a fault is active at least one other target
// stays whole (the system always has a path to serve on), unless there is
// only one target; every fault is healed by Duration-Tail.
func Generate(seed uint64, duration time.Duration, targets Targets, menu []Kind, tm Timing) (Schedule, error) {
	if err := validateMenu(menu); err != nil {
		return Schedule{}, err
	}
	if tm.MinGap <= 0 || tm.MaxGap < tm.MinGap || tm.Tail < 0 {
		return Schedule{}, fmt.Errorf("nemesis timing: gaps [%v, %v] and tail %v: want 0 < min ≤ max and tail ≥ 0", tm.MinGap, tm.MaxGap, tm.Tail)
	}
	var usable []Kind
	var names []string
	all := map[string]bool{}
	for _, k := range menu {
		names = append(names, k.Name)
		if ts := targets.of(k.On); len(ts) > 0 {
			usable = append(usable, k)
			for _, t := range ts {
				all[t] = true
			}
		}
	}
	if len(usable) == 0 {
		return Schedule{}, fmt.Errorf("nemesis: no kind of the menu (%s) has a target in this topology (%s)", strings.Join(names, ", "), orNone(targets.String()))
	}
	end := duration - tm.Tail
	minHold := slices.MinFunc(usable, func(a, b Kind) int { return int(a.MinHold - b.MinHold) }).MinHold
	if end < tm.MinGap+minHold {
		return Schedule{}, fmt.Errorf("nemesis: a run of %v (tail %v) has no room for one fault (gap ≥ %v, hold ≥ %v)", duration, tm.Tail, tm.MinGap, minHold)
	}
	maxActive := max(1, len(all)-1)

	s := Schedule{Seed: seed, Duration: duration, Targets: targets, Menu: names}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	busyUntil := map[string]time.Duration{}
	t := time.Duration(0)
	for {
		t += between(r, tm.MinGap, tm.MaxGap)
		// Too many faults active: go on from the next heal (and a gap).
		var active []time.Duration
		for _, u := range busyUntil {
			if u > t {
				active = append(active, u)
			}
		}
		if len(active) >= maxActive {
			t = slices.Min(active)
			continue
		}
		free := func(k Kind) []string {
			var out []string
			for _, tg := range targets.of(k.On) {
				if busyUntil[tg] <= t {
					out = append(out, tg)
				}
			}
			return out
		}
		var cands []Kind
		for _, k := range usable {
			if t+k.MinHold <= end && len(free(k)) > 0 {
				cands = append(cands, k)
			}
		}
		if len(cands) == 0 {
			// Every kind's targets are busy: go on from the next heal.
			next := end
			for _, u := range busyUntil {
				if u > t && u < next {
					next = u
				}
			}
			if next >= end {
				break
			}
			t = next
			continue
		}
		k := cands[r.IntN(len(cands))]
		fts := free(k)
		tg := fts[r.IntN(len(fts))]
		hold := min(between(r, k.MinHold, k.MaxHold), end-t)
		var param string
		if k.Param != nil {
			param = k.Param(r)
		}
		s.Events = append(s.Events, Event{At: t, Hold: hold, Kind: k.Name, Target: tg, Param: param})
		busyUntil[tg] = t + hold
	}
	return s, nil
}

func validateMenu(menu []Kind) error {
	if len(menu) == 0 {
		return errors.New("nemesis: empty menu")
	}
	seen := map[string]bool{}
	for _, k := range menu {
		switch {
		case k.Name == "" || strings.ContainsAny(k.Name, " (),"):
			return fmt.Errorf("nemesis: kind name %q: want a plain word", k.Name)
		case seen[k.Name]:
			return fmt.Errorf("nemesis: kind %s is in the menu twice", k.Name)
		case len(k.On) == 0 || slices.ContainsFunc(k.On, func(r Role) bool { return r != Hive && r != Worker }):
			return fmt.Errorf("nemesis: kind %s: roles %v: want one or more of Hive, Worker", k.Name, k.On)
		case k.MinHold < quantum || k.MaxHold < k.MinHold:
			return fmt.Errorf("nemesis: kind %s holds [%v, %v]: want 1ms ≤ min ≤ max", k.Name, k.MinHold, k.MaxHold)
		case k.Inject == nil || k.Heal == nil:
			// Every fault is healed: nothing in a schedule takes a path
			// down for good.
			return fmt.Errorf("nemesis: kind %s needs both Inject and Heal", k.Name)
		}
		seen[k.Name] = true
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Lookup finds the kind of an event in menu.
func Lookup(menu []Kind, name string) (Kind, bool) {
	i := slices.IndexFunc(menu, func(k Kind) bool { return k.Name == name })
	if i < 0 {
		return Kind{}, false
	}
	return menu[i], true
}
