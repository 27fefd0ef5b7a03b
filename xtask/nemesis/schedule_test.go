package nemesis

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

var twoHives = Targets{Hives: []string{"hive-1", "hive-2"}}

func TestScheduleIsDeterministic(t *testing.T) {
	a, err := Generate(42, time.Minute, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(42, time.Minute, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatalf("seed 42 twice gave two schedules:\n%s\n---\n%s", a, b)
	}
	if len(a.Events) < 3 {
		t.Fatalf("a minute of seed 42 has %d faults; want several:\n%s", len(a.Events), a)
	}
	c, err := Generate(43, time.Minute, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() == c.String() || slices.Equal(a.Events, c.Events) {
		t.Fatalf("seeds 42 and 43 gave the same schedule:\n%s", a)
	}
	// Another topology, another schedule, from the same seed.
	d, err := Generate(42, time.Minute, Targets{Hives: []string{"hive-1", "hive-2", "hive-3"}}, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a.Events, d.Events) {
		t.Fatal("seed 42 on two and on three hives gave the same events")
	}
}

// The generator's output for one seed, pinned: math/rand/v2's PCG is
// specified, so a change here is a change of the generator (which breaks
// every recorded replay seed) and must be deliberate. Seed 7 is pinned on
// the classic menu, which the seeds recorded before the toxics joined the
// menu replay with (RBEE_NEMESIS_MENU=classic); TestDefaultMenuGolden pins
// the default menu.
func TestScheduleGolden(t *testing.T) {
	s, err := Generate(7, 30*time.Second, twoHives, ClassicMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	const want = `nemesis seed 7: 30s on hive-1, hive-2, menu partition isolate loss pause kill restart, 3 faults
    +3.043s  isolate(hive-1)              hold 7.849s   healed +10.892s
   +15.111s  loss(hive-1,25%)             hold 8.195s   healed +23.306s
   +24.366s  kill(hive-2)                 hold 2.634s   healed +27.000s
replay: RBEE_FAULT_SEED=7`
	if got := s.String(); got != want {
		t.Fatalf("seed 7's schedule changed:\n%s\nwant:\n%s", got, want)
	}
}

func TestScheduleInvariants(t *testing.T) {
	for _, tg := range []Targets{
		{Hives: []string{"hive-1"}},
		twoHives,
		{Hives: []string{"hive-1", "hive-2", "hive-3", "hive-4"}},
		{Hives: []string{"hive-1", "hive-2"}, Workers: []string{"worker-1", "worker-2"}},
	} {
		all := append(slices.Clone(tg.Hives), tg.Workers...)
		maxActive := max(1, len(all)-1)
		kinds := map[string]int{}
		for seed := range uint64(300) {
			d := time.Duration(20+seed%50) * time.Second
			s, err := Generate(seed, d, tg, DefaultMenu, DefaultTiming)
			if err != nil {
				t.Fatalf("%v seed %d: %v", tg, seed, err)
			}
			if len(s.Events) == 0 {
				t.Fatalf("%v seed %d over %v: no fault", tg, seed, d)
			}
			for i, e := range s.Events {
				kinds[e.Kind]++
				k, ok := Lookup(DefaultMenu, e.Kind)
				if !ok {
					t.Fatalf("seed %d: unknown kind %s", seed, e.Kind)
				}
				if !slices.Contains(Targets.of(tg, k.On), e.Target) {
					t.Fatalf("%v seed %d: %s aimed at %s, not one of its roles' targets", tg, seed, e.Fault(), e.Target)
				}
				if e.At < DefaultTiming.MinGap || e.Heal() > d-DefaultTiming.Tail {
					t.Fatalf("seed %d: %s at %v healed %v: outside [%v, %v]", seed, e.Fault(), e.At, e.Heal(), DefaultTiming.MinGap, d-DefaultTiming.Tail)
				}
				if e.Hold < k.MinHold || e.Hold > k.MaxHold {
					t.Fatalf("seed %d: %s held %v, outside [%v, %v]", seed, e.Fault(), e.Hold, k.MinHold, k.MaxHold)
				}
				if e.At%quantum != 0 || e.Hold%quantum != 0 {
					t.Fatalf("seed %d: %s at %v hold %v: not whole milliseconds", seed, e.Fault(), e.At, e.Hold)
				}
				if i > 0 && e.At < s.Events[i-1].At {
					t.Fatalf("seed %d: events out of order", seed)
				}
				if e.Kind == "loss" {
					if _, err := percent(e.Param); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
				}
				active := 0
				for _, o := range s.Events {
					if o.At <= e.At && e.At < o.Heal() {
						active++
						if o != e && o.Target == e.Target {
							t.Fatalf("seed %d: %s and %s on %s at once", seed, o.Fault(), e.Fault(), e.Target)
						}
					}
				}
				if active > maxActive {
					t.Fatalf("%v seed %d: %d faults at %v, want at most %d (one target always whole)", tg, seed, active, e.At, maxActive)
				}
			}
		}
		for _, k := range DefaultMenu {
			if len(Targets.of(tg, k.On)) > 0 && kinds[k.Name] == 0 {
				t.Errorf("%v: 300 seeds never drew %s", tg, k.Name)
			}
		}
	}
}

func TestScheduleOnlyPresentTargets(t *testing.T) {
	s, err := Generate(3, time.Minute, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range s.Events {
		if !slices.Contains(twoHives.Hives, e.Target) {
			t.Fatalf("%s: not a service of the topology", e.Fault())
		}
	}
	// Workers only: the hive-only kinds are not drawn.
	s, err = Generate(3, time.Minute, Targets{Workers: []string{"worker-1", "worker-2"}}, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range s.Events {
		if e.Kind == "partition" || e.Kind == "kill" || e.Kind == "restart" {
			t.Fatalf("%s drawn for a topology without hives", e.Fault())
		}
	}
}

func TestTargetsOf(t *testing.T) {
	got := TargetsOf([]string{"worker-2", "queen", "hive-2", "hub", "hive-1", "worker-1"})
	if !slices.Equal(got.Hives, []string{"hive-1", "hive-2"}) || !slices.Equal(got.Workers, []string{"worker-1", "worker-2"}) {
		t.Fatalf("targets %+v", got)
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	noHeal := DefaultMenu[3]
	noHeal.Heal = nil
	dup := []Kind{DefaultMenu[0], DefaultMenu[0]}
	cases := []struct {
		name     string
		d        time.Duration
		targets  Targets
		menu     []Kind
		tm       Timing
		contains string
	}{
		{"empty menu", time.Minute, twoHives, nil, DefaultTiming, "empty menu"},
		{"no target", time.Minute, Targets{}, DefaultMenu, DefaultTiming, "has a target in this topology (none)"},
		{"too short", 4 * time.Second, twoHives, DefaultMenu, DefaultTiming, "has no room for one fault"},
		{"never healed", time.Minute, twoHives, []Kind{noHeal}, DefaultTiming, "needs both Inject and Heal"},
		{"twice", time.Minute, twoHives, dup, DefaultTiming, "in the menu twice"},
		{"bad gap", time.Minute, twoHives, DefaultMenu, Timing{MinGap: 0, MaxGap: time.Second}, "want 0 < min"},
		{"no role", time.Minute, twoHives, []Kind{{Name: "x", MinHold: time.Second, MaxHold: time.Second, Inject: noHeal.Inject, Heal: noHeal.Inject}}, DefaultTiming, "want one or more of Hive, Worker"},
	}
	for _, c := range cases {
		_, err := Generate(1, c.d, c.targets, c.menu, c.tm)
		if err == nil || !strings.Contains(err.Error(), c.contains) {
			t.Errorf("%s: %v; want an error saying %q", c.name, err, c.contains)
		}
	}
}

func TestNetworkKindNamesBadParam(t *testing.T) {
	k, _ := Lookup(DefaultMenu, "loss")
	err := k.Inject(context.Background(), nil, Event{Kind: "loss", Target: "hive-1", Param: "lots"})
	if err == nil || !strings.Contains(err.Error(), `loss(hive-1,lots): loss parameter "lots" is not a percentage`) {
		t.Fatalf("bad parameter: %v", err)
	}
}

func TestSeeds(t *testing.T) {
	t.Setenv(SeedEnv, "")
	s, err := Seeds(3)
	if err != nil || len(s) != 3 {
		t.Fatalf("Seeds(3) = %v, %v", s, err)
	}
	if _, err := Seeds(0); err == nil {
		t.Fatal("0 seeds accepted")
	}
	t.Setenv(SeedEnv, "1234")
	if s, err := Seeds(5); err != nil || !slices.Equal(s, []uint64{1234}) {
		t.Fatalf("replay: %v, %v; want exactly [1234]", s, err)
	}
	t.Setenv(SeedEnv, "-1")
	if _, err := Seeds(1); err == nil || !strings.Contains(err.Error(), SeedEnv) {
		t.Fatalf("bad seed: %v", err)
	}
}
