// Package toxic is the wire format between the harness and rbee-toxic, the
// transparent TCP proxy that the harness runs in a fault helper (a container
// sharing a target's network namespace) to apply connection-level faults.
//
// The harness sends the complete desired State on every change; the proxy
// reconciles its toxics to it and answers only when every live connection
// has the new toxics, so a fault is in force when the call returns.
package toxic

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Fixed ports of the proxy inside the target's namespace, and the socket
// mark of the proxy's own outbound connections (iptables leaves marked
// connections out of the redirect, so the proxy never redirects itself).
const (
	ListenAddr  = "127.0.0.1:39721"
	ListenPort  = 39721
	ControlAddr = "127.0.0.1:39722"
	Mark        = 0x7262
	// BinPath is where the harness copies the proxy into a fault helper.
	BinPath = "/usr/local/bin/rbee-toxic"
	// LogPath is the proxy's log inside the helper.
	LogPath = "/tmp/rbee-toxic.log"

	// AdminPort is the admin endpoint (serve -admin ADDR:AdminPort) on the
	// target's own address, through which the harness runs a helper's
	// fault scripts over HTTP instead of paying a docker exec for each.
	AdminPort = 39723
	// TokenEnv names the environment variable holding the admin endpoint's
	// bearer token (at least MinToken bytes); every request without it is
	// refused before its body is read.
	TokenEnv = "RBEE_TOXIC_TOKEN"
	MinToken = 16
	// MaxScript is the largest script the admin endpoint accepts.
	MaxScript = 1 << 20
)

// ScriptResult is the admin endpoint's answer to POST /script: the exit
// code of `sh -c SCRIPT` and its output (each stream capped; a capped
// stream ends in a line saying so). Exit is -1 when the script did not
// finish within the endpoint's time limit (Stderr says so).
type ScriptResult struct {
	Exit   int    `json:"exit"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// Toxic is one toxiproxy toxic, in toxiproxy's own JSON form.
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"` // upstream or downstream
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// Route is the toxics for connections to one destination: an address, and
// a port (0: every port of that address).
type Route struct {
	Addr   netip.Addr `json:"addr"`
	Port   uint16     `json:"port,omitempty"`
	Toxics []Toxic    `json:"toxics"`
}

// Key names the route as the proxy indexes it.
func (r Route) Key() string {
	if r.Port == 0 {
		return r.Addr.String()
	}
	return netip.AddrPortFrom(r.Addr, r.Port).String()
}

// State is everything the proxy of one namespace should apply.
type State struct {
	Routes []Route `json:"routes"`
}

// Validate checks what the proxy would otherwise reject half-way.
func (s State) Validate() error {
	seen := map[string]bool{}
	for _, r := range s.Routes {
		if !r.Addr.Is4() {
			return fmt.Errorf("route %v: want an IPv4 address", r.Addr)
		}
		if seen[r.Key()] {
			return fmt.Errorf("route %s listed twice", r.Key())
		}
		seen[r.Key()] = true
		names := map[string]bool{}
		for _, t := range r.Toxics {
			if t.Name == "" || t.Type == "" {
				return fmt.Errorf("route %s: toxic %+v lacks a name or type", r.Key(), t)
			}
			if t.Stream != "upstream" && t.Stream != "downstream" {
				return fmt.Errorf("route %s: toxic %s: stream %q is neither upstream nor downstream", r.Key(), t.Name, t.Stream)
			}
			if !(t.Toxicity > 0 && t.Toxicity <= 1) {
				return fmt.Errorf("route %s: toxic %s: toxicity %g is not in (0, 1]", r.Key(), t.Name, t.Toxicity)
			}
			if names[t.Name] {
				return fmt.Errorf("route %s: toxic %s listed twice", r.Key(), t.Name)
			}
			names[t.Name] = true
		}
	}
	return nil
}

// Canonical is a stable JSON encoding of one toxic, to compare desired with
// applied.
func (t Toxic) Canonical() string {
	b, _ := json.Marshal(t) // maps marshal with sorted keys
	return string(b)
}

// String lists the routes and their toxic names, for logs.
func (s State) String() string {
	var parts []string
	for _, r := range s.Routes {
		var n []string
		for _, t := range r.Toxics {
			n = append(n, t.Name)
		}
		sort.Strings(n)
		parts = append(parts, r.Key()+"["+strings.Join(n, ",")+"]")
	}
	return strings.Join(parts, " ")
}
