package integration

import (
	"context"
	"fmt"
	"time"
)

// Connection-level faults: toxiproxy toxics on the TCP connections that
// from opens to to, applied by a transparent proxy in from's namespace (see
// Fault). Like Block they are directional: Latency(a, b, …) slows a's
// connections to b, not b's connections to a. A toxic acts on one stream:
// downstream (the default, as in toxiproxy) is the data from receives —
// to's answers —, Upstream() the data from sends. Port(p) narrows the fault
// to connections to that port of to; Toxicity(p) applies it to that share
// of the connections (0 < p ≤ 1, default 1).
//
// Each kind of toxic may be active once per link and stream: injecting the
// same kind again replaces it. Recover(Latency(a, b, 0, 0)) removes a's
// downstream latency to b whatever its delay.

func toxicFault(from, to, kind, desc string, attrs map[string]any, bad error) Fault {
	return Fault{parts: []rule{toxicRule{from: from, to: to, kind: kind, stream: "downstream", toxicity: 1, attrs: attrs, desc: desc, bad: bad}}}
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// Latency delays every chunk of data on from's connections to to by d ±
// jitter (uniform; toxiproxy's latency toxic). It works on any kernel, on
// connections opened after the link's first connection-level fault; see
// PacketLatency for the netem delay of every packet.
func Latency(from, to string, d, jitter time.Duration) Fault {
	var bad error
	switch {
	case d < time.Millisecond:
		bad = fmt.Errorf("latency %s→%s: %v must be at least 1ms", from, to, d)
	case jitter < 0 || jitter > d:
		bad = fmt.Errorf("latency %s→%s: jitter %v must be in [0, %v]", from, to, jitter, d)
	}
	desc := d.String()
	if jitter > 0 {
		desc += "±" + jitter.String()
	}
	return toxicFault(from, to, "latency", desc, map[string]any{"latency": ms(d), "jitter": ms(jitter)}, bad)
}

// Bandwidth caps the stream at kbPerSec kilobytes (1000 bytes) per second.
func Bandwidth(from, to string, kbPerSec int64) Fault {
	var bad error
	if kbPerSec <= 0 {
		bad = fmt.Errorf("bandwidth %s→%s: %d KB/s must be positive", from, to, kbPerSec)
	}
	return toxicFault(from, to, "bandwidth", fmt.Sprintf("%dKB/s", kbPerSec), map[string]any{"rate": kbPerSec}, bad)
}

// SlowClose delays the close of the stream by d after its data ended.
func SlowClose(from, to string, d time.Duration) Fault {
	var bad error
	if d < time.Millisecond {
		bad = fmt.Errorf("slow-close %s→%s: %v must be at least 1ms", from, to, d)
	}
	return toxicFault(from, to, "slow_close", d.String(), map[string]any{"delay": ms(d)}, bad)
}

// Hang stops forwarding the stream and keeps the connections open, even
// once the sender closed its side (rbee-toxic's hang toxic; toxiproxy's
// timeout 0 would pass the close on): the reader waits forever, as behind a
// peer that stopped writing. Recovering it closes the connections it held.
func Hang(from, to string) Fault {
	return toxicFault(from, to, "hang", "forever", map[string]any{}, nil)
}

// ResetPeer resets the connection (TCP RST to both ends) after the next
// chunk of data on the stream, waiting after first (0: at once).
func ResetPeer(from, to string, after time.Duration) Fault {
	var bad error
	if after < 0 {
		bad = fmt.Errorf("reset-peer %s→%s: %v must not be negative", from, to, after)
	}
	return toxicFault(from, to, "reset_peer", "after "+after.String(), map[string]any{"timeout": ms(after)}, bad)
}

// LimitData closes the connection once the stream has carried n bytes.
func LimitData(from, to string, n int64) Fault {
	var bad error
	if n <= 0 {
		bad = fmt.Errorf("limit-data %s→%s: %d bytes must be positive", from, to, n)
	}
	return toxicFault(from, to, "limit_data", fmt.Sprintf("%dB", n), map[string]any{"bytes": n}, bad)
}

// Slice cuts the stream into pieces of avg ± variation bytes, delay apart.
func Slice(from, to string, avg, variation int, delay time.Duration) Fault {
	var bad error
	if avg <= 0 || variation < 0 || variation >= avg || delay < 0 {
		bad = fmt.Errorf("slice %s→%s: want avg > variation ≥ 0 and delay ≥ 0, got %d, %d, %v", from, to, avg, variation, delay)
	}
	return toxicFault(from, to, "slicer", fmt.Sprintf("%d±%dB/%v", avg, variation, delay),
		map[string]any{"average_size": avg, "size_variation": variation, "delay": delay.Microseconds()}, bad)
}

// Interpose routes from's new connections to to through the proxy without
// a toxic: a toxic added later then acts on connections already open (a
// reset in the middle of a stream). It is also the proxy's baseline cost.
func Interpose(from, to string) Fault {
	return Fault{parts: []rule{toxicRule{from: from, to: to, toxicity: 1}}}
}

// mapToxics applies fn to every connection-level rule of f; any other rule
// makes the result an invalid fault naming the modifier.
func (f Fault) mapToxics(modifier string, fn func(*toxicRule)) Fault {
	out := Fault{desc: f.desc, err: f.err, parts: make([]rule, len(f.parts))}
	for i, r := range f.parts {
		tr, ok := r.(toxicRule)
		if !ok {
			if out.err == nil {
				out.err = fmt.Errorf("%s applies to connection-level faults only, not to %s", modifier, r)
			}
			out.parts[i] = r
			continue
		}
		fn(&tr)
		out.parts[i] = tr
	}
	return out
}

// Upstream makes the toxics of f act on the data from sends.
func (f Fault) Upstream() Fault {
	return f.mapToxics("Upstream", func(r *toxicRule) {
		if r.kind != "" {
			r.stream = "upstream"
		}
	})
}

// Downstream makes the toxics of f act on the data from receives (the
// default).
func (f Fault) Downstream() Fault {
	return f.mapToxics("Downstream", func(r *toxicRule) {
		if r.kind != "" {
			r.stream = "downstream"
		}
	})
}

// Toxicity applies the toxics of f to the share p (0 < p ≤ 1) of the
// connections, chosen at random as each connection opens.
func (f Fault) Toxicity(p float64) Fault {
	return f.mapToxics("Toxicity", func(r *toxicRule) { r.toxicity = p })
}

// Port narrows f to connections to that TCP port of the peer.
func (f Fault) Port(port int) Fault {
	out := f.mapToxics("Port", func(r *toxicRule) { r.port = uint16(port) })
	if (port <= 0 || port > 65535) && out.err == nil {
		out.err = fmt.Errorf("port %d is not a TCP port", port)
	}
	return out
}

// PrepareToxics starts svc's fault helper and its toxic proxy now, without
// steering any connection into it, so that the first connection-level
// fault from svc later costs only its apply: a run that times its faults
// (the nemesis) must not pay the helper's start and the proxy's build
// inside its first one. A restart of svc needs it again.
func (h *Harness) PrepareToxics(ctx context.Context, svc string) error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	hp, err := h.helperFor(ctx, svc)
	if err != nil {
		return fmt.Errorf("prepare toxics of %s: %w", svc, err)
	}
	if hp == nil {
		return fmt.Errorf("prepare toxics of %s: it is not running", svc)
	}
	if !hp.proxy {
		if err := h.startProxy(ctx, svc, hp); err != nil {
			return fmt.Errorf("prepare toxics of %s: %w", svc, err)
		}
	}
	return nil
}
