// Package process runs the four rbee programs as real processes on
// 127.0.0.1, without Docker: queen, one hive (which spawns a real worker
// child) and an in-process model hub. It proves the whole protocol works
// end to end before any container is involved.
//
//	go test ./xtask/tests/process/
package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

const (
	model      = "rbee/tiny-ngram:model.bin"
	hiveID     = "hive-1"
	heartbeat  = 200 * time.Millisecond
	staleAfter = 1500 * time.Millisecond
)

// system is one queen, one hive and a hub on loopback.
type system struct {
	queen    *client.Client
	queenURL string
	hive     *proc
	history  checks.History
}

func startSystem(t *testing.T) *system {
	t.Helper()
	dir := t.TempDir()
	hub := httptest.NewServer(modelhub.New(modelhub.Options{}))
	t.Cleanup(hub.Close)

	qport, hport := freePort(t), freePort(t)
	lo, hi := freePortRange(t, 8)
	queenURL := fmt.Sprintf("http://127.0.0.1:%d", qport)
	hivesConf := filepath.Join(dir, "hives.conf")
	write(t, hivesConf, fmt.Sprintf(`[[hive]]
alias      = %q
hostname   = "127.0.0.1"
ssh_port   = 22
ssh_user   = "rbee"
hive_port  = %d
auto_start = false
`, hiveID, hport))
	queenToml := filepath.Join(dir, "queen.toml")
	write(t, queenToml, fmt.Sprintf(`listen      = "127.0.0.1:%d"
public_url  = %q
hives_conf  = "hives.conf"
hive_binary = %q

[heartbeat]
stale_after = %q

[http]
timeout = "3s"
retries = 2

[auth]
secret_file = "cluster.key"
`, qport, queenURL, bin("rbee-hive"), staleAfter.String()))
	// The cluster secret: queen and hive (and, through the hive, its
	// worker) sign and check with it, as a real deployment does.
	secret := filepath.Join(dir, "cluster.key")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	queen := start(t, "queen-rbee", nil, "--config", queenToml)
	awaitHTTP(t, queen, queenURL+"/health", 10*time.Second)
	home := filepath.Join(dir, "home")
	hive := start(t, "rbee-hive", []string{"HOME=" + home},
		"--port", fmt.Sprint(hport), "--listen-host", "127.0.0.1", "--hive-id", hiveID,
		"--queen-url", queenURL, "--advertise-url", fmt.Sprintf("http://127.0.0.1:%d", hport),
		"--data-dir", filepath.Join(dir, "data"), "--worker-ports", fmt.Sprintf("%d-%d", lo, hi),
		"--heartbeat-interval", heartbeat.String(), "--hf-endpoint", hub.URL,
		"--worker-binary", bin("llm-worker-rbee"), "--secret-file", secret)
	awaitHTTP(t, hive, fmt.Sprintf("http://127.0.0.1:%d/health", hport), 10*time.Second)
	return &system{queen: client.New(queenURL), queenURL: queenURL, hive: hive}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *system) run(ctx context.Context, t *testing.T, req api.JobRequest) client.Outcome {
	t.Helper()
	out, err := s.history.Run(ctx, s.queen, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Operation, err)
	}
	return out
}

func (s *system) mustSucceed(ctx context.Context, t *testing.T, req api.JobRequest) client.Outcome {
	t.Helper()
	out := s.run(ctx, t, req)
	if out.Kind != sse.Done {
		t.Fatalf("%s ended %s", req.Operation, out.Terminator())
	}
	return out
}

func (s *system) spawn(ctx context.Context, t *testing.T) api.WorkerProcess {
	t.Helper()
	out := s.mustSucceed(ctx, t, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hiveID, Model: model, Device: "cpu:0"})
	w, err := checks.Result[api.WorkerProcess](out)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestFlowDownloadSpawnInferStaleCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startSystem(t)

	// The hive's heartbeat registers it.
	if err := checks.AwaitHiveState(ctx, s.queen, hiveID, api.HiveOnline, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// Spawning before the model is there names the fix.
	out := s.run(ctx, t, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hiveID, Model: model, Device: "cpu:0"})
	if out.Kind != sse.Error || !strings.Contains(out.Error, "run model_download first") {
		t.Fatalf("spawn without model ended %s", out.Terminator())
	}

	s.mustSucceed(ctx, t, api.JobRequest{Operation: api.OpModelDownload, HiveID: hiveID, Model: model})
	w := s.spawn(ctx, t)
	if w.PID <= 0 || w.Port <= 0 || w.Device != "cpu:0" {
		t.Fatalf("spawn result %+v", w)
	}
	if _, err := checks.AwaitWorker(ctx, s.queen, w.WorkerID, 3*time.Second, "fresh", checks.Fresh); err != nil {
		t.Fatal(err)
	}

	// infer streams tokens through the queen; same seed, same tokens.
	seed := uint64(42)
	temp := 0.8
	infer := api.JobRequest{Operation: api.OpInfer, Model: model, Prompt: "Alice was ", MaxTokens: 40, Seed: &seed, Temperature: &temp}
	first := s.mustSucceed(ctx, t, infer)
	text1, err := client.Tokens(first)
	if err != nil || len([]rune(text1)) == 0 {
		t.Fatalf("tokens %q %v", text1, err)
	}
	second := s.mustSucceed(ctx, t, infer)
	if text2, _ := client.Tokens(second); text2 != text1 {
		t.Fatalf("same seed gave %q then %q", text1, text2)
	}

	// DELETE of a running job reaches the worker and ends [CANCELLED].
	long := api.JobRequest{Operation: api.OpInfer, Model: model, Prompt: "The ", MaxTokens: 2048, Seed: &seed, Temperature: &temp}
	acc, err := s.queen.Submit(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan client.Outcome, 1)
	go func() {
		o, _ := s.queen.Follow(ctx, acc.JobID, 0, nil)
		got <- o
	}()
	if err := checks.Await(ctx, 5*time.Second, "first token of the long job", func(ctx context.Context) (bool, string, error) {
		st, err := s.queen.Job(ctx, acc.JobID)
		return err == nil && st.State == api.StateRunning, fmt.Sprint(st.State), err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.queen.Cancel(ctx, acc.JobID); err != nil {
		t.Fatal(err)
	}
	if o := <-got; o.Kind != sse.Cancelled {
		t.Fatalf("cancelled job ended %s", o.Terminator())
	}
	if st, _ := s.queen.Job(ctx, acc.JobID); st.State != api.StateCancelled {
		t.Fatalf("cancelled job state %s", st.State)
	}

	// A worker killed with SIGKILL turns stale within stale_after plus a beat.
	if err := syscall.Kill(w.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d: %v", w.PID, err)
	}
	if _, err := checks.AwaitWorker(ctx, s.queen, w.WorkerID, staleAfter+4*heartbeat, "stale", checks.Stale); err != nil {
		t.Fatal(err)
	}
	out = s.run(ctx, t, infer)
	if out.Kind != sse.Error || !strings.Contains(out.Error, "no ready worker for model") {
		t.Fatalf("infer with only a stale worker ended %s", out.Terminator())
	}
	if err := s.history.CheckNothingLost(ctx, s.queen); err != nil {
		t.Fatal(err)
	}
}

func TestKeeperFlowAndExitCodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startSystem(t)
	if err := checks.AwaitHiveState(ctx, s.queen, hiveID, api.HiveOnline, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args      []string
		code      int
		stdoutHas string
		stderrHas string
	}{
		{[]string{"model", "get", "--hive", hiveID, model}, 1, "", "not"},
		{[]string{"model", "download", "--hive", hiveID, model}, 0, "", ""},
		{[]string{"model", "list", "--hive", hiveID}, 0, model, ""},
		{[]string{"worker", "spawn", "--hive", hiveID, "--model", model, "--device", "cpu:0"}, 0, "worker_id", ""},
		{[]string{"worker", "spawn", "--hive", hiveID, "--model", model, "--device", "gpu:7"}, 1, "", "gpu:7"},
		{[]string{"bogus-command"}, 2, "", "bogus-command"},
		{[]string{"infer", "--max-tokens", "0", "--model", model, "hi"}, 2, "", "max-tokens"},
	}
	for _, st := range steps {
		code, stdout, stderr := keeper(ctx, t, s.queenURL, st.args...)
		if code != st.code || !strings.Contains(stdout, st.stdoutHas) || !strings.Contains(stderr, st.stderrHas) {
			t.Fatalf("rbee-keeper %s: exit %d (want %d)\nstdout: %s\nstderr: %s", strings.Join(st.args, " "), code, st.code, stdout, stderr)
		}
	}
	// The spawned worker registers, then infer prints tokens and exits 0,
	// and the same seed prints the same tokens.
	if err := checks.Await(ctx, 5*time.Second, "a fresh worker", func(ctx context.Context) (bool, string, error) {
		ws, err := s.queen.Workers(ctx)
		for _, w := range ws {
			if !w.Stale && w.Model == model {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d workers", len(ws)), err
	}); err != nil {
		t.Fatal(err)
	}
	args := []string{"infer", "--model", model, "--max-tokens", "30", "--seed", "7", "--temperature", "0.7", "Down the rabbit"}
	code, out1, stderr := keeper(ctx, t, s.queenURL, args...)
	if code != 0 || strings.TrimSpace(out1) == "" {
		t.Fatalf("infer: exit %d, stdout %q, stderr %s", code, out1, stderr)
	}
	if _, out2, _ := keeper(ctx, t, s.queenURL, args...); out2 != out1 {
		t.Fatalf("same seed printed %q then %q", out1, out2)
	}
	// Ctrl-C cancels the job on the queen and exits 130. The first token
	// on stdout shows the job is streaming (and the handler installed).
	cmd := keeperCmd(ctx, s.queenURL, "infer", "--model", model, "--max-tokens", "2048", "long one")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdout.Read(make([]byte, 1)); err != nil {
		t.Fatalf("keeper printed no token: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	_ = cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 130 {
		t.Fatalf("keeper after Ctrl-C: %v, want exit 130", err)
	}
}
