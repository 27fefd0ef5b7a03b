package nemesis

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// The default menu's schedule for one seed, pinned like TestScheduleGolden:
// seed 13 draws two of the toxics.
func TestDefaultMenuGolden(t *testing.T) {
	s, err := Generate(13, 30*time.Second, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	const want = `nemesis seed 13: 30s on hive-1, hive-2, menu partition isolate loss pause kill restart latency slow hang reset, 4 faults
    +3.383s  latency(hive-1,100ms)        hold 3.006s   healed +6.389s
    +9.637s  kill(hive-2)                 hold 2.741s   healed +12.378s
   +15.711s  pause(hive-2)                hold 4.617s   healed +20.328s
   +24.623s  reset(hive-1)                hold 2.377s   healed +27.000s
replay: RBEE_FAULT_SEED=13`
	if got := s.String(); got != want {
		t.Fatalf("seed 13's schedule changed:\n%s\nwant:\n%s", got, want)
	}
}

// The default menu is the classic one with the toxics after it (so the
// classic kinds keep their order), and every toxic entry builds a valid
// connection-level fault from the queen for each parameter it can draw.
func TestToxicMenu(t *testing.T) {
	if !slices.EqualFunc(DefaultMenu[:len(ClassicMenu)], ClassicMenu, func(a, b Kind) bool { return a.Name == b.Name }) {
		t.Fatal("DefaultMenu does not start with ClassicMenu")
	}
	var names []string
	for _, k := range DefaultMenu[len(ClassicMenu):] {
		names = append(names, k.Name)
	}
	if got := strings.Join(names, " "); got != "latency slow hang reset" {
		t.Fatalf("toxics in the menu: %s", got)
	}
	for _, k := range DefaultMenu {
		if k.FromQueen != slices.ContainsFunc(ToxicMenu, func(x Kind) bool { return x.Name == k.Name }) {
			t.Errorf("%s: FromQueen %v; want it on the toxics only (Prepare starts the queen's proxy for them)", k.Name, k.FromQueen)
		}
	}
	build := map[string]func(t, p string) (integration.Fault, error){"latency": latencyFault, "slow": slowFault, "hang": hangFault, "reset": resetFault}
	want := map[string]string{
		"100ms": "latency queen→hive-1 100ms±50ms downstream", "500ms": "latency queen→hive-1 500ms±250ms downstream",
		"2s": "latency queen→hive-1 2s±1s downstream", "20KB/s": "bandwidth queen→hive-1 20KB/s downstream",
		"100KB/s": "bandwidth queen→hive-1 100KB/s downstream", "hang": "hang queen→hive-1 forever downstream",
		"reset": "reset-peer queen→hive-1 after 0s downstream",
	}
	for _, k := range ToxicMenu {
		ps := []string{k.Name}
		if k.Param != nil {
			ps = nil
			r := rand.New(rand.NewPCG(1, 2))
			for range 50 {
				if p := k.Param(r); !slices.Contains(ps, p) {
					ps = append(ps, p)
				}
			}
		}
		for _, p := range ps {
			f, err := build[k.Name]("hive-1", p)
			if err != nil {
				t.Errorf("%s(%s): %v", k.Name, p, err)
				continue
			}
			if f.String() != want[p] {
				t.Errorf("%s(%s) is %q, want %q", k.Name, p, f, want[p])
			}
		}
	}
	// A parameter the menu never draws is refused, naming it.
	for _, c := range []struct{ kind, param string }{{"latency", "soon"}, {"slow", "fast"}, {"slow", "20MB/s"}, {"slow", "0KB/s"}} {
		if _, err := build[c.kind]("hive-1", c.param); err == nil || !strings.Contains(err.Error(), c.param) {
			t.Errorf("%s(%s): %v, want an error naming the parameter", c.kind, c.param, err)
		}
	}
}

func TestMenuFromEnv(t *testing.T) {
	for v, want := range map[string]int{"": len(DefaultMenu), "default": len(DefaultMenu), "classic": len(ClassicMenu)} {
		t.Setenv(MenuEnv, v)
		m, err := MenuFromEnv()
		if err != nil || len(m) != want {
			t.Errorf("%s=%q: %d kinds, %v; want %d", MenuEnv, v, len(m), err, want)
		}
	}
	t.Setenv(MenuEnv, "toxic-only")
	if _, err := MenuFromEnv(); err == nil || !strings.Contains(err.Error(), "toxic-only") {
		t.Errorf("a bad menu name: %v, want an error naming it", err)
	}
	if c := (Config{}).Defaults(); c.menuErr == nil || c.Menu != nil {
		t.Errorf("Defaults with a bad %s: menu %d kinds, err %v; want the error kept for Run", MenuEnv, len(c.Menu), c.menuErr)
	}
}
