package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// A Kind is one entry of the fault menu: what it is aimed at, how long it
// is held, and how it is injected and healed. A network fault of the
// harness is one Network entry; a process fault says what its Inject and
// Heal do to the container.
type Kind struct {
	Name string
	On   []Role
	// MinHold and MaxHold bound how long the fault is held.
	MinHold, MaxHold time.Duration
	// Param, if set, draws the fault's parameter from the schedule's random
	// source (a loss percentage, say); it is part of the schedule.
	Param func(r *rand.Rand) string
	// Inject applies the fault; Heal undoes it and returns once the target
	// is back as it was before (a killed hive restarted, with a worker).
	Inject func(ctx context.Context, sys *System, e Event) error
	Heal   func(ctx context.Context, sys *System, e Event) error
	// FromQueen marks a connection-level fault on the queen's connections:
	// Prepare starts the queen's toxic proxy before the run when the menu
	// has one.
	FromQueen bool
}

// Network is a menu entry for a harness network fault: Inject is
// Harness.Inject of fault(target, param), Heal its Recover. Connection-level
// faults (latency, a hanging or reset connection) are one more Network
// entry each.
func Network(name string, on []Role, minHold, maxHold time.Duration, param func(*rand.Rand) string, fault func(target, param string) (integration.Fault, error)) Kind {
	build := func(e Event) (integration.Fault, error) {
		f, err := fault(e.Target, e.Param)
		if err != nil {
			return f, fmt.Errorf("%s: %w", e.Fault(), err)
		}
		return f, nil
	}
	return Kind{
		Name: name, On: on, MinHold: minHold, MaxHold: maxHold, Param: param,
		Inject: func(ctx context.Context, sys *System, e Event) error {
			f, err := build(e)
			if err != nil {
				return err
			}
			return sys.H.Inject(ctx, f)
		},
		Heal: func(ctx context.Context, sys *System, e Event) error {
			f, err := build(e)
			if err != nil {
				return err
			}
			return sys.H.Recover(ctx, f)
		},
	}
}

// oneOf draws one of vs.
func oneOf(vs ...string) func(*rand.Rand) string {
	return func(r *rand.Rand) string { return vs[r.IntN(len(vs))] }
}

// percent parses a Param such as "20%".
func percent(p string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(p, "%"), 64)
	if err != nil || !strings.HasSuffix(p, "%") {
		return 0, fmt.Errorf("loss parameter %q is not a percentage such as 20%%", p)
	}
	return v, nil
}

var (
	hiveRole = []Role{Hive}
	anyRole  = []Role{Hive, Worker}
)

// ClassicMenu is the packet- and process-level faults, aimed at hives and
// standalone workers (never at the queen); DefaultMenu adds ToxicMenu to
// them:
//
//   - partition: the queen and a hive cannot reach each other (both ways);
//   - isolate: a hive or worker is cut off from every other container;
//   - loss: a hive or worker drops 10–40 % of its packets;
//   - pause: a hive or worker is frozen (cgroup freezer), then thawed;
//   - kill: a hive's machine crashes (SIGKILL; its workers die with it),
//     then is started again and gets a new worker;
//   - restart: a hive's machine is restarted gracefully (SIGTERM: running
//     jobs end [CANCELLED]), then gets a new worker.
var ClassicMenu = []Kind{
	Network("partition", hiveRole, 3*time.Second, 10*time.Second, nil, func(t, _ string) (integration.Fault, error) {
		return integration.Partition("queen", t), nil
	}),
	Network("isolate", anyRole, 3*time.Second, 10*time.Second, nil, func(t, _ string) (integration.Fault, error) {
		return integration.Isolate(t), nil
	}),
	Network("loss", anyRole, 3*time.Second, 10*time.Second, oneOf("10%", "25%", "40%"), func(t, p string) (integration.Fault, error) {
		v, err := percent(p)
		return integration.Loss(t, v), err
	}),
	{
		Name: "pause", On: anyRole, MinHold: 2 * time.Second, MaxHold: 8 * time.Second,
		Inject: func(ctx context.Context, sys *System, e Event) error { return sys.H.Pause(ctx, e.Target) },
		Heal:   func(ctx context.Context, sys *System, e Event) error { return sys.H.Unpause(ctx, e.Target) },
	},
	{
		Name: "kill", On: hiveRole, MinHold: time.Second, MaxHold: 6 * time.Second,
		Inject: func(ctx context.Context, sys *System, e Event) error { return sys.H.Kill(ctx, e.Target) },
		Heal: func(ctx context.Context, sys *System, e Event) error {
			if err := sys.H.StartService(ctx, e.Target); err != nil {
				return err
			}
			return sys.restoreHive(ctx, e.Target)
		},
	},
	{
		// The restart itself is the fault; the hold is how long the hive
		// runs without a worker before it gets a new one.
		Name: "restart", On: hiveRole, MinHold: time.Second, MaxHold: 4 * time.Second,
		Inject: func(ctx context.Context, sys *System, e Event) error { return sys.H.Restart(ctx, e.Target) },
		Heal:   func(ctx context.Context, sys *System, e Event) error { return sys.restoreHive(ctx, e.Target) },
	},
}
