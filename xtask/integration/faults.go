package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A Fault is a value describing a network fault: inject it with
// Harness.Inject, undo it with Harness.Recover (or Heal everything). The
// Harness methods BlockNetwork, Partition, Isolate, Loss, … are shorthands.
//
// All faults are iptables rules or tc qdiscs in the network namespace of a
// target service, installed by a helper container that shares that
// namespace (see DefaultFaultImage); the target itself needs no capability.
// Faults act on traffic between containers; Isolate leaves the test host's
// path (published ports) open so the test can still observe the service.
type Fault struct {
	desc  string
	parts []effect
}

// String describes the fault as the transcript shows it.
func (f Fault) String() string { return f.desc }

type effectKind int

const (
	kindDrop effectKind = iota + 1
	kindReject
	kindIsolate
	kindLoss
	kindRate
	kindLatency
)

// effect is one rule set in one target's namespace.
type effect struct {
	kind    effectKind
	target  string // the service whose namespace holds the rule
	peer    string // drop/reject: the destination service
	percent float64
	rate    string
	delay   time.Duration
}

// key identifies an effect for Recover: at most one loss, rate or latency
// per target (a new one replaces the old), one block per direction and kind.
func (e effect) key() string {
	switch e.kind {
	case kindDrop, kindReject:
		return fmt.Sprintf("%d:%s>%s", e.kind, e.target, e.peer)
	}
	return fmt.Sprintf("%d:%s", e.kind, e.target)
}

func (e effect) String() string {
	switch e.kind {
	case kindDrop:
		return fmt.Sprintf("block %s→%s (drop)", e.target, e.peer)
	case kindReject:
		return fmt.Sprintf("block %s→%s (reject)", e.target, e.peer)
	case kindIsolate:
		return fmt.Sprintf("isolate %s", e.target)
	case kindLoss:
		return fmt.Sprintf("loss %s %g%%", e.target, e.percent)
	case kindRate:
		return fmt.Sprintf("rate-limit %s %s", e.target, e.rate)
	case kindLatency:
		return fmt.Sprintf("latency %s %v", e.target, e.delay)
	}
	return "?"
}

func describe(es []effect) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.String()
	}
	return strings.Join(s, "; ")
}

// Block makes connections that from opens to to fail silently (packets
// dropped: the caller times out), while connections to opens to from still
// work. Established from→to connections stall too.
func Block(from, to string) Fault {
	return Fault{desc: fmt.Sprintf("block(%s→%s)", from, to), parts: []effect{{kind: kindDrop, target: from, peer: to}}}
}

// Reject is Block that fails fast: TCP connections from→to are refused (RST),
// other packets get ICMP port-unreachable.
func Reject(from, to string) Fault {
	return Fault{desc: fmt.Sprintf("reject(%s→%s)", from, to), parts: []effect{{kind: kindReject, target: from, peer: to}}}
}

// Partition cuts a and b apart in both directions: Block(a,b) + Block(b,a).
// RestoreNetwork can then heal one direction at a time.
func Partition(a, b string) Fault {
	return Fault{desc: fmt.Sprintf("partition(%s|%s)", a, b), parts: []effect{{kind: kindDrop, target: a, peer: b}, {kind: kindDrop, target: b, peer: a}}}
}

// Isolate cuts svc off from every other container of the topology, both
// ways. The test host still reaches it through its published ports.
func Isolate(svc string) Fault {
	return Fault{desc: fmt.Sprintf("isolate(%s)", svc), parts: []effect{{kind: kindIsolate, target: svc}}}
}

// Loss drops percent (0 < percent ≤ 100) of the packets svc sends and
// receives, at random (iptables statistic).
func Loss(svc string, percent float64) Fault {
	return Fault{desc: fmt.Sprintf("loss(%s,%g%%)", svc, percent), parts: []effect{{kind: kindLoss, target: svc, percent: percent}}}
}

// RateLimit caps what svc sends to rate, in tc syntax ("1mbit", "200kbit",
// "50kbps"), with a token bucket (tc tbf).
func RateLimit(svc, rate string) Fault {
	return Fault{desc: fmt.Sprintf("rate-limit(%s,%s)", svc, rate), parts: []effect{{kind: kindRate, target: svc, rate: rate}}}
}

// Latency delays what svc sends by d (tc netem). Kernels without sch_netem
// (this project's CI) make Inject return an error wrapping
// errors.ErrUnsupported; tests should skip on it.
func Latency(svc string, d time.Duration) Fault {
	return Fault{desc: fmt.Sprintf("latency(%s,%v)", svc, d), parts: []effect{{kind: kindLatency, target: svc, delay: d}}}
}

var rateRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$`)

// validate checks a fault against the harness's services.
func (h *Harness) validate(f Fault) error {
	if len(f.parts) == 0 {
		return errors.New("empty fault: build one with Block, Reject, Partition, Isolate, Loss, RateLimit or Latency")
	}
	for _, e := range f.parts {
		if _, err := h.service(e.target); err != nil {
			return err
		}
		switch e.kind {
		case kindDrop, kindReject:
			if _, err := h.service(e.peer); err != nil {
				return err
			}
			if e.peer == e.target {
				return fmt.Errorf("cannot block %s from itself", e.target)
			}
		case kindLoss:
			if !(e.percent > 0 && e.percent <= 100) {
				return fmt.Errorf("loss on %s: %g%% is not in (0, 100]", e.target, e.percent)
			}
		case kindRate:
			if !rateRE.MatchString(e.rate) {
				return fmt.Errorf("rate limit on %s: %q is not a tc rate such as 1mbit, 200kbit, 50kbps", e.target, e.rate)
			}
		case kindLatency:
			if e.delay <= 0 {
				return fmt.Errorf("latency on %s: %v must be positive", e.target, e.delay)
			}
		}
	}
	return nil
}

// Inject applies f and records it; it stays active across Restart, Stop and
// Start until Recover, RestoreNetwork or Heal. Injecting an effect that is
// already active changes nothing; a new Loss, RateLimit or Latency on a
// service replaces the old one. It returns once the rules are in place.
func (h *Harness) Inject(ctx context.Context, f Fault) error {
	if err := h.validate(f); err != nil {
		return fmt.Errorf("inject %s: %w", f, err)
	}
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	for _, e := range f.parts {
		if e.kind == kindLatency {
			if err := h.checkNetem(ctx, e.target); err != nil {
				return fmt.Errorf("inject %s: %w", f, err)
			}
		}
	}
	before := slices.Clone(h.faults)
	targets := map[string]bool{}
	for _, e := range f.parts {
		h.faults = slices.DeleteFunc(h.faults, func(a effect) bool { return a.key() == e.key() })
		h.faults = append(h.faults, e)
		targets[e.target] = true
	}
	t0 := time.Now()
	if err := h.syncTargets(ctx, targets); err != nil {
		h.faults = before
		_ = h.syncTargets(context.WithoutCancel(ctx), targets) // best effort: back to the old rules
		h.record("inject %s: FAILED: %v", f, err)
		return fmt.Errorf("inject %s: %w", f, err)
	}
	h.traceFaults()
	h.record("inject %s (in %v)", f, time.Since(t0).Round(time.Millisecond))
	return nil
}

// Recover undoes f. Every effect of f must be active (recovering a fault
// that is not there is an error: the test's idea of the network is wrong).
func (h *Harness) Recover(ctx context.Context, f Fault) error {
	if err := h.validate(f); err != nil {
		return fmt.Errorf("recover %s: %w", f, err)
	}
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	targets := map[string]bool{}
	for _, e := range f.parts {
		if !slices.ContainsFunc(h.faults, func(a effect) bool { return a.key() == e.key() }) {
			return fmt.Errorf("recover %s: %s is not active (active: %s)", f, e, orNone(describe(h.faults)))
		}
		targets[e.target] = true
	}
	before := slices.Clone(h.faults)
	for _, e := range f.parts {
		h.faults = slices.DeleteFunc(h.faults, func(a effect) bool { return a.key() == e.key() })
	}
	if err := h.syncTargets(ctx, targets); err != nil {
		h.faults = before
		h.record("recover %s: FAILED: %v", f, err)
		return fmt.Errorf("recover %s: %w", f, err)
	}
	h.traceFaults()
	h.record("recover %s", f)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// BlockNetwork drops what from sends on connections it opens to to (Block).
func (h *Harness) BlockNetwork(ctx context.Context, from, to string) error {
	return h.Inject(ctx, Block(from, to))
}

// RejectNetwork refuses connections from opens to to (Reject).
func (h *Harness) RejectNetwork(ctx context.Context, from, to string) error {
	return h.Inject(ctx, Reject(from, to))
}

// RestoreNetwork removes every block from→to (drop or reject, including one
// direction of a Partition). It is an error if there is none.
func (h *Harness) RestoreNetwork(ctx context.Context, from, to string) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	for _, s := range []string{from, to} {
		if _, err := h.service(s); err != nil {
			return fmt.Errorf("restore %s→%s: %w", from, to, err)
		}
	}
	if from == to {
		return fmt.Errorf("restore %s→%s: a service is never blocked from itself", from, to)
	}
	n := len(h.faults)
	before := slices.Clone(h.faults)
	h.faults = slices.DeleteFunc(h.faults, func(a effect) bool {
		return (a.kind == kindDrop || a.kind == kindReject) && a.target == from && a.peer == to
	})
	if len(h.faults) == n {
		return fmt.Errorf("restore %s→%s: no block is active (active: %s)", from, to, orNone(describe(h.faults)))
	}
	if err := h.syncTargets(ctx, map[string]bool{from: true}); err != nil {
		h.faults = before
		return fmt.Errorf("restore %s→%s: %w", from, to, err)
	}
	h.record("restore %s→%s", from, to)
	return nil
}

// Partition cuts a and b apart both ways (see the Partition fault).
func (h *Harness) Partition(ctx context.Context, a, b string) error {
	return h.Inject(ctx, Partition(a, b))
}

// Isolate cuts svc off from all other containers (see the Isolate fault).
func (h *Harness) Isolate(ctx context.Context, svc string) error {
	return h.Inject(ctx, Isolate(svc))
}

// Loss drops percent of svc's packets (see the Loss fault).
func (h *Harness) Loss(ctx context.Context, svc string, percent float64) error {
	return h.Inject(ctx, Loss(svc, percent))
}

// RateLimit caps svc's outgoing rate (see the RateLimit fault).
func (h *Harness) RateLimit(ctx context.Context, svc, rate string) error {
	return h.Inject(ctx, RateLimit(svc, rate))
}

// Latency delays svc's outgoing packets; errors.ErrUnsupported without netem.
func (h *Harness) Latency(ctx context.Context, svc string, d time.Duration) error {
	return h.Inject(ctx, Latency(svc, d))
}

// Heal removes every active fault.
func (h *Harness) Heal(ctx context.Context) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	if len(h.faults) == 0 {
		return nil
	}
	targets := map[string]bool{}
	for _, e := range h.faults {
		targets[e.target] = true
	}
	all := describe(h.faults)
	h.faults = nil
	if err := h.syncTargets(ctx, targets); err != nil {
		h.record("heal (%s): FAILED: %v", all, err)
		return fmt.Errorf("heal: %w", err)
	}
	h.traceFaults()
	h.record("heal (%s)", all)
	return nil
}

// Faults lists the active faults, as the transcript names them.
func (h *Harness) Faults() []string {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	out := make([]string, len(h.faults))
	for i, e := range h.faults {
		out[i] = e.String()
	}
	return out
}

// Transcript is the time-stamped log of everything the harness did to the
// stack (faults, restarts, kills, pauses), as written to artifacts.
func (h *Harness) Transcript() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.transcript)
}

// record appends a line to the transcript (guarded by mu, so callers may
// hold faultMu) and logs it.
func (h *Harness) record(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs  ", time.Since(h.started).Seconds()) + fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.transcript = append(h.transcript, line)
	h.mu.Unlock()
	h.logf("%s: %s", h.name, line)
}

// syncTargets re-renders the complete rule set of each target from the
// active faults and installs it in one exec per target (idempotent: the
// same rules after a restart, nothing left behind on recover).
func (h *Harness) syncTargets(ctx context.Context, targets map[string]bool) error {
	var errs []error
	for t := range targets {
		if err := h.syncTarget(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ruleEnv is what rendering needs to know about the network.
type ruleEnv struct {
	self    netip.Addr
	peers   map[string]netip.Addr
	subnet  netip.Prefix
	gateway netip.Addr
}

// renderRules builds the shell script that sets target's whole fault state.
// Blocks match conntrack direction ORIGINAL: packets of connections the
// target opened; replies on connections the peer opened pass.
func renderRules(effects []effect, env ruleEnv) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("set -e")
	w("dev=$(ip -o -4 addr show to %s/32 | awk '{print $2; exit}')", env.self)
	w(`[ -n "$dev" ] || { echo "no interface with address %s" >&2; exit 2; }`, env.self)
	w("for c in RBEE-IN RBEE-OUT; do iptables -w -N $c 2>/dev/null || iptables -w -F $c; done")
	w("iptables -w -C INPUT -j RBEE-IN 2>/dev/null || iptables -w -I INPUT 1 -j RBEE-IN")
	w("iptables -w -C OUTPUT -j RBEE-OUT 2>/dev/null || iptables -w -I OUTPUT 1 -j RBEE-OUT")
	w("tc qdisc del dev $dev root 2>/dev/null || true")
	var rate string
	var delay time.Duration
	for _, e := range effects {
		switch e.kind {
		case kindDrop:
			w("iptables -w -A RBEE-OUT -d %s -m conntrack --ctdir ORIGINAL -j DROP", env.peers[e.peer])
		case kindReject:
			w("iptables -w -A RBEE-OUT -d %s -p tcp -m conntrack --ctdir ORIGINAL -j REJECT --reject-with tcp-reset", env.peers[e.peer])
			w("iptables -w -A RBEE-OUT -d %s -m conntrack --ctdir ORIGINAL -j REJECT --reject-with icmp-port-unreachable", env.peers[e.peer])
		case kindIsolate:
			w("iptables -w -A RBEE-OUT -d %s -j RETURN", env.gateway)
			w("iptables -w -A RBEE-OUT -d %s -j DROP", env.subnet)
			w("iptables -w -A RBEE-IN -s %s -j RETURN", env.gateway)
			w("iptables -w -A RBEE-IN -s %s -j DROP", env.subnet)
		case kindLoss:
			p := strconv.FormatFloat(e.percent/100, 'f', 4, 64)
			w("iptables -w -A RBEE-IN -i $dev -m statistic --mode random --probability %s -j DROP", p)
			w("iptables -w -A RBEE-OUT -o $dev -m statistic --mode random --probability %s -j DROP", p)
		case kindRate:
			rate = e.rate
		case kindLatency:
			delay = e.delay
		}
	}
	switch {
	case delay > 0 && rate != "":
		w("tc qdisc add dev $dev root netem delay %dms rate %s", delay.Milliseconds(), rate)
	case delay > 0:
		w("tc qdisc add dev $dev root netem delay %dms", delay.Milliseconds())
	case rate != "":
		// burst ≥ one MTU-sized packet; latency bounds the queue (packets
		// waiting longer are dropped, as on a saturated link).
		w("tc qdisc add dev $dev root tbf rate %s burst 32kbit latency 400ms", rate)
	}
	return b.String()
}

// syncTarget installs target's current rules; a target that is not running
// keeps its faults recorded and gets them on Start.
func (h *Harness) syncTarget(ctx context.Context, target string) error {
	var effects []effect
	for _, e := range h.faults {
		if e.target == target {
			effects = append(effects, e)
		}
	}
	env := ruleEnv{peers: map[string]netip.Addr{}}
	var err error
	if env.self, err = h.ip(target); err != nil {
		return err
	}
	if len(h.nets) > 0 {
		env.subnet = h.nets[0].subnet
		env.gateway = h.gateway[h.nets[0].key]
	}
	for _, e := range effects {
		if e.peer != "" {
			if env.peers[e.peer], err = h.ip(e.peer); err != nil {
				return err
			}
		}
	}
	hp, err := h.helperFor(ctx, target)
	if err != nil {
		return err
	}
	if hp == nil {
		return nil // target not running: applied on Start
	}
	res, err := execIn(ctx, h.docker, hp.id, []string{"sh", "-c", renderRules(effects, env)})
	if err != nil {
		return fmt.Errorf("apply faults of %s: %w", target, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("apply faults of %s: exit %d: %s", target, res.ExitCode, strings.TrimSpace(res.Stderr+res.Stdout))
	}
	return nil
}

// reapply installs target's recorded faults again after it (re)started.
func (h *Harness) reapply(ctx context.Context, target string) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	has := slices.ContainsFunc(h.faults, func(e effect) bool { return e.target == target })
	if !has {
		return nil
	}
	t0 := time.Now()
	if err := h.syncTarget(ctx, target); err != nil {
		return err
	}
	h.record("re-applied faults of %s after start (in %v): %s", target, time.Since(t0).Round(time.Millisecond), describe(slices.DeleteFunc(slices.Clone(h.faults), func(e effect) bool { return e.target != target })))
	return nil
}

// checkNetem asks the kernel (through target's helper) whether netem exists.
func (h *Harness) checkNetem(ctx context.Context, target string) error {
	if h.netemOK == nil {
		hp, err := h.helperFor(ctx, target)
		if err != nil {
			return err
		}
		if hp == nil {
			return fmt.Errorf("%s is not running: cannot probe for netem", target)
		}
		res, err := execIn(ctx, h.docker, hp.id, []string{"sh", "-c", "tc qdisc add dev lo root netem delay 1ms && tc qdisc del dev lo root"})
		if err != nil {
			return err
		}
		ok := res.ExitCode == 0
		h.netemOK = &ok
		if !ok {
			h.record("latency unsupported: %s", strings.TrimSpace(res.Stderr))
		}
	}
	if !*h.netemOK {
		return fmt.Errorf("latency: %w: the kernel has no sch_netem (tc qdisc netem)", errors.ErrUnsupported)
	}
	return nil
}
