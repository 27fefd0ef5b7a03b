package nemesis

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// ToxicMenu is the connection-level faults (the harness's transparent
// toxic proxy in the queen's network namespace) on the queen's connections
// to a hive or standalone worker; they catch connections the queen opens
// while they are in force:
//
//   - latency: the target's answers are delayed by 100 ms–2 s, ± half;
//   - slow: the target's answers are capped at 20 or 100 KB/s;
//   - hang: the target's answers stop, the connections stay open (the
//     queen's idle timeout and header timeout must end them);
//   - reset: the connections are reset (RST) at their next data.
var ToxicMenu = []Kind{
	fromQueen(Network("latency", anyRole, 3*time.Second, 10*time.Second, oneOf("100ms", "500ms", "2s"), latencyFault)),
	fromQueen(Network("slow", anyRole, 3*time.Second, 10*time.Second, oneOf("20KB/s", "100KB/s"), slowFault)),
	fromQueen(Network("hang", anyRole, 3*time.Second, 10*time.Second, nil, hangFault)),
	fromQueen(Network("reset", anyRole, 2*time.Second, 6*time.Second, nil, resetFault)),
}

func fromQueen(k Kind) Kind {
	k.FromQueen = true
	return k
}

func latencyFault(t, p string) (integration.Fault, error) {
	d, err := time.ParseDuration(p)
	if err != nil || d < time.Millisecond {
		return integration.Fault{}, fmt.Errorf("latency parameter %q is not a duration such as 500ms", p)
	}
	return integration.Latency("queen", t, d, d/2), nil
}

func slowFault(t, p string) (integration.Fault, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(p, "KB/s"), 10, 64)
	if err != nil || n <= 0 || !strings.HasSuffix(p, "KB/s") {
		return integration.Fault{}, fmt.Errorf("slow parameter %q is not a rate such as 20KB/s", p)
	}
	return integration.Bandwidth("queen", t, n), nil
}

func hangFault(t, _ string) (integration.Fault, error) { return integration.Hang("queen", t), nil }

func resetFault(t, _ string) (integration.Fault, error) {
	return integration.ResetPeer("queen", t, 0), nil
}

// DefaultMenu is every fault the harness can inject on any kernel: the
// classic menu, then the toxics.
var DefaultMenu = append(slices.Clone(ClassicMenu), ToxicMenu...)

// MenuEnv names the variable that picks the menu: unset or "default" is
// DefaultMenu, "classic" is ClassicMenu (seeds recorded before the toxics
// joined the menu replay exactly with it).
const MenuEnv = "RBEE_NEMESIS_MENU"

// MenuFromEnv returns the menu RBEE_NEMESIS_MENU names.
func MenuFromEnv() ([]Kind, error) {
	switch v := strings.TrimSpace(os.Getenv(MenuEnv)); v {
	case "", "default":
		return DefaultMenu, nil
	case "classic":
		return ClassicMenu, nil
	default:
		return nil, fmt.Errorf("%s=%q: want default or classic", MenuEnv, v)
	}
}
