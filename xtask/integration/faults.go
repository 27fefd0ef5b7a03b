package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// A Fault is a value describing a network fault: inject it with
// Harness.Inject, undo it with Harness.Recover (or RecoverAll for every active fault).
//
// All faults are installed by a helper container that shares the network
// namespace of a target service (see DefaultFaultImage); the target itself
// needs no capability. Faults act on traffic between containers; Isolate
// leaves the test host's path (published ports) open so the test can still
// observe the service.
//
// Packet-level faults (Block, Reject, Partition, Isolate, Loss, RateLimit,
// PacketLatency) are iptables rules and tc qdiscs: they act on every packet,
// so on connections opened before the fault too. Connection-level faults
// (Latency, Bandwidth, SlowClose, Hang, ResetPeer, LimitData, Slice,
// Interpose; see toxics.go) run the target's new TCP connections to the
// peer through a transparent proxy in the helper, steered there by an
// iptables nat REDIRECT: a connection opened before the link's first
// connection-level fault is not redirected and never sees one; a connection
// opened while the link is interposed goes through the proxy until it
// closes and sees every toxic added or removed later.
type Fault struct {
	desc  string
	parts []rule
	err   error // a modifier applied where it does not fit
}

// String describes the fault as the transcript shows it.
func (f Fault) String() string {
	if f.desc != "" {
		return f.desc
	}
	return describe(f.parts)
}

func describe(rs []rule) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// Block makes connections that from opens to to fail silently (packets
// dropped: the caller times out), while connections to opens to from still
// work. Established from→to connections stall too.
func Block(from, to string) Fault {
	return Fault{desc: fmt.Sprintf("block(%s→%s)", from, to), parts: []rule{blockRule{from: from, to: to}}}
}

// Reject is Block that fails fast: TCP connections from→to are refused (RST),
// other packets get ICMP port-unreachable.
func Reject(from, to string) Fault {
	return Fault{desc: fmt.Sprintf("reject(%s→%s)", from, to), parts: []rule{blockRule{from: from, to: to, reject: true}}}
}

// Partition cuts a and b apart in both directions: Block(a,b) + Block(b,a).
// Recover(Block(a, b)) heals one direction of it.
func Partition(a, b string) Fault {
	return Fault{desc: fmt.Sprintf("partition(%s|%s)", a, b), parts: []rule{blockRule{from: a, to: b}, blockRule{from: b, to: a}}}
}

// Isolate cuts svc off from every other container of the topology, both
// ways. The test host still reaches it through its published ports.
func Isolate(svc string) Fault {
	return Fault{desc: fmt.Sprintf("isolate(%s)", svc), parts: []rule{isolateRule{svc: svc}}}
}

// Loss drops percent (0 < percent ≤ 100) of the packets svc sends and
// receives, at random (iptables statistic).
func Loss(svc string, percent float64) Fault {
	return Fault{desc: fmt.Sprintf("loss(%s,%g%%)", svc, percent), parts: []rule{lossRule{svc: svc, percent: percent}}}
}

// RateLimit caps what svc sends to rate, in tc syntax ("1mbit", "200kbit",
// "50kbps"), with a token bucket (tc tbf).
func RateLimit(svc, rate string) Fault {
	return Fault{desc: fmt.Sprintf("rate-limit(%s,%s)", svc, rate), parts: []rule{rateRule{svc: svc, rate: rate}}}
}

// PacketLatency delays every packet svc sends by d ± jitter (tc netem), on
// every connection, old or new. Kernels without sch_netem (this project's
// CI) make Inject return an error wrapping errors.ErrUnsupported; Latency
// is the connection-level delay that works on any kernel.
func PacketLatency(svc string, d, jitter time.Duration) Fault {
	return Fault{parts: []rule{netemRule{svc: svc, delay: d, jitter: jitter}}}
}

// validate checks a fault against the harness's services, and its
// arguments when values is set: Recover matches rules by what they act on,
// so Recover(Latency(a, b, 0, 0)) is valid though Inject of it is not.
func (h *Harness) validate(f Fault, values bool) error {
	if f.err != nil {
		return f.err
	}
	if len(f.parts) == 0 {
		return errors.New("empty fault: build one with Block, Reject, Partition, Isolate, Loss, RateLimit, PacketLatency or a connection-level fault (Latency, Bandwidth, SlowClose, Hang, ResetPeer, LimitData, Slice, Interpose)")
	}
	for _, r := range f.parts {
		if _, err := h.service(r.on()); err != nil {
			return err
		}
		if p := r.peer(); p != "" {
			if _, err := h.service(p); err != nil {
				return err
			}
			if p == r.on() {
				return fmt.Errorf("cannot block %s from itself", p)
			}
		}
		if !values {
			continue
		}
		if err := r.check(); err != nil {
			return err
		}
	}
	return nil
}

// Inject applies f and records it; it stays active across Restart, Stop and
// Start until Recover or RecoverAll. Injecting a rule that is already active
// changes nothing; a new Loss, RateLimit or PacketLatency on a service, or
// a new toxic of the same kind and direction on a link, replaces the old
// one. It returns once the rules are in force.
func (h *Harness) Inject(ctx context.Context, f Fault) error {
	if err := h.validate(f, true); err != nil {
		return fmt.Errorf("inject %s: %w", f, err)
	}
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	for _, r := range f.parts {
		if _, ok := r.(netemRule); ok {
			if err := h.checkNetem(ctx, r.on()); err != nil {
				return fmt.Errorf("inject %s: %w", f, err)
			}
		}
	}
	before := slices.Clone(h.faults)
	targets := map[string]bool{}
	for _, r := range f.parts {
		h.faults = slices.DeleteFunc(h.faults, func(a rule) bool { return a.key() == r.key() })
		h.faults = append(h.faults, r)
		targets[r.on()] = true
	}
	t0 := time.Now()
	if err := h.syncTargets(ctx, targets); err != nil {
		h.faults = before
		// Best effort: back to the old rules where a helper may have
		// installed some. A target whose helper never came up has nothing
		// to undo (and another helper would double the wait).
		back := map[string]bool{}
		for t := range targets {
			if h.helpers[t] != nil {
				back[t] = true
			}
		}
		_ = h.syncTargets(context.WithoutCancel(ctx), back)
		h.record("inject %s: FAILED: %v", f, err)
		return fmt.Errorf("inject %s: %w", f, err)
	}
	h.traceFaults()
	h.record("inject %s (in %v)", f, time.Since(t0).Round(time.Millisecond))
	return nil
}

// Recover undoes f: every rule of f must be active (recovering a fault that
// is not there is an error: the test's idea of the network is wrong).
// Rules are matched by what they act on, not their values: Recover(Block(a,
// b)) undoes that direction of a Partition(a, b), and Recover(Latency(a, b,
// 0, 0)) the downstream latency on a→b whatever its delay.
func (h *Harness) Recover(ctx context.Context, f Fault) error {
	if err := h.validate(f, false); err != nil {
		return fmt.Errorf("recover %s: %w", f, err)
	}
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	targets := map[string]bool{}
	for _, r := range f.parts {
		if !slices.ContainsFunc(h.faults, func(a rule) bool { return a.key() == r.key() }) {
			return fmt.Errorf("recover %s: %s is not active (active: %s)", f, r, orNone(describe(h.faults)))
		}
		targets[r.on()] = true
	}
	before := slices.Clone(h.faults)
	for _, r := range f.parts {
		h.faults = slices.DeleteFunc(h.faults, func(a rule) bool { return a.key() == r.key() })
	}
	t0 := time.Now()
	if err := h.syncTargets(ctx, targets); err != nil {
		h.faults = before
		h.record("recover %s: FAILED: %v", f, err)
		return fmt.Errorf("recover %s: %w", f, err)
	}
	h.traceFaults()
	h.record("recover %s (in %v)", f, time.Since(t0).Round(time.Millisecond))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// RecoverAll removes every active fault.
func (h *Harness) RecoverAll(ctx context.Context) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	if len(h.faults) == 0 {
		return nil
	}
	targets := map[string]bool{}
	for _, r := range h.faults {
		targets[r.on()] = true
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
	for i, r := range h.faults {
		out[i] = r.String()
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

// syncTarget installs target's current rules; a target that is not running
// keeps its faults recorded and gets them on Start.
func (h *Harness) syncTarget(ctx context.Context, target string) error {
	var rules []rule
	for _, r := range h.faults {
		if r.on() == target {
			rules = append(rules, r)
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
	for _, r := range rules {
		if p := r.peer(); p != "" {
			if env.peers[p], err = h.ip(p); err != nil {
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
	needProxy := slices.ContainsFunc(rules, func(r rule) bool { _, ok := r.(toxicRule); return ok })
	if needProxy && !hp.proxy {
		if err := h.startProxy(ctx, target, hp); err != nil {
			return err
		}
	}
	if needProxy {
		hp.toxics = true
	}
	script, _ := render(rules, env, hp.toxics)
	res, err := h.run(ctx, hp, script)
	if err != nil {
		return fmt.Errorf("apply faults of %s: %w", target, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("apply faults of %s: exit %d: %s", target, res.ExitCode, strings.TrimSpace(res.Stderr+res.Stdout))
	}
	return nil
}

// encodeState is the proxy state as rbee-toxic apply's -state argument.
func encodeState(st toxic.State) string {
	b, _ := json.Marshal(st)
	return base64.StdEncoding.EncodeToString(b)
}

// reapply installs target's recorded faults again after it (re)started.
func (h *Harness) reapply(ctx context.Context, target string) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	has := slices.ContainsFunc(h.faults, func(r rule) bool { return r.on() == target })
	if !has {
		return nil
	}
	t0 := time.Now()
	if err := h.syncTarget(ctx, target); err != nil {
		return err
	}
	h.record("re-applied faults of %s after start (in %v): %s", target, time.Since(t0).Round(time.Millisecond), describe(slices.DeleteFunc(slices.Clone(h.faults), func(r rule) bool { return r.on() != target })))
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
		res, err := h.run(ctx, hp, "tc qdisc add dev lo root netem delay 1ms && tc qdisc del dev lo root")
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
		return fmt.Errorf("packet latency: %w: the kernel has no sch_netem (tc qdisc netem); Latency is the connection-level delay", errors.ErrUnsupported)
	}
	return nil
}
