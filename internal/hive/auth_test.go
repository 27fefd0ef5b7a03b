package hive

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/client"
)

func TestHiveJobAPIAndShutdownRequireTheSignature(t *testing.T) {
	k, _ := auth.NewKey(bytes.Repeat([]byte{3}, auth.KeySize))
	s, srv, _ := newTestHive(t, func(c *Config) { c.Key = k })
	ctx := context.Background()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/jobs", `{"operation":"worker_process_list"}`},
		{"POST", "/v1/jobs", `{"operation":"worker_spawn","model":"a/b:c","device":"cpu:0"}`},
		{"GET", "/v1/jobs/job-1", ""},
		{"GET", "/v1/jobs/job-1/stream", ""},
		{"DELETE", "/v1/jobs/job-1", ""},
		{"POST", "/v1/shutdown", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("unsigned %s %s: %d, want 401", tc.method, tc.path, resp.StatusCode)
		}
	}
	select {
	case <-s.ShutdownRequested():
		t.Fatal("an unsigned shutdown reached the hive")
	default:
	}
	// The same calls signed work: health and capabilities stay open.
	c := client.New(srv.URL, client.WithKey(k))
	o, err := c.Run(ctx, api.JobRequest{Operation: api.OpWorkerProcessList}, nil)
	if err != nil || o.Terminator() != api.TermDone {
		t.Fatalf("signed worker_process_list: %v, %s", err, o.Terminator())
	}
	if _, err := client.New(srv.URL).Capabilities(ctx); err != nil {
		t.Fatalf("capabilities without a signature: %v", err)
	}
}

func TestHiveRefusesAReadableSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cluster.key")
	if err := auth.GenerateKeyFile(p); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	cfg := testConfig(t)
	cfg.SecretFile = p
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "owner only") {
		t.Fatalf("hive with a world-readable secret: %v", err)
	}
}
