package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/sse"
)

func post(t *testing.T, url, ctype string, body []byte) (int, api.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &eb)
	return resp.StatusCode, eb
}

func TestHealthAndBuildInfo(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	if s, err := q.c.Health(context.Background()); err != nil || s != "ok" {
		t.Fatalf("health = %q, %v", s, err)
	}
	bi, err := q.c.BuildInfo(context.Background())
	if err != nil || bi.Version == "" || bi.GoVersion == "" || bi.Commit == "" {
		t.Fatalf("build info = %+v, %v", bi, err)
	}
}

func TestHeartbeatsUpdateRegistry(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	hs, err := q.c.Hives(context.Background())
	if err != nil || len(hs) != 1 || hs[0].State != api.HiveUnknown {
		t.Fatalf("before heartbeat: %+v, %v", hs, err)
	}
	hb, _ := json.Marshal(api.HiveHeartbeat{HiveID: "hive-1", URL: h1.srv.URL, Timestamp: time.Now(), Devices: []api.Device{{ID: "CPU-0", DeviceType: "cpu"}}, Workers: []string{"w-1"}})
	if code, eb := post(t, q.srv.URL+"/v1/hive-heartbeat", "application/json", hb); code != 200 {
		t.Fatalf("hive heartbeat: %d %+v", code, eb)
	}
	wb, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: "w-1", HiveID: "hive-1", Model: "m", Device: "cpu:0", URL: "http://127.0.0.1:9100", State: "ready", Timestamp: time.Now()})
	if code, eb := post(t, q.srv.URL+"/v1/worker-heartbeat", "application/json", wb); code != 200 {
		t.Fatalf("worker heartbeat: %d %+v", code, eb)
	}
	hs, _ = q.c.Hives(context.Background())
	if hs[0].State != api.HiveOnline || hs[0].LastSeen == nil || len(hs[0].Devices) != 1 {
		t.Fatalf("after heartbeat: %+v", hs[0])
	}
	ws, err := q.c.Workers(context.Background())
	if err != nil || len(ws) != 1 || ws[0].WorkerID != "w-1" || ws[0].Stale || ws[0].State != "ready" || ws[0].LastSeen.IsZero() {
		t.Fatalf("workers = %+v, %v", ws, err)
	}
	first := ws[0].LastSeen
	// The same heartbeat again is not newer than the accepted one: 409,
	// and last_seen does not move.
	if code, _ := post(t, q.srv.URL+"/v1/worker-heartbeat", "application/json", wb); code != http.StatusConflict {
		t.Fatalf("repeated heartbeat: %d, want 409", code)
	}
	poll(t, 5*time.Second, func() (bool, string) {
		wb, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: "w-1", HiveID: "hive-1", Model: "m", Device: "cpu:0", URL: "http://127.0.0.1:9100", State: "ready", Timestamp: time.Now()})
		post(t, q.srv.URL+"/v1/worker-heartbeat", "application/json", wb)
		ws, _ = q.c.Workers(context.Background())
		return ws[0].LastSeen.After(first), fmt.Sprintf("last_seen %v, first %v", ws[0].LastSeen, first)
	})
}

// Heartbeats stop → worker stale and never scheduled; hive offline.
func TestStaleness(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, func(c *config.Queen, o *Options) {
		c.Heartbeat.StaleAfter = config.Duration(30 * time.Second)
		o.Now = clock
	})
	_, _ = q.s.reg.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: h1.srv.URL})
	_, _ = q.s.reg.WorkerHeartbeat(api.WorkerHeartbeat{WorkerID: "w-1", HiveID: "hive-1", Model: "m", URL: "http://127.0.0.1:1", State: "ready"})
	advance(31 * time.Second)
	ws, _ := q.c.Workers(context.Background())
	if len(ws) != 1 || !ws[0].Stale {
		t.Fatalf("workers = %+v; want w-1 stale", ws)
	}
	hs, _ := q.c.Hives(context.Background())
	if hs[0].State != api.HiveOffline {
		t.Fatalf("hive state %q; want offline", hs[0].State)
	}
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "hi", MaxTokens: 3})
	wantError(t, out, "no ready worker for model m")
}

func TestBadHeartbeatBodies(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	big := bytes.Repeat([]byte(" "), api.MaxBodyBytes+10)
	cases := []struct {
		name, path, ctype, body string
		code                    int
	}{
		{"malformed", "/v1/worker-heartbeat", "application/json", `{"worker_id":`, 400},
		{"not an object", "/v1/worker-heartbeat", "application/json", `[1,2]`, 400},
		{"unknown field", "/v1/worker-heartbeat", "application/json", `{"worker_id":"w","hive_id":"h","model":"m","url":"http://x:1","state":"ready","extra":1}`, 400},
		{"ill-typed", "/v1/worker-heartbeat", "application/json", `{"worker_id":7,"hive_id":"h","model":"m","url":"http://x:1","state":"ready"}`, 400},
		{"missing worker_id", "/v1/worker-heartbeat", "application/json", `{"hive_id":"h","model":"m","url":"http://x:1","state":"ready"}`, 400},
		{"bad state", "/v1/worker-heartbeat", "application/json", `{"worker_id":"w","hive_id":"h","model":"m","url":"http://x:1","state":"idle"}`, 400},
		{"bad url", "/v1/worker-heartbeat", "application/json", `{"worker_id":"w","hive_id":"h","model":"m","url":"x","state":"ready"}`, 400},
		{"bad timestamp", "/v1/worker-heartbeat", "application/json", `{"worker_id":"w","hive_id":"h","model":"m","url":"http://x:1","state":"ready","timestamp":"yesterday"}`, 400},
		{"trailing data", "/v1/worker-heartbeat", "application/json", `{"worker_id":"w","hive_id":"h","model":"m","url":"http://x:1","state":"ready"} {}`, 400},
		{"no content type", "/v1/worker-heartbeat", "", `{}`, 415},
		{"text content type", "/v1/hive-heartbeat", "text/plain", `{}`, 415},
		{"too large", "/v1/hive-heartbeat", "application/json", string(big), 413},
		{"hive missing id", "/v1/hive-heartbeat", "application/json", `{"url":"http://x:1"}`, 400},
		{"hive devices ill-typed", "/v1/hive-heartbeat", "application/json", `{"hive_id":"h","url":"http://x:1","devices":"cpu"}`, 400},
		{"hive workers ill-typed", "/v1/hive-heartbeat", "application/json", `{"hive_id":"h","url":"http://x:1","workers":[1]}`, 400},
		{"hive unknown field", "/v1/hive-heartbeat", "application/json", `{"hive_id":"h","url":"http://x:1","gpus":2}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, eb := post(t, q.srv.URL+tc.path, tc.ctype, []byte(tc.body))
			if code != tc.code || eb.Error.Message == "" {
				t.Fatalf("status %d %+v; want %d with a message", code, eb, tc.code)
			}
		})
	}
	if ws, _ := q.c.Workers(context.Background()); len(ws) != 0 {
		t.Fatalf("bad heartbeats registered workers: %+v", ws)
	}
}

func TestBadJobRequests(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	big := `{"operation":"status","x":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, ctype, body string
		code              int
		msg               string
	}{
		{"malformed JSON", "application/json", `{"operation":`, 400, "malformed JSON"},
		{"unknown operation", "application/json", `{"operation":"fly"}`, 400, "unknown operation"},
		{"missing operation", "application/json", `{"alias":"hive-1"}`, 400, "operation"},
		{"unknown field", "application/json", `{"operation":"status","alias":"x"}`, 400, "unknown field"},
		{"ill-typed field", "application/json", `{"operation":"hive_install","alias":"hive-1","force":"yes"}`, 400, "force"},
		{"missing field", "application/json", `{"operation":"hive_get"}`, 400, "alias"},
		{"empty field", "application/json", `{"operation":"hive_get","alias":" "}`, 400, "alias"},
		{"unknown hive", "application/json", `{"operation":"hive_get","alias":"hive-9"}`, 400, "unknown hive"},
		{"unknown hive for forward", "application/json", `{"operation":"model_list","hive_id":"hive-9"}`, 400, "unknown hive"},
		{"bad device", "application/json", `{"operation":"worker_spawn","hive_id":"hive-1","model":"a/b:c","device":"tpu:0"}`, 400, "device"},
		{"max_tokens 0", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":0}`, 400, "max_tokens"},
		{"max_tokens too big", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":2049}`, 400, "max_tokens"},
		{"max_tokens negative", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":-1}`, 400, "max_tokens"},
		{"max_tokens missing", "application/json", `{"operation":"infer","model":"m","prompt":"p"}`, 400, "max_tokens"},
		{"max_tokens string", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":"5"}`, 400, "max_tokens"},
		{"negative temperature", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":5,"temperature":-1}`, 400, "temperature"},
		{"negative seed", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":5,"seed":-1}`, 400, "seed"},
		{"too large", "application/json", big, 413, "limit"},
		{"wrong content type", "text/plain", `{"operation":"status"}`, 415, "Content-Type"},
		{"no content type", "", `{"operation":"status"}`, 415, "Content-Type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, eb := post(t, q.srv.URL+"/v1/jobs", tc.ctype, []byte(tc.body))
			if code != tc.code || !strings.Contains(eb.Error.Message, tc.msg) {
				t.Fatalf("status %d %+v; want %d mentioning %q", code, eb, tc.code, tc.msg)
			}
			if code == 400 && eb.Error.Code != api.CodeInvalidRequest {
				t.Fatalf("code %q; want invalid_request", eb.Error.Code)
			}
		})
	}
	if n := len(h1.requests()); n != 0 {
		t.Fatalf("%d bad requests reached the hive", n)
	}
}

func TestUnknownJobAndCancelAfterFinish(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	ctx := context.Background()
	if _, err := q.c.Job(ctx, "job-nope"); !client.IsStatus(err, 404) {
		t.Fatalf("GET unknown job: %v", err)
	}
	if _, err := q.c.Cancel(ctx, "job-nope"); !client.IsStatus(err, 404) {
		t.Fatalf("DELETE unknown job: %v", err)
	}
	if _, err := q.c.Follow(ctx, "job-nope", 0, nil); !client.IsStatus(err, 404) {
		t.Fatalf("stream of unknown job: %v", err)
	}
	out := q.run(t, api.JobRequest{Operation: api.OpStatus})
	wantDone(t, out)
	if _, err := q.c.Cancel(ctx, out.JobID); !client.IsStatus(err, 409) {
		t.Fatalf("cancel after finish: %v; want 409", err)
	}
	st, err := q.c.Job(ctx, out.JobID)
	if err != nil || st.State != api.StateCompleted || st.Operation != "status" || st.FinishedAt == nil {
		t.Fatalf("job status = %+v, %v", st, err)
	}
}

func TestStatusHiveListHiveGet(t *testing.T) {
	h1, h2 := newFakeHive(t, "hive-1"), newFakeHive(t, "hive-2")
	q := newTestQueen(t, []config.Hive{h1.config(), h2.config()}, nil)
	_, _ = q.s.reg.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-2", URL: h2.srv.URL})
	_, _ = q.s.reg.WorkerHeartbeat(api.WorkerHeartbeat{WorkerID: "w-1", HiveID: "hive-2", Model: "m", URL: "http://127.0.0.1:1", State: "ready"})

	out := q.run(t, api.JobRequest{Operation: api.OpStatus})
	wantDone(t, out)
	st, err := client.Results[api.StatusResult](out)
	if err != nil || len(st) != 1 || len(st[0].Hives) != 2 || len(st[0].Workers) != 1 {
		t.Fatalf("status result = %+v, %v", st, err)
	}
	out = q.run(t, api.JobRequest{Operation: api.OpHiveList})
	hl, _ := client.Results[api.HiveListResult](out)
	if len(hl) != 1 || len(hl[0].Hives) != 2 || hl[0].Hives[0].State != api.HiveUnknown || hl[0].Hives[1].State != api.HiveOnline {
		t.Fatalf("hive_list = %+v", hl)
	}
	out = q.run(t, api.JobRequest{Operation: api.OpHiveGet, Alias: "hive-2"})
	hg, _ := client.Results[api.HiveInfo](out)
	if len(hg) != 1 || hg[0].Alias != "hive-2" || hg[0].HivePort != h2.config().HivePort || hg[0].State != api.HiveOnline {
		t.Fatalf("hive_get = %+v", hg)
	}
}

func TestHiveStatusProbe(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	down := config.Hive{Alias: "hive-down", Hostname: "127.0.0.1", HivePort: closedPort(t), SSHPort: 22, SSHUser: "rbee"}
	hung := config.Hive{Alias: "hive-hung", Hostname: "127.0.0.1", HivePort: blackhole(t), SSHPort: 22, SSHUser: "rbee"}
	// A probe is capped at 2 s: hive-1 answers within it, hive-hung costs it.
	q := newTestQueen(t, []config.Hive{h1.config(), down, hung}, nil)
	for _, tc := range []struct{ alias, state, probe string }{
		{"hive-1", api.HiveOnline, "ok"},
		{"hive-down", api.HiveOffline, "connection refused"},
		{"hive-hung", api.HiveUnreachable, "timeout"},
	} {
		start := time.Now()
		out := q.run(t, api.JobRequest{Operation: api.OpHiveStatus, Alias: tc.alias})
		wantDone(t, out)
		rs, _ := client.Results[api.HiveStatus](out)
		if len(rs) != 1 || rs[0].State != tc.state || rs[0].Probe != tc.probe || rs[0].Alias != tc.alias {
			t.Fatalf("%s: %+v; want %s/%s", tc.alias, rs, tc.state, tc.probe)
		}
		if d := time.Since(start); d > 2*time.Second+10*time.Second {
			t.Fatalf("%s: probe took %s (the cap is 2 s)", tc.alias, d)
		}
	}
	if h, _ := q.s.reg.Hive("hive-1"); h.State != api.HiveOnline {
		t.Fatalf("a successful probe did not mark hive-1 online: %q", h.State)
	}
}

func TestRefreshCapabilities(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveRefreshCapabilities, Alias: "hive-1"})
	wantDone(t, out)
	caps, _ := client.Results[api.Capabilities](out)
	if len(caps) != 1 || len(caps[0].Devices) != 2 {
		t.Fatalf("capabilities = %+v", caps)
	}
	hs, _ := q.c.Hives(context.Background())
	if len(hs[0].Devices) != 2 || !hs[0].Devices[1].Simulated {
		t.Fatalf("devices not stored: %+v", hs[0])
	}
}

// Every forwarded operation reaches the hive without hive_id, its events
// come back (narration tagged with the hive) and [DONE] ends the stream.
func TestForwardOperations(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	reqs := []api.JobRequest{
		{Operation: api.OpWorkerSpawn, HiveID: "hive-1", Model: "org/repo:file", Device: "gpu:1"},
		{Operation: api.OpWorkerProcessList, HiveID: "hive-1"},
		{Operation: api.OpWorkerProcessGet, HiveID: "hive-1", WorkerID: "w-1"},
		{Operation: api.OpWorkerProcessDelete, HiveID: "hive-1", WorkerID: "w-1"},
		{Operation: api.OpModelDownload, HiveID: "hive-1", Model: "org/repo:file"},
		{Operation: api.OpModelList, HiveID: "hive-1"},
		{Operation: api.OpModelGet, HiveID: "hive-1", Model: "org/repo:file"},
		{Operation: api.OpModelDelete, HiveID: "hive-1", Model: "org/repo:file"},
	}
	for i, req := range reqs {
		out := q.run(t, req)
		wantDone(t, out)
		var fromHive *api.Narration
		for _, n := range narrations(t, out) {
			if n.Actor == "hive" {
				fromHive = &n
			}
		}
		if fromHive == nil || fromHive.Hive != "hive-1" || fromHive.Message != "doing "+req.Operation {
			t.Fatalf("%s: hive narration = %+v", req.Operation, fromHive)
		}
		res, _ := client.Results[map[string]string](out)
		if len(res) != 1 || res[0]["op"] != req.Operation {
			t.Fatalf("%s: results = %+v", req.Operation, res)
		}
		got := h1.requests()[i]
		want := req
		want.HiveID = ""
		if got != want {
			t.Fatalf("hive got %+v; want %+v", got, want)
		}
	}
}

func TestForwardHiveError(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	h1.on(api.OpWorkerSpawn, func(ctx context.Context, j *jobs.Job) error {
		return errors.New("model org/repo:file is not on hive-1; run model_download first")
	})
	h1.on(api.OpModelList, func(ctx context.Context, j *jobs.Job) error { return jobs.ErrCancelled })
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: "hive-1", Model: "org/repo:file", Device: "cpu:0"})
	wantError(t, out, "hive-1: model org/repo:file is not on hive-1; run model_download first")
	st, _ := q.c.Job(context.Background(), out.JobID)
	if st.State != api.StateFailed {
		t.Fatalf("state %q; want failed", st.State)
	}
	out = q.run(t, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	if out.Kind != sse.Cancelled {
		t.Fatalf("hive [CANCELLED] became %s", out.Terminator())
	}
}

// A hive that already names itself in its error is named once, not twice.
func TestForwardHiveErrorNamesHiveOnce(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	h1.on(api.OpModelDownload, func(ctx context.Context, j *jobs.Job) error {
		return errors.New("hive-1: checksum mismatch")
	})
	h1.on(api.OpModelDelete, func(ctx context.Context, j *jobs.Job) error {
		return errors.New("hive-10: not me")
	})
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: "org/repo:file"})
	if out.Kind != sse.Error || out.Error != "hive-1: checksum mismatch" {
		t.Fatalf("ended %s %q; want [ERROR] \"hive-1: checksum mismatch\"", out.Terminator(), out.Error)
	}
	// Another hive's name is not this hive's: the alias is still prefixed.
	out = q.run(t, api.JobRequest{Operation: api.OpModelDelete, HiveID: "hive-1", Model: "org/repo:file"})
	if out.Kind != sse.Error || out.Error != "hive-1: hive-10: not me" {
		t.Fatalf("ended %s %q; want [ERROR] \"hive-1: hive-10: not me\"", out.Terminator(), out.Error)
	}
}

// A hive that refuses connections: retried (each retry narrated), then
// [ERROR] naming hive, URL and cause.
func TestForwardConnectionRefused(t *testing.T) {
	down := config.Hive{Alias: "hive-1", Hostname: "127.0.0.1", HivePort: closedPort(t), SSHPort: 22, SSHUser: "rbee"}
	q := newTestQueen(t, []config.Hive{down}, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	url := fmt.Sprintf("http://127.0.0.1:%d", down.HivePort)
	wantError(t, out, "hive-1 ("+url+"): connection refused")
	var retries []string
	for _, n := range narrations(t, out) {
		if n.Action == "retry" {
			retries = append(retries, n.Message)
			if n.Hive != "hive-1" {
				t.Fatalf("retry narration without hive: %+v", n)
			}
		}
	}
	want := []string{
		"retrying POST " + url + "/v1/jobs, attempt 2/3: connection refused",
		"retrying POST " + url + "/v1/jobs, attempt 3/3: connection refused",
	}
	if strings.Join(retries, "\n") != strings.Join(want, "\n") {
		t.Fatalf("retry narrations:\n%s\nwant:\n%s", strings.Join(retries, "\n"), strings.Join(want, "\n"))
	}
}

// A hive that accepts but never answers: [ERROR] after the timeout, not retried.
func TestForwardTimeout(t *testing.T) {
	hung := config.Hive{Alias: "hive-1", Hostname: "127.0.0.1", HivePort: blackhole(t), SSHPort: 22, SSHUser: "rbee"}
	q := newTestQueen(t, []config.Hive{hung}, func(c *config.Queen, _ *Options) { c.HTTP.Timeout = config.Duration(hungPeerTimeout) })
	start := time.Now()
	out := q.run(t, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	wantError(t, out, fmt.Sprintf("hive-1 (http://127.0.0.1:%d): timed out after %s", hung.HivePort, hungPeerTimeout))
	if d := time.Since(start); d > hungPeerTimeout+10*time.Second {
		t.Fatalf("took %s", d)
	}
	for _, n := range narrations(t, out) {
		if n.Action == "retry" {
			t.Fatalf("a timeout was retried: %+v", n)
		}
	}
}

// GETs are retried on 503 (idempotent), and the call then succeeds.
func TestRetryGETOn503(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		jobs.WriteJSON(w, 200, api.Capabilities{HiveID: "hive-1", Devices: []api.Device{{ID: "CPU-0"}}})
	}))
	host, port := splitHostPort(t, srv)
	q := newTestQueen(t, []config.Hive{{Alias: "hive-1", Hostname: host, HivePort: port, SSHPort: 22, SSHUser: "rbee"}}, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveRefreshCapabilities, Alias: "hive-1"})
	wantDone(t, out)
	found := false
	for _, n := range narrations(t, out) {
		found = found || (n.Action == "retry" && strings.Contains(n.Message, "attempt 2/3: 503"))
	}
	if !found {
		t.Fatalf("no retry narration: %+v", narrations(t, out))
	}
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// A hive stream that goes silent (no events, no keepalives) ends the job
// with [ERROR] instead of hanging.
func TestForwardIdleStream(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, api.JobAccepted{JobID: "job-silent", SSEURL: "/v1/jobs/job-silent/stream"})
	})
	mux.HandleFunc("GET /v1/jobs/job-silent/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	u := newHTTPServer(t, mux)
	host, port := splitHostPort(t, u)
	// The POST must answer (live peer), then the stream goes silent: one
	// budget for both, wide enough for the first and cheap to wait out.
	q := newTestQueen(t, []config.Hive{{Alias: "hive-1", Hostname: host, HivePort: port, SSHPort: 22, SSHUser: "rbee"}},
		func(c *config.Queen, _ *Options) { c.HTTP.Timeout = config.Duration(mixedTimeout) })
	start := time.Now()
	out := q.run(t, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	wantError(t, out, "hive-1 ("+u+"): lost the job stream of job-silent", fmt.Sprintf("no data for %s", mixedTimeout))
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
}

// DELETE on the queen job cancels the hive job.
func TestForwardCancelReachesHive(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	started := make(chan struct{})
	hiveCancelled := make(chan struct{})
	h1.on(api.OpModelDownload, func(ctx context.Context, j *jobs.Job) error {
		j.Narrate(api.Narration{Actor: "hive", Action: "download", Message: "downloading"})
		close(started)
		<-ctx.Done()
		close(hiveCancelled)
		return ctx.Err()
	})
	q := newTestQueen(t, []config.Hive{h1.config()}, nil)
	ctx := context.Background()
	acc, err := q.c.Submit(ctx, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: "a/b:c"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("hive job never started")
	}
	if _, err := q.c.Cancel(ctx, acc.JobID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hiveCancelled:
	case <-time.After(5 * time.Second):
		t.Fatalf("the hive job was not cancelled; queen log:\n%s", strings.Join(q.log.lines, "\n"))
	}
	out, err := q.c.Follow(ctx, acc.JobID, 0, nil)
	if err != nil || out.Kind != sse.Cancelled {
		t.Fatalf("queen job ended %s, %v; want [CANCELLED]", out.Terminator(), err)
	}
}

func heartbeatWorker(t *testing.T, q *testQueen, w *fakeWorker, hive, model string) {
	t.Helper()
	if _, err := q.s.reg.WorkerHeartbeat(api.WorkerHeartbeat{WorkerID: w.id, HiveID: hive, Model: model, Device: "cpu:0", URL: w.srv.URL, State: "ready"}); err != nil {
		t.Fatal(err)
	}
}

func TestInferStreamsTokens(t *testing.T) {
	w := newFakeWorker(t, "w-1")
	q := newTestQueen(t, nil, func(c *config.Queen, o *Options) { o.WorkerToken = "sekrit" })
	heartbeatWorker(t, q, w, "hive-1", "m")
	temp, seed := 0.5, uint64(42)
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "Alice", MaxTokens: 4, Temperature: &temp, Seed: &seed})
	wantDone(t, out)
	text, err := client.Tokens(out)
	if err != nil || text != " t0 t1 t2 t3" {
		t.Fatalf("tokens = %q, %v", text, err)
	}
	reqs := w.requests()
	if len(reqs) != 1 || reqs[0].Prompt != "Alice" || reqs[0].MaxTokens != 4 || reqs[0].Temperature != 0.5 || reqs[0].Seed != 42 {
		t.Fatalf("worker got %+v", reqs)
	}
	if w.auth[0] != "Bearer sekrit" {
		t.Fatalf("worker auth %q", w.auth[0])
	}
	if q.s.sched.InFlight("w-1") != 0 {
		t.Fatal("in-flight count not released")
	}
}

// Equal load spreads across hives.
func TestInferSpreadsAcrossHives(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	w1, w2 := newFakeWorker(t, "w-1"), newFakeWorker(t, "w-2")
	heartbeatWorker(t, q, w1, "hive-1", "m")
	heartbeatWorker(t, q, w2, "hive-2", "m")
	for i := 0; i < 6; i++ {
		wantDone(t, q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 1}))
	}
	if a, b := len(w1.requests()), len(w2.requests()); a != 3 || b != 3 {
		t.Fatalf("requests per worker: %d/%d; want 3/3", a, b)
	}
	// hive_id pins the hive.
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 1, HiveID: "hive-2"}))
	if len(w2.requests()) != 4 {
		t.Fatal("hive_id did not pin hive-2")
	}
}

func TestInferErrors(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "nope", Prompt: "x", MaxTokens: 1})
	wantError(t, out, "no ready worker for model nope")

	w := newFakeWorker(t, "w-err")
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		j.Emit(api.EventToken, api.Token{T: "a", I: 0})
		return errors.New("sampler exploded")
	}
	heartbeatWorker(t, q, w, "hive-1", "bad")
	out = q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "bad", Prompt: "x", MaxTokens: 1})
	wantError(t, out, "worker w-err ("+w.srv.URL+"): sampler exploded")
}

// A worker that died since its heartbeat refuses; another is tried.
func TestInferRefusedTriesAnother(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	dead := fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))
	_, _ = q.s.reg.WorkerHeartbeat(api.WorkerHeartbeat{WorkerID: "w-dead", HiveID: "hive-0", Model: "m", URL: dead, State: "ready"})
	w := newFakeWorker(t, "w-ok")
	heartbeatWorker(t, q, w, "hive-1", "m")
	for i := 0; i < 2; i++ { // whichever comes first, the job succeeds
		out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 2})
		wantDone(t, out)
	}
	out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 2, HiveID: "hive-0"})
	wantError(t, out, "worker w-dead ("+dead+"): connection refused")
}

func TestInferCancel(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	w := newFakeWorker(t, "w-slow")
	stopped := make(chan struct{})
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		j.Emit(api.EventToken, api.Token{T: "a", I: 0})
		<-ctx.Done()
		close(stopped)
		return ctx.Err()
	}
	mux := http.NewServeMux()
	_ = mux
	heartbeatWorker(t, q, w, "hive-1", "m")
	ctx := context.Background()
	acc, err := q.c.Submit(ctx, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() (bool, string) {
		n := q.s.sched.InFlight("w-slow")
		return n == 1, fmt.Sprintf("in flight %d", n)
	})
	if _, err := q.c.Cancel(ctx, acc.JobID); err != nil {
		t.Fatal(err)
	}
	out, _ := q.c.Follow(ctx, acc.JobID, 0, nil)
	if out.Kind != sse.Cancelled {
		t.Fatalf("ended %s", out.Terminator())
	}
	poll(t, 5*time.Second, func() (bool, string) {
		n := q.s.sched.InFlight("w-slow")
		return n == 0, fmt.Sprintf("in flight %d", n)
	})
	// The fake worker has no DELETE route; it stops when its job engine
	// closes at cleanup. What matters here is the queen's side.
	_ = stopped
}

// POST /v1/shutdown: 200, running jobs end [CANCELLED], Serve returns.
func TestShutdown(t *testing.T) {
	h1 := newFakeHive(t, "hive-1")
	h1.on(api.OpModelDownload, func(ctx context.Context, j *jobs.Job) error { <-ctx.Done(); return ctx.Err() })
	s, err := New(testConfig(), []config.Hive{h1.config()}, Options{Logf: (&logBuf{}).Logf})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), ln) }()
	c := client.New("http://" + ln.Addr().String())
	ctx := context.Background()
	acc, err := c.Submit(ctx, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: "a/b:c"})
	if err != nil {
		t.Fatal(err)
	}
	// Connect the reader before shutting down: ServeStream flushes the
	// headers at once, so a 200 means the reader is attached.
	resp, err := http.Get(c.BaseURL() + acc.SSEURL)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("open stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	outc := make(chan string, 1)
	go func() {
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				outc <- "stream error: " + err.Error()
				return
			}
			if ev.IsTerminator() {
				outc <- ev.Data
				return
			}
		}
	}()
	start := time.Now()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queen did not stop within 10s")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	select {
	case term := <-outc:
		if term != api.TermCancelled {
			t.Fatalf("running job ended %q; want [CANCELLED]", term)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream reader never saw a terminator")
	}
}
