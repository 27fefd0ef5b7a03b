package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Minimum durations. A heartbeat interval of "1ns" is a valid duration but
// makes the hive spin on a core and flood the queen; a retention of "1ns"
// forgets a job before its stream can be read. Values below these are
// refused with an error naming the key and the minimum.
const (
	MinHeartbeatInterval = 10 * time.Millisecond  // hive.toml heartbeat_interval, --heartbeat-interval
	MinStaleAfter        = 100 * time.Millisecond // heartbeat.stale_after
	MinTimeout           = 50 * time.Millisecond  // http.timeout, ssh.*_timeout, lifecycle.*_timeout
	MinRetention         = time.Second            // jobs.retention
	MinJobDeadline       = time.Second            // limits.infer_timeout, limits.forward_timeout
)

// CheckMinDuration reports a duration below min, naming what it is: for
// command-line flags, which are not TOML keys.
func CheckMinDuration(name string, d, min time.Duration) error {
	if d < min {
		return fmt.Errorf("%s %s is below the minimum of %s", name, d, min)
	}
	return nil
}

// durationMin is duration with a lower bound.
func (t *table) durationMin(key string, min time.Duration, dst *Duration) bool {
	var d Duration
	if !t.duration(key, &d) {
		return false
	}
	if d.D() < min {
		path := joinKey(t.path, key)
		t.doc.fail(path, "key %q: %s is below the minimum of %s", path, d, min)
		return false
	}
	*dst = d
	return true
}

// QueenLimits is [limits] (extension): bounds on what heartbeats and jobs
// may make the queen hold. Zero values mean the defaults below.
type QueenLimits struct {
	MaxWorkers      int      // max_workers, default 4096
	MaxLearnedHives int      // max_learned_hives, default 256
	MaxRunningJobs  int      // max_running_jobs, default 1024
	MaxJobEvents    int      // max_job_events, default 100000
	MaxJobBytes     int      // max_job_bytes, default 8 MiB
	RetainedBytes   int      // retained_bytes, default 64 MiB
	InferTimeout    Duration // infer_timeout, default 10m
	ForwardTimeout  Duration // forward_timeout, default 1h
	MaxConnections  int      // max_connections, default 1024
}

// DefaultQueenLimits are [limits]'s defaults.
func DefaultQueenLimits() QueenLimits {
	return QueenLimits{
		MaxWorkers: 4096, MaxLearnedHives: 256, MaxRunningJobs: 1024,
		MaxJobEvents: 100_000, MaxJobBytes: 8 << 20, RetainedBytes: 64 << 20,
		InferTimeout: Duration(10 * time.Minute), ForwardTimeout: Duration(time.Hour),
		MaxConnections: 1024,
	}
}

func parseLimits(t *table, l *QueenLimits) {
	t.integer("max_workers", 1, 1_000_000, &l.MaxWorkers)
	t.integer("max_learned_hives", 1, 1_000_000, &l.MaxLearnedHives)
	t.integer("max_running_jobs", 1, 1_000_000, &l.MaxRunningJobs)
	t.integer("max_job_events", 10, 100_000_000, &l.MaxJobEvents)
	t.integer("max_job_bytes", 4096, 1<<32, &l.MaxJobBytes)
	t.integer("retained_bytes", 4096, 1<<40, &l.RetainedBytes)
	t.durationMin("infer_timeout", MinJobDeadline, &l.InferTimeout)
	t.durationMin("forward_timeout", MinJobDeadline, &l.ForwardTimeout)
	t.integer("max_connections", 1, 1_000_000, &l.MaxConnections)
	t.unknown("")
}

// IsLoopbackURL reports whether u's host is localhost or a loopback
// address, i.e. a URL only the same machine can use.
func IsLoopbackURL(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	return IsLoopbackHost(pu.Hostname())
}

// IsLoopbackHost reports whether host is localhost (or a name under
// .localhost) or a loopback IP address.
func IsLoopbackHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
