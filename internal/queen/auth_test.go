package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/config"
)

func authKey(t *testing.T, fill byte) *auth.Key {
	t.Helper()
	k, err := auth.NewKey(bytes.Repeat([]byte{fill}, auth.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// postSigned posts body to url, signed with k when k is non-nil.
func postSigned(t *testing.T, k *auth.Key, url string, body []byte) (int, api.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if k != nil {
		k.Sign(req, body)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb
}

func TestAuthenticatedQueenRefusesUnsignedAndAcceptsSigned(t *testing.T) {
	k := authKey(t, 1)
	h1 := newFakeHive(t, "hive-1")
	q := newTestQueen(t, []config.Hive{h1.config()}, func(c *config.Queen, o *Options) { o.Key = k })
	hiveURL := h1.srv.URL
	hb := func(ts time.Time, workers ...string) []byte {
		b, _ := json.Marshal(api.HiveHeartbeat{HiveID: "hive-1", URL: hiveURL, Timestamp: ts, Devices: []api.Device{}, Workers: workers})
		return b
	}
	wb := func(url string, ts time.Time) []byte {
		b, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: "w-1", HiveID: "hive-1", Model: "m", Device: "cpu:0", URL: url, State: "ready", Timestamp: ts})
		return b
	}
	now := time.Now()
	if code, eb := postSigned(t, nil, q.srv.URL+"/v1/hive-heartbeat", hb(now, "w-1")); code != 401 || eb.Error.Code != api.CodeUnauthorized {
		t.Fatalf("unsigned hive heartbeat: %d %+v", code, eb)
	}
	if code, _ := postSigned(t, authKey(t, 2), q.srv.URL+"/v1/hive-heartbeat", hb(now, "w-1")); code != 401 {
		t.Fatalf("wrong-key hive heartbeat: %d", code)
	}
	if code, eb := postSigned(t, k, q.srv.URL+"/v1/hive-heartbeat", hb(now, "w-1")); code != 200 {
		t.Fatalf("signed hive heartbeat: %d %+v", code, eb)
	}
	workerURL := strings.Replace(hiveURL, "127.0.0.1:", "127.0.0.1:1", 1) // same host, another port
	if code, _ := postSigned(t, nil, q.srv.URL+"/v1/worker-heartbeat", wb(workerURL, now)); code != 401 {
		t.Fatalf("unsigned worker heartbeat: %d", code)
	}
	if code, eb := postSigned(t, k, q.srv.URL+"/v1/worker-heartbeat", wb(workerURL, now)); code != 200 {
		t.Fatalf("signed worker heartbeat: %d %+v", code, eb)
	}
	if code, eb := postSigned(t, k, q.srv.URL+"/v1/worker-heartbeat", wb("http://rogue.test:9100", now.Add(time.Millisecond))); code != 403 || eb.Error.Code != api.CodeForbidden {
		t.Fatalf("signed URL takeover: %d %+v", code, eb)
	}
	w, _ := q.s.Registry().Worker("w-1")
	if w.URL != workerURL {
		t.Fatalf("worker URL %s after a refused takeover", w.URL)
	}
	if tok := q.s.workerToken(w); tok != k.WorkerToken("hive-1") {
		t.Fatalf("token for a bound worker = %q", tok)
	}
	if tok := q.s.workerToken(api.WorkerInfo{WorkerID: "x", HiveID: "hive-1", URL: "http://rogue.test:9100"}); tok != "" {
		t.Fatalf("token offered to a URL off the hive's host: %q", tok)
	}
	// Shutdown: unsigned refused and nothing happens; signed accepted.
	if code, _ := postSigned(t, nil, q.srv.URL+"/v1/shutdown", nil); code != 401 {
		t.Fatalf("unsigned shutdown: %d", code)
	}
	select {
	case <-q.s.ShutdownRequested():
		t.Fatal("an unsigned shutdown request reached the queen")
	default:
	}
	if code, _ := postSigned(t, k, q.srv.URL+"/v1/shutdown", []byte{}); code != 200 {
		t.Fatalf("signed shutdown: %d", code)
	}
	select {
	case <-q.s.ShutdownRequested():
	case <-time.After(5 * time.Second):
		t.Fatal("signed shutdown did not reach the queen")
	}
}

func TestQueenSignsItsCallsToHives(t *testing.T) {
	k := authKey(t, 1)
	v := auth.NewVerifier(k, auth.VerifierOptions{})
	var mu sync.Mutex
	var verdicts []error
	hive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		_, _ = body.ReadFrom(r.Body)
		_, err := v.Verify(r, body.Bytes())
		mu.Lock()
		verdicts = append(verdicts, err)
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable) // the queen retries: each attempt must be signed anew
	}))
	defer hive.Close()
	q := newTestQueen(t, nil, func(c *config.Queen, o *Options) { o.Key = k })
	c := q.s.hiveClient(hiveTarget{alias: "hive-x", url: hive.URL})
	_, _ = c.Job(context.Background(), "job-1")
	mu.Lock()
	defer mu.Unlock()
	if len(verdicts) < 2 {
		t.Fatalf("hive saw %d attempts, want the retries too", len(verdicts))
	}
	for i, err := range verdicts {
		if err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
}
