package integration

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Faults on single TCP connections, for tests of what a peer does when one
// connection breaks while everything else keeps working (a stream resumed,
// a request that must not be sent twice). Like the network faults they run
// in the fault helper that shares the service's network namespace.

// Connection is one established TCP connection as seen from the service
// that opened it.
type Connection struct {
	Local, Peer string // "ip:port"
}

func (c Connection) String() string { return c.Local + "→" + c.Peer }

// ssLine matches the address columns of `ss -Htn` output.
var ssLine = regexp.MustCompile(`(\S+:\d+)\s+(\S+:\d+)\s*$`)

func parseSS(out string) []Connection {
	var cs []Connection
	for _, line := range strings.Split(out, "\n") {
		if m := ssLine.FindStringSubmatch(line); m != nil {
			cs = append(cs, Connection{Local: m[1], Peer: m[2]})
		}
	}
	return cs
}

// connFilter is the ss filter for connections to svc to on port.
func (h *Harness) connFilter(to string, port int) (string, error) {
	ip, err := h.ip(to)
	if err != nil {
		return "", err
	}
	if port <= 0 || port > 65535 {
		return "", fmt.Errorf("port %d out of range", port)
	}
	return fmt.Sprintf("dst %s dport = :%d", ip, port), nil
}

// helperRun runs a shell script in target's fault helper.
func (h *Harness) helperRun(ctx context.Context, target, script string) (string, error) {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	hp, err := h.helperFor(ctx, target)
	if err != nil {
		return "", err
	}
	if hp == nil {
		return "", fmt.Errorf("%s is not running", target)
	}
	res, err := h.run(ctx, hp, script)
	if err != nil {
		return "", err
	}
	if res.ExitCode != 0 {
		return "", fmt.Errorf("exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr+res.Stdout))
	}
	return res.Stdout, nil
}

// Connections lists the established TCP connections that from has open to
// to's port.
func (h *Harness) Connections(ctx context.Context, from, to string, port int) ([]Connection, error) {
	f, err := h.connFilter(to, port)
	if err != nil {
		return nil, fmt.Errorf("connections %s→%s:%d: %w", from, to, port, err)
	}
	out, err := h.helperRun(ctx, from, "ss -Htn state established "+f)
	if err != nil {
		return nil, fmt.Errorf("connections %s→%s:%d: %w", from, to, port, err)
	}
	return parseSS(out), nil
}

// CutConnections aborts every established TCP connection from has open to
// to's port (ss -K, the kernel's SOCK_DESTROY): from's socket fails with
// ECONNABORTED and to gets a reset, as when a middlebox drops the
// connection. New connections are not affected. It returns the connections
// it cut; none is an error, since the test expected one.
func (h *Harness) CutConnections(ctx context.Context, from, to string, port int) ([]Connection, error) {
	f, err := h.connFilter(to, port)
	if err != nil {
		return nil, fmt.Errorf("cut %s→%s:%d: %w", from, to, port, err)
	}
	// ss -K prints the sockets it destroyed; the IPv6 pass of the dump
	// answers EINVAL on an IPv4 filter, which is harmless.
	out, err := h.helperRun(ctx, from, "ss -HtnK state established "+f+" 2>/dev/null; true")
	if err != nil {
		return nil, fmt.Errorf("cut %s→%s:%d: %w", from, to, port, err)
	}
	cut := parseSS(out)
	h.record("cut %d connections %s→%s:%d: %v", len(cut), from, to, port, cut)
	if len(cut) == 0 {
		return nil, fmt.Errorf("cut %s→%s:%d: no established connection", from, to, port)
	}
	return cut, nil
}

// HoldReplies makes svc's kernel drop the TCP segments it sends from its
// own port that contain marker, so an answer the program wrote never
// leaves (TCP retransmits it, and each copy is dropped too): the peer is
// left waiting, with its request delivered, for as long as the test wants.
// The rules live in a chain of their own (RBEE-HOLD), untouched by the
// other faults; release removes them. A restart of svc drops them.
func (h *Harness) HoldReplies(ctx context.Context, svc string, port int, marker string) (release func(context.Context) error, err error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("hold replies of %s:%d: port out of range", svc, port)
	}
	if marker == "" || strings.ContainsAny(marker, "'\n\\") {
		return nil, fmt.Errorf("hold replies of %s:%d: marker %q must be non-empty and plain", svc, port, marker)
	}
	script := strings.Join([]string{
		"set -e",
		"iptables -w -N RBEE-HOLD 2>/dev/null || iptables -w -F RBEE-HOLD",
		"iptables -w -C OUTPUT -j RBEE-HOLD 2>/dev/null || iptables -w -I OUTPUT 1 -j RBEE-HOLD",
		"iptables -w -A RBEE-HOLD -p tcp --sport " + strconv.Itoa(port) + " -m string --algo bm --string '" + marker + "' -j DROP",
	}, "\n")
	if _, err := h.helperRun(ctx, svc, script); err != nil {
		return nil, fmt.Errorf("hold replies of %s:%d containing %q: %w", svc, port, marker, err)
	}
	h.record("hold replies of %s:%d containing %q", svc, port, marker)
	return func(ctx context.Context) error {
		if _, err := h.helperRun(ctx, svc, "iptables -w -F RBEE-HOLD"); err != nil {
			return fmt.Errorf("release replies of %s:%d: %w", svc, port, err)
		}
		h.record("released replies of %s:%d containing %q", svc, port, marker)
		return nil
	}, nil
}

// MustCutConnections is CutConnections that fails the test on error.
func (h *Harness) MustCutConnections(t testing.TB, from, to string, port int) []Connection {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	cs, err := h.CutConnections(ctx, from, to, port)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// MustConnections is Connections that fails the test on error.
func (h *Harness) MustConnections(t testing.TB, from, to string, port int) []Connection {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	cs, err := h.Connections(ctx, from, to, port)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Locals returns the local addresses of cs, sorted.
func Locals(cs []Connection) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Local
	}
	slices.Sort(out)
	return out
}
