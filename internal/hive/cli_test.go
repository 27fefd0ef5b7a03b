package hive

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/catalog"
)

// isolate points $HOME at a fresh directory and clears HF_ENDPOINT.
func isolate(t *testing.T) string {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("HF_ENDPOINT", "")
	return home
}

func writeHiveTOML(t *testing.T, home, content string) string {
	t.Helper()
	p := filepath.Join(home, ".config", "rbee", "hive.toml")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseFlagsDefaults(t *testing.T) {
	home := isolate(t)
	cfg, version, err := ParseFlags(nil, &bytes.Buffer{})
	if err != nil || version {
		t.Fatal(err, version)
	}
	host, _ := os.Hostname()
	if cfg.Port != 9000 || cfg.ListenHost != "0.0.0.0" || cfg.WorkerPortMin != 9100 || cfg.WorkerPortMax != 9199 ||
		cfg.GPUs != 0 || cfg.HeartbeatInterval != 10*time.Second || cfg.HFEndpoint != catalog.DefaultEndpoint ||
		cfg.HiveID != host || cfg.DataDir != filepath.Join(home, ".local", "share", "rbee") || cfg.QueenURL != "" || cfg.WorkerBinary == "" {
		t.Fatalf("defaults = %+v", cfg)
	}
	t.Setenv("HF_ENDPOINT", "http://hub:8080")
	if cfg, _, _ = ParseFlags(nil, &bytes.Buffer{}); cfg.HFEndpoint != "http://hub:8080" {
		t.Fatalf("HF_ENDPOINT ignored: %s", cfg.HFEndpoint)
	}
}

func TestParseFlagsPrecedence(t *testing.T) {
	home := isolate(t)
	t.Setenv("HF_ENDPOINT", "http://env-hub:1")
	writeHiveTOML(t, home, `
hive_id = "hive-file"
port = 9001
queen_url = "http://queen:8500"
advertise_url = "http://hive-file:9001"
data_dir = "/var/lib/rbee-file"
worker_ports = "9300-9310"
gpus = 3
heartbeat_interval = "2s"
hf_endpoint = "http://file-hub:2"
worker_binary = "/opt/w"
`)
	cfg, _, err := ParseFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{HiveID: "hive-file", Port: 9001, ListenHost: "0.0.0.0", QueenURL: "http://queen:8500", AdvertiseURL: "http://hive-file:9001",
		DataDir: "/var/lib/rbee-file", WorkerPortMin: 9300, WorkerPortMax: 9310, GPUs: 3, HeartbeatInterval: 2 * time.Second,
		HFEndpoint: "http://file-hub:2", WorkerBinary: "/opt/w", SpawnTimeout: DefaultSpawnTimeout}
	if cfg.Logf != nil || !sameConfig(cfg, want) {
		t.Fatalf("from file:\n got %+v\nwant %+v", cfg, want)
	}
	cfg, _, err = ParseFlags([]string{"--hive-id", "hive-flag", "--port", "9002", "--gpus", "0", "--worker-ports", "9400-9401",
		"--heartbeat-interval", "1500ms", "--hf-endpoint", "http://flag-hub:3", "--queen-url", "http://q2:8500", "--data-dir", "/d",
		"--advertise-url", "http://a:9002", "--worker-binary", "/w2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want = Config{HiveID: "hive-flag", Port: 9002, ListenHost: "0.0.0.0", QueenURL: "http://q2:8500", AdvertiseURL: "http://a:9002",
		DataDir: "/d", WorkerPortMin: 9400, WorkerPortMax: 9401, GPUs: 0, HeartbeatInterval: 1500 * time.Millisecond,
		HFEndpoint: "http://flag-hub:3", WorkerBinary: "/w2", SpawnTimeout: DefaultSpawnTimeout}
	if !sameConfig(cfg, want) {
		t.Fatalf("flags over file:\n got %+v\nwant %+v", cfg, want)
	}
}

func sameConfig(a, b Config) bool {
	a.Logf, b.Logf = nil, nil
	return a.HiveID == b.HiveID && a.Port == b.Port && a.ListenHost == b.ListenHost && a.QueenURL == b.QueenURL &&
		a.AdvertiseURL == b.AdvertiseURL && a.DataDir == b.DataDir && a.WorkerPortMin == b.WorkerPortMin &&
		a.WorkerPortMax == b.WorkerPortMax && a.GPUs == b.GPUs && a.HeartbeatInterval == b.HeartbeatInterval &&
		a.HFEndpoint == b.HFEndpoint && a.WorkerBinary == b.WorkerBinary && a.SpawnTimeout == b.SpawnTimeout
}

func TestParseFlagsExplicitConfig(t *testing.T) {
	home := isolate(t)
	p := filepath.Join(home, "other.toml")
	_ = os.WriteFile(p, []byte("gpus = 5\n"), 0o644)
	cfg, _, err := ParseFlags([]string{"--config", p}, &bytes.Buffer{})
	if err != nil || cfg.GPUs != 5 {
		t.Fatalf("cfg = %+v, %v", cfg, err)
	}
}

func TestParseFlagsBad(t *testing.T) {
	cases := []struct {
		name string
		args []string
		toml string
		want string
	}{
		{"unknown flag", []string{"--colour", "red"}, "", "flag provided but not defined: -colour"},
		{"extra argument", []string{"serve"}, "", `unexpected argument "serve"`},
		{"port range", []string{"--port", "70000"}, "", "--port 70000 out of range"},
		{"port not a number", []string{"--port", "x"}, "", `invalid value "x" for flag -port`},
		{"gpus negative", []string{"--gpus", "-1"}, "", "--gpus -1 out of range"},
		{"gpus too many", []string{"--gpus", "65"}, "", "--gpus 65 out of range"},
		{"worker ports reversed", []string{"--worker-ports", "9200-9100"}, "", "--worker-ports: invalid port range"},
		{"worker ports garbage", []string{"--worker-ports", "lots"}, "", "--worker-ports: invalid port range"},
		{"heartbeat zero", []string{"--heartbeat-interval", "0s"}, "", "--heartbeat-interval must be positive"},
		{"heartbeat garbage", []string{"--heartbeat-interval", "soon"}, "", `invalid value "soon" for flag -heartbeat-interval`},
		{"spawn timeout", []string{"--spawn-timeout", "-1s"}, "", "--spawn-timeout must be positive"},
		{"bad queen url", []string{"--queen-url", "queen:8500"}, "", `invalid queen url "queen:8500"`},
		{"bad hf endpoint", []string{"--hf-endpoint", "ftp://x"}, "", "invalid hf endpoint"},
		{"bad hive id", []string{"--hive-id", "a/b"}, "", `invalid hive id "a/b"`},
		{"missing --config file", []string{"--config", "/nonexistent/hive.toml"}, "", "read hive config"},
		{"unknown key in hive.toml", nil, "colour = \"red\"\n", "colour"},
		{"bad type in hive.toml", nil, "gpus = \"two\"\n", "gpus"},
		{"bad duration in hive.toml", nil, "heartbeat_interval = \"soon\"\n", "heartbeat_interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := isolate(t)
			if tc.toml != "" {
				writeHiveTOML(t, home, tc.toml)
			}
			var stderr bytes.Buffer
			_, _, err := ParseFlags(tc.args, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
				t.Fatalf("err = %v (stderr %q), want %q", err, stderr.String(), tc.want)
			}
			var out bytes.Buffer
			stderr.Reset()
			if code := Main(tc.args, &out, &stderr); code != ExitUsage {
				t.Fatalf("Main exit = %d, want %d (stderr %s)", code, ExitUsage, stderr.String())
			}
		})
	}
}

func TestMainVersion(t *testing.T) {
	isolate(t)
	var out, errb bytes.Buffer
	if code := Main([]string{"--version"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit = %d, stderr %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "rbee-hive ") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("version output %q", out.String())
	}
}
