package hive

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

// TestModelHubInterop downloads from the project's model hub (the one the
// Docker full stack runs): a download cut off mid-way fails with the
// partial kept, the next one resumes with Range, and the model then runs in
// a real worker.
func TestModelHubInterop(t *testing.T) {
	hub := modelhub.New(modelhub.Options{CutAfterBytes: 1 << 20})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	_, hs, _ := newTestHive(t, func(c *Config) { c.HFEndpoint = srv.URL; c.WorkerBinary = workerBin })
	base := hs.URL

	evs := run(t, base, map[string]any{"operation": "model_download", "model": modelhub.BigNgram})
	if got := term(evs); !strings.HasPrefix(got, "[ERROR] hive-1: downloading "+modelhub.BigNgram) || !strings.Contains(got, "resume") {
		t.Fatalf("cut-off download: %q", got)
	}
	evs = run(t, base, map[string]any{"operation": "model_download", "model": modelhub.BigNgram})
	if term(evs) != api.TermDone {
		t.Fatalf("resumed download: %v", evs)
	}
	f, _ := hub.File(modelhub.BigNgram)
	if m := result[api.Model](t, evs); m.SHA256 != f.SHA256 || m.Size != f.Size {
		t.Fatalf("model %+v, hub file %s %d", m, f.SHA256, f.Size)
	}
	reqs := hub.Requests()
	if len(reqs) != 2 || reqs[0].Range != "" || !reqs[0].Cut || reqs[1].Range != "bytes=1048576-" || reqs[1].Status != 206 {
		t.Fatalf("hub requests = %+v", reqs)
	}
	if workerBin == "" {
		return
	}
	evs = run(t, base, map[string]any{"operation": "worker_spawn", "model": modelhub.BigNgram, "device": "gpu:0"})
	if term(evs) != api.TermDone || result[api.WorkerProcess](t, evs).Model != modelhub.BigNgram {
		t.Fatalf("spawn: %v", evs)
	}
}
