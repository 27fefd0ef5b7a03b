package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

const testToken = "0123456789abcdef0123"

func adminServer(t *testing.T, timeout time.Duration, maxOut int) *httptest.Server {
	t.Helper()
	a, err := newAdmin(testToken, timeout, maxOut)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler())
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, srv *httptest.Server, token, script string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/script", strings.NewReader(script))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func result(t *testing.T, body string) toxic.ScriptResult {
	t.Helper()
	var r toxic.ScriptResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return r
}

// A script runs with its exit code and both streams reported; a failing
// script is an answer, not a transport error.
func TestAdminRunsScript(t *testing.T) {
	srv := adminServer(t, 10*time.Second, 1<<10)
	resp, body := post(t, srv, testToken, "echo out; echo err >&2; exit 3")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, body)
	}
	if r := result(t, body); r.Exit != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Fatalf("got %+v, want exit 3, out, err", r)
	}
	if r := result(t, func() string { _, b := post(t, srv, testToken, "true"); return b }()); r.Exit != 0 {
		t.Fatalf("true: got %+v", r)
	}
}

// Without the token, or with a wrong one, nothing runs: the marker file
// the script would create stays absent (the effect checked where it would
// land, not only the status).
func TestAdminRefusesWithoutToken(t *testing.T) {
	srv := adminServer(t, 10*time.Second, 1<<10)
	marker := filepath.Join(t.TempDir(), "ran")
	for _, tok := range []string{"", "wrong-token-wrong-token", testToken + "x", testToken[:len(testToken)-1]} {
		resp, body := post(t, srv, tok, "touch "+marker)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %q: status %s (%s), want 401", tok, resp.Status, body)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ping", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ping without token: %s, want 401", resp.Status)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a refused request ran its script: %v", err)
	}
	// Positive control: the same script with the token creates it.
	if _, body := post(t, srv, testToken, "touch "+marker); result(t, body).Exit != 0 {
		t.Fatalf("with token: %s", body)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the authorised script did not run: %v", err)
	}
}

// A script past the time limit is stopped and reported (exit -1), and the
// endpoint answers the next one; output past the cap is cut and counted.
func TestAdminBoundsTimeAndOutput(t *testing.T) {
	srv := adminServer(t, 300*time.Millisecond, 100)
	t0 := time.Now()
	_, body := post(t, srv, testToken, "sleep 30")
	r := result(t, body)
	if r.Exit != -1 || !strings.Contains(r.Stderr, "stopped") {
		t.Fatalf("sleep 30: got %+v, want exit -1 and a note", r)
	}
	if d := time.Since(t0); d > 20*time.Second {
		t.Fatalf("sleep 30 was not stopped (took %v)", d)
	}
	_, body = post(t, srv, testToken, "head -c 5000 /dev/zero | tr '\\0' a")
	r = result(t, body)
	if !strings.HasPrefix(r.Stdout, strings.Repeat("a", 100)+"\n[rbee-toxic: 4900 more bytes dropped]") {
		t.Fatalf("capped output: got %q", r.Stdout)
	}
}

// Bad input gets an error naming it: an empty script, a script over
// MaxScript, a token too short to start with.
func TestAdminRejectsBadInput(t *testing.T) {
	srv := adminServer(t, 10*time.Second, 1<<10)
	if resp, body := post(t, srv, testToken, "  \n"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "empty script") {
		t.Errorf("empty script: %s %q", resp.Status, body)
	}
	if resp, body := post(t, srv, testToken, strings.Repeat("#", toxic.MaxScript+1)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized script: %s %q", resp.Status, body)
	}
	if _, err := newAdmin("short", time.Second, 1); err == nil || !strings.Contains(err.Error(), toxic.TokenEnv) {
		t.Errorf("short token: got %v, want an error naming %s", err, toxic.TokenEnv)
	}
}
