package config

import (
	"strings"
	"testing"
	"time"
)

const minQueen = "public_url = \"http://queen:8500\"\nhives_conf = \"h.conf\"\n"

// Durations below their minimum are refused with the key and the minimum
// in the message; the minimum itself is accepted.
func TestDurationMinimums(t *testing.T) {
	for _, tc := range []struct{ table, key, min string }{
		{"heartbeat", "stale_after", "100ms"},
		{"ssh", "connect_timeout", "50ms"},
		{"ssh", "command_timeout", "50ms"},
		{"http", "timeout", "50ms"},
		{"lifecycle", "start_timeout", "50ms"},
		{"lifecycle", "stop_timeout", "50ms"},
		{"jobs", "retention", "1s"},
		{"limits", "infer_timeout", "1s"},
		{"limits", "forward_timeout", "1s"},
	} {
		doc := minQueen + "[" + tc.table + "]\n" + tc.key + " = \"1ns\"\n"
		_, err := ParseQueen([]byte(doc), "queen.toml")
		want := `"` + tc.table + "." + tc.key + `": 1ns is below the minimum of ` + tc.min
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s.%s = 1ns: err = %v; want it to say %s", tc.table, tc.key, err, want)
		}
		doc = minQueen + "[" + tc.table + "]\n" + tc.key + " = \"" + tc.min + "\"\n"
		if _, err := ParseQueen([]byte(doc), "queen.toml"); err != nil {
			t.Errorf("%s.%s at its minimum: %v", tc.table, tc.key, err)
		}
	}
	_, err := ParseHiveLocal([]byte("heartbeat_interval = \"1ns\"\n"), "hive.toml")
	if err == nil || !strings.Contains(err.Error(), `"heartbeat_interval": 1ns is below the minimum of 10ms`) {
		t.Errorf("hive.toml heartbeat_interval = 1ns: %v", err)
	}
	if err := CheckMinDuration("--heartbeat-interval", time.Nanosecond, MinHeartbeatInterval); err == nil ||
		!strings.Contains(err.Error(), "--heartbeat-interval 1ns is below the minimum of 10ms") {
		t.Errorf("CheckMinDuration: %v", err)
	}
}

// [limits] is parsed with defaults for what it leaves out; unknown keys
// and out-of-range values are errors.
func TestLimitsTable(t *testing.T) {
	q, err := ParseQueen([]byte(minQueen), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if q.Limits != DefaultQueenLimits() {
		t.Fatalf("defaults: %+v", q.Limits)
	}
	q, err = ParseQueen([]byte(minQueen+"[limits]\nmax_workers = 10\nmax_running_jobs = 3\ninfer_timeout = \"2m\"\nmax_connections = 64\n"), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if q.Limits.MaxWorkers != 10 || q.Limits.MaxRunningJobs != 3 || q.Limits.InferTimeout.D() != 2*time.Minute ||
		q.Limits.MaxConnections != 64 || q.Limits.MaxLearnedHives != 256 {
		t.Fatalf("limits: %+v", q.Limits)
	}
	for doc, want := range map[string]string{
		"[limits]\nmax_wrokers = 1\n":   `unknown key "limits.max_wrokers"`,
		"[limits]\nmax_workers = 0\n":   `"limits.max_workers": 0 is out of range`,
		"[limits]\nmax_job_bytes = 1\n": `"limits.max_job_bytes": 1 is out of range`,
	} {
		if _, err := ParseQueen([]byte(minQueen+doc), "queen.toml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v; want %s", doc, err, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for u, want := range map[string]bool{
		"http://localhost:8500": true, "http://127.0.0.1:1": true, "http://127.3.4.5": true, "http://[::1]:8500": true,
		"http://LOCALHOST.:1": true, "http://a.localhost": true,
		"http://queen:8500": false, "http://172.20.0.10:8500": false, "http://localhostx:1": false,
	} {
		if got := IsLoopbackURL(u); got != want {
			t.Errorf("IsLoopbackURL(%q) = %v, want %v", u, got, want)
		}
	}
}
