// Package config parses rbee's configuration files strictly: queen.toml and
// hives.conf (PROTOCOL.md §6) and the hive's machine-local hive.toml.
//
// Every problem is an *Error that names the file, the line and the dotted key
// ("queen.toml:7: unknown key \"ssh.conect_timeout\" (did you mean
// \"ssh.connect_timeout\"?)"). Unknown keys, duplicate keys and tables,
// duplicate hive aliases, ports outside 1..65535, durations that are not
// positive Go duration strings, missing required keys, wrong value types and
// empty files are all errors; when a file has several problems they are all
// reported, one per line, in line order.
//
// Tests: go test ./internal/config/ ; fuzz:
// go test ./internal/config/ -run '^$' -fuzz FuzzParseQueen -fuzztime 20s
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string ("5s",
// "1m30s"). Negative values are rejected.
type Duration time.Duration

// ParseDuration parses a non-negative Go duration string.
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want Go duration syntax like \"30s\" or \"1m30s\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return Duration(d), nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration ("30s").
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses a Go duration string; see ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText writes the Go duration string, so configs round-trip.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ParsePortRange parses "LO-HI" (inclusive, 1 <= LO <= HI <= 65535) or a
// single port "P" (LO = HI = P), as in the hive's --worker-ports 9100-9199.
func ParsePortRange(s string) (lo, hi int, err error) {
	bad := func(why string) (int, int, error) {
		return 0, 0, fmt.Errorf("invalid port range %q: %s (want LO-HI like \"9100-9199\")", s, why)
	}
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		b = a
	}
	lo, err1 := parsePort(a)
	hi, err2 := parsePort(b)
	switch {
	case err1 != nil:
		return bad(err1.Error())
	case err2 != nil:
		return bad(err2.Error())
	case lo > hi:
		return bad("low end is above high end")
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1..65535", n)
	}
	return n, nil
}
