package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/jobs"
)

// A worker that sends more tokens than max_tokens is cut off: the job
// ends [ERROR] naming max_tokens and no extra token reaches the client.
func TestRelayEnforcesMaxTokens(t *testing.T) {
	w := newFakeWorker(t, "w-1")
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		for i := 0; i < 50; i++ {
			j.Emit(api.EventToken, api.Token{T: "x", I: i})
		}
		return nil
	}
	q := newTestQueen(t, nil, nil)
	heartbeatWorker(t, q, w, "hive-1", "m")
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "p", MaxTokens: 3})
	wantError(t, out, "sent more than max_tokens (3) tokens")
	n := 0
	for _, ev := range out.Events {
		if ev.Name == api.EventToken {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d tokens relayed; want exactly max_tokens = 3", n)
	}
}

// An infer whose worker keeps the stream alive with keepalives but never
// ends is failed at the total deadline, not kept running forever.
func TestInferTotalDeadline(t *testing.T) {
	old := jobs.KeepaliveInterval
	jobs.KeepaliveInterval = 50 * time.Millisecond
	t.Cleanup(func() { jobs.KeepaliveInterval = old })
	w := newFakeWorker(t, "w-1")
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		j.Emit(api.EventToken, api.Token{T: "x"})
		<-ctx.Done() // a tarpit: keepalives only
		return ctx.Err()
	}
	q := newTestQueen(t, nil, func(c *config.Queen, o *Options) { c.Limits.InferTimeout = config.Duration(1500 * time.Millisecond) })
	heartbeatWorker(t, q, w, "hive-1", "m")
	start := time.Now()
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "p", MaxTokens: 3})
	wantError(t, out, "infer did not finish within 1.5s", "infer_timeout")
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("ended after %s, before the deadline", took)
	}
}

// At max_running_jobs the queen answers POST /v1/jobs 503 naming the cap.
func TestQueenRunningJobsCap(t *testing.T) {
	w := newFakeWorker(t, "w-1")
	release := make(chan struct{})
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	defer close(release)
	q := newTestQueen(t, nil, func(c *config.Queen, o *Options) { c.Limits.MaxRunningJobs = 1 })
	heartbeatWorker(t, q, w, "hive-1", "m")
	ctx := context.Background()
	if _, err := q.c.Submit(ctx, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "p", MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := q.c.Submit(ctx, api.JobRequest{Operation: api.OpStatus})
	if !client.IsStatus(err, http.StatusServiceUnavailable) || !strings.Contains(err.Error(), "too many jobs running") {
		t.Fatalf("second job: %v; want 503 too many jobs running", err)
	}
}

func postJSON(t *testing.T, url string, v any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(v)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Message
}

// Over HTTP: oversized heartbeat fields are 400 naming the field, control
// characters in an id cannot forge a log line, and a full registry is 503.
func TestHeartbeatBoundsOverHTTP(t *testing.T) {
	q := newTestQueen(t, nil, func(c *config.Queen, o *Options) { c.Limits.MaxWorkers = 2 })
	hb := func(id, model string) api.WorkerHeartbeat {
		return api.WorkerHeartbeat{WorkerID: id, HiveID: "hive-1", Model: model, Device: "cpu:0", URL: "http://hive-1:9100", State: "ready"}
	}
	if code, msg := postJSON(t, q.srv.URL+"/v1/worker-heartbeat", hb("w-1", strings.Repeat("m", 1<<19))); code != 400 || !strings.Contains(msg, `"model"`) {
		t.Fatalf("big model: %d %q; want 400 naming \"model\"", code, msg)
	}
	if code, msg := postJSON(t, q.srv.URL+"/v1/worker-heartbeat", hb("w-1\nqueen-rbee forged", "m")); code != 400 || !strings.Contains(msg, `"worker_id"`) {
		t.Fatalf("newline in id: %d %q; want 400 naming \"worker_id\"", code, msg)
	}
	for _, id := range []string{"w-1", "w-2"} {
		if code, msg := postJSON(t, q.srv.URL+"/v1/worker-heartbeat", hb(id, "m")); code != 200 {
			t.Fatalf("%s: %d %s", id, code, msg)
		}
	}
	if code, msg := postJSON(t, q.srv.URL+"/v1/worker-heartbeat", hb("w-3", "m")); code != 503 || !strings.Contains(msg, "registry is full") {
		t.Fatalf("third worker over a cap of 2: %d %q; want 503 registry is full", code, msg)
	}
	q.log.mu.Lock()
	defer q.log.mu.Unlock()
	for _, l := range q.log.lines {
		if strings.Contains(l, "\n") || strings.HasPrefix(l, "queen-rbee forged") {
			t.Fatalf("log line with a raw newline: %q", l)
		}
	}
}

// A loopback public_url is refused when a hive is on another host, and
// accepted when the whole cluster is on this machine.
func TestPublicURLLoopback(t *testing.T) {
	cfg := testConfig()
	cfg.PublicURL = "http://127.0.0.1:8500"
	_, err := New(cfg, []config.Hive{{Alias: "hive-1", Hostname: "hive-1", HivePort: 9000, SSHPort: 22}}, Options{DialSSH: nil})
	if err == nil || !strings.Contains(err.Error(), `public_url "http://127.0.0.1:8500" is a loopback address`) {
		t.Fatalf("loopback public_url with a remote hive: %v", err)
	}
	s, err := New(cfg, []config.Hive{{Alias: "hive-1", Hostname: "localhost", HivePort: 9000, SSHPort: 22}}, Options{})
	if err != nil {
		t.Fatalf("loopback public_url with a local hive: %v", err)
	}
	_ = s.Close(time.Second)
}

// Key files are checked when the queen starts: a missing or group-readable
// identity and a world-writable known_hosts are refused like OpenSSH does.
func TestKeyFilesCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	identity, _ := writeIdentity(t, dir)
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte("hive-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() error {
		cfg := testConfig()
		cfg.SSH.IdentityFile, cfg.SSH.KnownHosts = identity, known
		s, err := New(cfg, nil, Options{})
		if err == nil {
			_ = s.Close(time.Second)
		}
		return err
	}
	if err := start(); err != nil {
		t.Fatalf("good key files: %v", err)
	}
	for _, tc := range []struct {
		file string
		mode os.FileMode
		want string
	}{
		{identity, 0o640, "identity_file " + identity + " has mode 0640"},
		{identity, 0o604, "has mode 0604"},
		{known, 0o664, "known_hosts " + known + " has mode 0664"},
		{known, 0o646, "has mode 0646"},
	} {
		if err := os.Chmod(tc.file, tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := start(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mode %04o: err = %v; want %q", tc.mode, err, tc.want)
		}
		_ = os.Chmod(identity, 0o600)
		_ = os.Chmod(known, 0o644)
	}
	_ = os.Remove(identity)
	if err := start(); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing identity: %v", err)
	}
}
