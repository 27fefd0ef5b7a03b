package suite

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

// HiveDataDir is the data directory of the rbee-hive that a hive container
// runs (docker/hive/entrypoint.sh): the catalog is under models/, each
// worker's output in logs/<worker-id>.log.
const HiveDataDir = "/home/rbee/.local/share/rbee"

// SeedModel puts model id (one of modelhub.DefaultSpecs) into hive's
// catalog exactly as a finished model_download leaves it (model.bin plus
// metadata.json in <data-dir>/models/<org--repo--file>/), for topologies
// without a model hub. It returns the catalog entry the hive reports for
// it through q (model_get), so the hive itself has accepted the file.
func SeedModel(t testing.TB, h *integration.Harness, q *client.Client, hive, id string) api.Model {
	t.Helper()
	i := slices.IndexFunc(modelhub.DefaultSpecs, func(s modelhub.Spec) bool { return s.ID == id })
	if i < 0 {
		t.Fatalf("SeedModel: %q is not one of the hub's default models", id)
	}
	f, err := modelhub.Build(modelhub.DefaultSpecs[i])
	if err != nil {
		t.Fatalf("SeedModel %s: %v", id, err)
	}
	org, rest, _ := strings.Cut(id, "/")
	repo, file, _ := strings.Cut(rest, ":")
	dir := HiveDataDir + "/models/" + org + "--" + repo + "--" + file
	meta, err := json.Marshal(api.Model{ID: id, Size: f.Size, SHA256: f.SHA256, Path: dir + "/model.bin", DownloadedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	// The file travels base64-encoded in the environment (exec has no
	// stdin); metadata.json is written last, as the catalog does.
	Sh(t, h, hive, `set -e; mkdir -p "$DIR"; printf %s "$DATA" | base64 -d > "$DIR/model.bin.tmp"; mv "$DIR/model.bin.tmp" "$DIR/model.bin"; printf %s "$META" > "$DIR/metadata.json"`,
		integration.AsUser("rbee"), integration.ExecEnv("DIR="+dir, "DATA="+base64.StdEncoding.EncodeToString(f.Data), "META="+string(meta)))
	got := Result[api.Model](t, time.Minute, q, &checks.History{}, api.JobRequest{Operation: api.OpModelGet, HiveID: hive, Model: id})
	if got.ID != id || got.SHA256 != f.SHA256 || got.Size != f.Size {
		t.Fatalf("model_get %s on %s after seeding: %+v; want sha256 %s, size %d", id, hive, got, f.SHA256, f.Size)
	}
	return got
}

// SpawnWorker starts a worker for model on hive's cpu:0 through q and
// returns once the worker's own heartbeat has registered it, fresh and
// ready, with that hive and model.
func SpawnWorker(t testing.TB, q *client.Client, hist *checks.History, hive, model string) api.WorkerProcess {
	t.Helper()
	wp := Spawn(t, q, hist, hive, model, "cpu:0")
	if wp.WorkerID == "" || wp.PID <= 0 || wp.Model != model {
		t.Fatalf("worker_spawn on %s: result %+v", hive, wp)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	w, err := checks.AwaitWorker(ctx, q, wp.WorkerID, time.Minute, "fresh and ready", func(w api.WorkerInfo) bool { return !w.Stale && w.State == api.WorkerReady })
	if err != nil {
		t.Fatal(err)
	}
	if w.HiveID != hive || w.Model != model || w.URL != wp.URL {
		t.Fatalf("worker %s registered as hive %s, model %s, url %s; the hive spawned it on %s for %s at %s", wp.WorkerID, w.HiveID, w.Model, w.URL, hive, model, wp.URL)
	}
	return wp
}

// WorkerInferences counts the inference requests a worker spawned by hive
// accepted, from the worker's own log on that machine: the receiving end's
// record, to hold against where the queen says it routed jobs.
func WorkerInferences(t testing.TB, h *integration.Harness, hive, workerID string) int {
	t.Helper()
	r := h.MustExec(t, hive, []string{"grep", "-c", `inference [^ ]*: accepted `, HiveDataDir + "/logs/" + workerID + ".log"}, integration.AsUser("rbee"))
	if r.ExitCode > 1 { // 1: no match, a count of 0
		t.Fatalf("counting inferences of %s on %s: exit %d: %s", workerID, hive, r.ExitCode, r.Stderr)
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("counting inferences of %s on %s: %q", workerID, hive, r.Stdout)
	}
	return n
}

// AwaitIdle waits until every worker in ids is fresh and reports ready (not
// busy) in the queen's registry, so that the next pick is decided by the
// scheduler's own bookkeeping alone, not by a busy state a heartbeat
// happened to carry.
func AwaitIdle(ctx context.Context, q *client.Client, ids []string, timeout time.Duration) error {
	return checks.Await(ctx, timeout, fmt.Sprintf("workers %v fresh and ready", ids), func(ctx context.Context) (bool, string, error) {
		ws, err := q.Workers(ctx)
		if err != nil {
			return false, "", err
		}
		var not []string
		for _, id := range ids {
			i := slices.IndexFunc(ws, func(w api.WorkerInfo) bool { return w.WorkerID == id })
			switch {
			case i < 0:
				not = append(not, id+" not registered")
			case ws[i].Stale || ws[i].State != api.WorkerReady:
				not = append(not, fmt.Sprintf("%s %s stale=%v", id, ws[i].State, ws[i].Stale))
			}
		}
		return len(not) == 0, strings.Join(not, ", "), nil
	})
}

// Infer runs one infer job through hist to [DONE] and returns where the
// queen's narration says it ran; it fails the test unless tokens came back.
func Infer(t testing.TB, q *client.Client, hist *checks.History, req api.JobRequest) (client.Outcome, checks.Route) {
	t.Helper()
	if req.Operation == "" {
		req.Operation = api.OpInfer
	}
	if req.MaxTokens == 0 {
		req.MaxTokens = 8
	}
	if req.Prompt == "" {
		req.Prompt = "Alice"
	}
	out := Run(t, 2*time.Minute, q, hist, req)
	return out, Served(t, out)
}

// Served fails the test unless infer job o ended [DONE] with tokens, and
// returns where the queen's narration says it ran (checks.RoutedTo).
func Served(t testing.TB, o client.Outcome) checks.Route {
	t.Helper()
	MustDone(t, o)
	text, err := client.Tokens(o)
	if err != nil || text == "" {
		t.Fatalf("infer job %s: tokens %q, %v", o.JobID, text, err)
	}
	r, err := checks.RoutedTo(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Where the hive container's daemon records its pid and appends its log
// (docker/hive/entrypoint.sh, and the queen's hive_start).
const (
	HivePIDFile = "/home/rbee/.local/state/rbee/rbee-hive.pid"
	hiveLogFile = "/home/rbee/.local/state/rbee/rbee-hive.log"
)

// RestartHiveDaemon restarts the rbee-hive daemon on svc's machine behind
// the queen's back (no hive_stop, no hive_start, so the queen fetches
// nothing): it kills the recorded pid, starts the binary again as the
// container's entrypoint does (reading ~/.config/rbee/hive.toml), and
// returns the new pid once the new daemon answers /health on the machine.
func RestartHiveDaemon(t testing.TB, h *integration.Harness, svc string) int {
	t.Helper()
	Sh(t, h, svc, `set -e; pid=$(cat `+HivePIDFile+`); kill "$pid"; i=0; while kill -0 "$pid" 2>/dev/null; do i=$((i+1)); [ $i -lt 200 ] || { echo "pid $pid still running" >&2; exit 1; }; sleep 0.05; done`, integration.AsUser("rbee"))
	out := Sh(t, h, svc, `cd ~ && nohup ~/.local/bin/rbee-hive >> `+hiveLogFile+` 2>&1 < /dev/null & echo $! > `+HivePIDFile+`; echo $!`,
		integration.AsUser("rbee"), integration.ExecEnv("HOME=/home/rbee", "USER=rbee"))
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("restarting rbee-hive on %s: %q", svc, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = checks.Await(ctx, 30*time.Second, "restarted rbee-hive answering on "+svc, func(ctx context.Context) (bool, string, error) {
		r, err := h.Exec(ctx, svc, []string{"curl", "-fsS", "-m", "2", "http://127.0.0.1:9000/health"})
		if err != nil {
			return false, "", err
		}
		return r.ExitCode == 0, fmt.Sprintf("curl exit %d %s", r.ExitCode, strings.TrimSpace(r.Stderr)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// HiveCapabilities asks svc's hive daemon for GET /capabilities directly,
// from inside its machine: what the hive itself would answer the queen.
func HiveCapabilities(t testing.TB, h *integration.Harness, svc string) api.Capabilities {
	t.Helper()
	var caps api.Capabilities
	out := Sh(t, h, svc, `curl -fsS -m 5 http://127.0.0.1:9000/capabilities`)
	if err := json.Unmarshal([]byte(out), &caps); err != nil {
		t.Fatalf("GET /capabilities on %s: %q: %v", svc, out, err)
	}
	return caps
}

// StartHive brings up the part of the full stack a worker on a hive
// needs: the queen, hive-1 and the model hub (localhost and multi-hive
// have no hub, and worker_spawn needs a downloaded model), with opts
// added. It returns once the queen has seen hive-1's heartbeat.
func StartHive(t *testing.T, opts ...integration.Option) (*integration.Harness, *client.Client) {
	t.Helper()
	all := append([]integration.Option{integration.WithServices("queen", "hive-1", "hub")}, opts...)
	h := integration.Start(t, integration.FullStack, all...)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(t.Context(), q, "hive-1", api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return h, q
}
