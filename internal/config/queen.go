package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Queen is queen.toml. Besides PROTOCOL.md §6 it accepts two extension
// tables, [lifecycle] (start_timeout, stop_timeout: how long hive_start polls
// /health and hive_stop waits for exit) and [jobs] (retention: how long a
// finished job stays queryable; max_jobs: how many are kept at most), and
// [limits] (QueenLimits: caps on registry entries, jobs, events and
// connections). Durations have minimums (see MinStaleAfter and friends).
type Queen struct {
	Listen     string // default "0.0.0.0:8500"
	PublicURL  string // required: what hives and workers are told
	HivesConf  string // required; LoadQueen resolves it against the queen.toml directory
	HiveBinary string // what hive_install uploads; default "/usr/local/share/rbee/rbee-hive"
	Heartbeat  QueenHeartbeat
	SSH        QueenSSH
	HTTP       QueenHTTP
	Lifecycle  QueenLifecycle
	Jobs       QueenJobs
	Limits     QueenLimits
	Auth       QueenAuth
}

// QueenAuth is [auth] (extension): the cluster secret that heartbeats,
// shutdown requests and calls to hives are signed with, and who may send
// heartbeats at all.
type QueenAuth struct {
	// SecretFile is the cluster secret (64 hex digits, mode 0600). The
	// queen refuses to start without it unless Insecure is set.
	SecretFile string // secret_file
	// Insecure runs without authentication (development only): unsigned
	// heartbeats and shutdown requests are accepted.
	Insecure bool // insecure, default false
	// LearnHives accepts heartbeats (signed) of hives not in hives.conf.
	LearnHives bool // learn_hives, default false
	// StandaloneHive is the hive_id that workers not started by a hive
	// report; their heartbeats (signed) need no hive to vouch for them.
	// Empty: no standalone workers.
	StandaloneHive string // standalone_hive
}

// QueenHeartbeat is [heartbeat].
type QueenHeartbeat struct {
	StaleAfter Duration // stale_after, default 30s
}

// QueenSSH is [ssh]. IdentityFile and KnownHosts may be empty here; the SSH
// client refuses to connect without them (host keys are always verified).
type QueenSSH struct {
	IdentityFile       string   // identity_file
	KnownHosts         string   // known_hosts
	ConnectTimeout     Duration // connect_timeout, default 10s
	CommandTimeout     Duration // command_timeout, default 60s
	MaxSessionsPerHost int      // max_sessions_per_host, default 4, 1..1024
}

// QueenHTTP is [http]: per-call timeout and retry count for calls to hives and workers.
type QueenHTTP struct {
	Timeout Duration // timeout, default 5s
	Retries int      // retries, default 3, 0..100
}

// QueenLifecycle is [lifecycle] (extension).
type QueenLifecycle struct {
	StartTimeout Duration // start_timeout, default 30s
	StopTimeout  Duration // stop_timeout, default 10s
}

// QueenJobs is [jobs] (extension).
type QueenJobs struct {
	Retention Duration // retention, default 10m
	MaxJobs   int      // max_jobs, default 10000, 1..10000000
}

// Defaults for queen.toml.
const (
	DefaultListen     = "0.0.0.0:8500"
	DefaultHiveBinary = "/usr/local/share/rbee/rbee-hive"
)

// DefaultQueen returns a Queen with every default applied and the required
// fields (PublicURL, HivesConf) empty.
func DefaultQueen() *Queen {
	return &Queen{
		Listen:     DefaultListen,
		HiveBinary: DefaultHiveBinary,
		Heartbeat:  QueenHeartbeat{StaleAfter: Duration(30 * time.Second)},
		SSH: QueenSSH{
			ConnectTimeout:     Duration(10 * time.Second),
			CommandTimeout:     Duration(60 * time.Second),
			MaxSessionsPerHost: 4,
		},
		HTTP:      QueenHTTP{Timeout: Duration(5 * time.Second), Retries: 3},
		Lifecycle: QueenLifecycle{StartTimeout: Duration(30 * time.Second), StopTimeout: Duration(10 * time.Second)},
		Jobs:      QueenJobs{Retention: Duration(10 * time.Minute), MaxJobs: 10000},
		Limits:    DefaultQueenLimits(),
	}
}

// ParseQueen parses queen.toml content; name is used in error messages.
// Defaults are applied; paths are returned as written (see LoadQueen).
func ParseQueen(data []byte, name string) (*Queen, error) {
	doc, err := parseDocument(data, name)
	if err != nil {
		return nil, err
	}
	if len(doc.root) == 0 {
		return nil, &Error{File: name, Msg: "file is empty; want at least public_url and hives_conf"}
	}
	q := DefaultQueen()
	root := doc.table("", doc.root)
	if root.str("listen", &q.Listen) {
		if err := checkListen(q.Listen); err != nil {
			doc.fail("listen", "key \"listen\": %v", err)
		}
	}
	root.httpURL("public_url", &q.PublicURL)
	root.str("hives_conf", &q.HivesConf)
	root.str("hive_binary", &q.HiveBinary)
	root.require("public_url", "hives_conf")

	if t := root.sub("heartbeat"); t != nil {
		t.durationMin("stale_after", MinStaleAfter, &q.Heartbeat.StaleAfter)
		t.unknown("")
	}
	if t := root.sub("ssh"); t != nil {
		t.str("identity_file", &q.SSH.IdentityFile)
		t.str("known_hosts", &q.SSH.KnownHosts)
		t.durationMin("connect_timeout", MinTimeout, &q.SSH.ConnectTimeout)
		t.durationMin("command_timeout", MinTimeout, &q.SSH.CommandTimeout)
		t.integer("max_sessions_per_host", 1, 1024, &q.SSH.MaxSessionsPerHost)
		t.unknown("")
	}
	if t := root.sub("http"); t != nil {
		t.durationMin("timeout", MinTimeout, &q.HTTP.Timeout)
		t.integer("retries", 0, 100, &q.HTTP.Retries)
		t.unknown("")
	}
	if t := root.sub("lifecycle"); t != nil {
		t.durationMin("start_timeout", MinTimeout, &q.Lifecycle.StartTimeout)
		t.durationMin("stop_timeout", MinTimeout, &q.Lifecycle.StopTimeout)
		t.unknown("")
	}
	if t := root.sub("jobs"); t != nil {
		t.durationMin("retention", MinRetention, &q.Jobs.Retention)
		t.integer("max_jobs", 1, 10_000_000, &q.Jobs.MaxJobs)
		t.unknown("")
	}
	if t := root.sub("limits"); t != nil {
		parseLimits(t, &q.Limits)
	}
	if t := root.sub("auth"); t != nil {
		t.str("secret_file", &q.Auth.SecretFile)
		t.boolean("insecure", &q.Auth.Insecure)
		t.boolean("learn_hives", &q.Auth.LearnHives)
		t.match("standalone_hive", aliasRE, "a valid hive id (letters, digits, '.', '_', '-')", &q.Auth.StandaloneHive)
		t.unknown("")
		if q.Auth.Insecure && q.Auth.SecretFile != "" {
			doc.fail("auth.insecure", "keys \"auth.insecure\" and \"auth.secret_file\" contradict each other; set one")
		}
	}
	root.unknown("")
	if err := doc.err(); err != nil {
		return nil, err
	}
	return q, nil
}

// LoadQueen reads and parses the queen.toml at path. Relative file paths in
// it (hives_conf, hive_binary, ssh.identity_file, ssh.known_hosts) are
// resolved against the directory of path, and a leading "~/" against the
// current user's home directory.
func LoadQueen(path string) (*Queen, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read queen config: %w", err)
	}
	q, err := ParseQueen(data, path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&q.HivesConf, &q.HiveBinary, &q.SSH.IdentityFile, &q.SSH.KnownHosts, &q.Auth.SecretFile} {
		*p = resolveLocal(dir, *p)
	}
	return q, nil
}

func resolveLocal(dir, p string) string {
	if p == "" {
		return p
	}
	if strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[2:])
		}
		return p
	}
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", s)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: invalid host", s)
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	return nil
}
