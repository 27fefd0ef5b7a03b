package modelhub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/catalog"
	"github.com/rbee-dev/rbee/internal/model"
	"github.com/rbee-dev/rbee/internal/worker"
)

func get(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// Every default model downloads whole, matches its announced checksum,
// and loads as a real model named after its id.
func TestDefaultModels(t *testing.T) {
	hub := New(Options{})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	wantOrder := map[string]int{TinyNgram: 3, Ngram4: 4, BigNgram: 4}
	for _, f := range hub.Files() {
		t.Run(f.ID, func(t *testing.T) {
			resp, body, err := get(t, http.MethodGet, ts.URL+f.Path, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET: %d %v", resp.StatusCode, err)
			}
			if got := resp.Header.Get("X-Checksum-Sha256"); got != sum(body) || got != f.SHA256 {
				t.Fatalf("checksum header %s, body %s", got, sum(body))
			}
			if resp.Header.Get("ETag") != `"`+f.SHA256+`"` || resp.Header.Get("Accept-Ranges") != "bytes" {
				t.Fatalf("headers %v", resp.Header)
			}
			if resp.ContentLength != f.Size || int64(len(body)) != f.Size {
				t.Fatalf("size %d/%d, want %d", resp.ContentLength, len(body), f.Size)
			}
			m, err := model.Read(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != f.ID || m.Order() != wantOrder[f.ID] {
				t.Fatalf("model name %q order %d", m.Name, m.Order())
			}
		})
	}
	big, _ := hub.File(BigNgram)
	if big.Size != BigSize {
		t.Fatalf("big model is %d bytes, want %d", big.Size, BigSize)
	}
}

func TestHeadRangeAndErrors(t *testing.T) {
	hub := New(Options{})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(TinyNgram)
	url := ts.URL + "/rbee/tiny-ngram/resolve/main/model.bin"

	resp, body, _ := get(t, http.MethodHead, url, nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != strconv.FormatInt(f.Size, 10) || resp.Header.Get("X-Checksum-Sha256") != f.SHA256 {
		t.Fatalf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body, _ = get(t, http.MethodGet, url, map[string]string{"Range": "bytes=100-"})
	if resp.StatusCode != 206 || !bytes.Equal(body, f.Data[100:]) || resp.Header.Get("Content-Range") != "bytes 100-"+strconv.FormatInt(f.Size-1, 10)+"/"+strconv.FormatInt(f.Size, 10) {
		t.Fatalf("Range: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body, _ = get(t, http.MethodGet, url, map[string]string{"Range": "bytes=100-", "If-Range": `"stale"`})
	if resp.StatusCode != 200 || len(body) != int(f.Size) {
		t.Fatalf("If-Range with another ETag must send the whole file: %d", resp.StatusCode)
	}
	resp, body, _ = get(t, http.MethodGet, url, map[string]string{"Range": "bytes=100-", "If-Range": `"` + f.SHA256 + `"`})
	if resp.StatusCode != 206 || !bytes.Equal(body, f.Data[100:]) {
		t.Fatalf("If-Range with the right ETag: %d", resp.StatusCode)
	}

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/rbee/nope/resolve/main/model.bin", 404},
		{http.MethodGet, "/rbee/tiny-ngram/resolve/dev/model.bin", 404},
		{http.MethodGet, "/rbee/tiny-ngram/resolve/main/other.bin", 404},
		{http.MethodGet, "/elsewhere", 404},
		{http.MethodPost, "/rbee/tiny-ngram/resolve/main/model.bin", 405},
		{http.MethodGet, "/health", 200},
		{http.MethodGet, "/api/models", 200},
	} {
		resp, body, _ := get(t, tc.method, ts.URL+tc.path, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.status)
		}
	}
	var files []File
	_, body, _ = get(t, http.MethodGet, ts.URL+"/api/models", nil)
	if err := json.Unmarshal(body, &files); err != nil || len(files) != 3 || files[0].SHA256 == "" {
		t.Fatalf("/api/models: %v %s", err, body)
	}
}

// The bandwidth limit makes a download take at least size/rate (a lower
// bound only, so it cannot flake on a slow machine).
func TestRateLimit(t *testing.T) {
	hub := New(Options{RateBytesPerSec: 64 << 10})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(TinyNgram)
	start := time.Now()
	_, body, err := get(t, http.MethodGet, ts.URL+f.Path, nil)
	took := time.Since(start)
	if err != nil || sum(body) != f.SHA256 {
		t.Fatalf("download: %v", err)
	}
	min := time.Duration(float64(f.Size)/float64(64<<10)*float64(time.Second)) * 8 / 10
	if took < min {
		t.Fatalf("%d bytes at 64 KiB/s took %s, want at least %s", f.Size, took, min)
	}
	t.Logf("%d bytes in %s", f.Size, took)
}

// A slow download stops when the client goes away.
func TestRateLimitedCancel(t *testing.T) {
	hub := New(Options{RateBytesPerSec: 32 << 10})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(BigNgram)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+f.Path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := hub.Requests()
		if len(reqs) == 1 && reqs[0].Bytes < f.Size {
			t.Logf("server stopped after %d of %d bytes", reqs[0].Bytes, f.Size)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler still running 10s after the client left: %+v", reqs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With CutAfterBytes every plain GET breaks after N bytes; a Range
// request for the rest completes the file.
func TestCutAndResume(t *testing.T) {
	hub := New(Options{CutAfterBytes: 5000})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(Ngram4)
	resp, first, err := get(t, http.MethodGet, ts.URL+f.Path, nil)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || len(first) != 5000 || resp.StatusCode != 200 {
		t.Fatalf("cut download: %d bytes, err %v", len(first), err)
	}
	resp, rest, err := get(t, http.MethodGet, ts.URL+f.Path, map[string]string{"Range": "bytes=5000-"})
	if err != nil || resp.StatusCode != 206 {
		t.Fatalf("resume: %d %v", resp.StatusCode, err)
	}
	if sum(append(first, rest...)) != f.SHA256 {
		t.Fatal("resumed file does not match the checksum")
	}
	reqs := hub.Requests()
	if len(reqs) != 2 || !reqs[0].Cut || reqs[0].Bytes != 5000 || reqs[1].Range != "bytes=5000-" || reqs[1].Status != 206 {
		t.Fatalf("request log %+v", reqs)
	}
}

// Requests waits for a request in progress: asked while a paced download
// is still sending, it answers once the download has ended, with the
// whole download in the log. Without the wait the log would be empty
// here; with it, a client that has read its whole response (as in
// TestCutAndResume) can never find its request missing.
func TestRequestsWaitsForRequestsInProgress(t *testing.T) {
	hub := New(Options{RateBytesPerSec: 64 << 10})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(TinyNgram)
	resp, err := http.Get(ts.URL + f.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, resp.Body)
		read <- n
	}()
	reqs := hub.Requests() // the headers are in, the body is still paced
	if len(reqs) != 1 || reqs[0].Bytes != f.Size || reqs[0].Status != http.StatusOK {
		t.Fatalf("request log %+v; want the one whole download of %d bytes", reqs, f.Size)
	}
	select {
	case n := <-read:
		if n != f.Size {
			t.Fatalf("client read %d of %d bytes", n, f.Size)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client had not read the body 10 s after the hub logged it sent")
	}
}

// The hive's catalog downloads from the hub, resumes a cut download, and
// the worker can load the result and report its id.
func TestCatalogInterop(t *testing.T) {
	hub := New(Options{CutAfterBytes: 10000})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	cat, err := catalog.New(t.TempDir(), catalog.Options{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := cat.Download(ctx, Ngram4, nil)
	if err != nil {
		// The first attempt is cut; a second call resumes with Range.
		t.Logf("first download: %v", err)
		m, err = cat.Download(ctx, Ngram4, nil)
	}
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	f, _ := hub.File(Ngram4)
	if m.SHA256 != f.SHA256 || m.Size != f.Size {
		t.Fatalf("catalog entry %+v", m)
	}
	loaded, err := model.Load(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	if id := worker.ResolveModelID("", m.Path, loaded); id != Ngram4 {
		t.Fatalf("worker would report %q", id)
	}
	sawRange := false
	for _, r := range hub.Requests() {
		sawRange = sawRange || strings.HasPrefix(r.Range, "bytes=")
	}
	if !sawRange {
		t.Fatalf("no Range request after a cut: %+v", hub.Requests())
	}
}

// A model listed in WrongSHA256 is served with its own bytes but announces
// another well-formed sha256 (header and ETag), which the hive's catalog
// refuses; the other models are announced correctly.
func TestWrongSHA256(t *testing.T) {
	hub := New(Options{WrongSHA256: []string{Ngram4}})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(Ngram4)
	resp, body, err := get(t, http.MethodGet, ts.URL+f.Path, nil)
	if err != nil || resp.StatusCode != 200 || sum(body) != f.SHA256 {
		t.Fatalf("GET: %d %v, sha256 of the body %s, want the file's %s", resp.StatusCode, err, sum(body), f.SHA256)
	}
	got := resp.Header.Get("X-Checksum-Sha256")
	if got != WrongSum(f) || got == f.SHA256 || len(got) != 64 || resp.Header.Get("ETag") != `"`+got+`"` {
		t.Fatalf("announced %q, ETag %q; want WrongSum %s, not the file's %s", got, resp.Header.Get("ETag"), WrongSum(f), f.SHA256)
	}
	tiny, _ := hub.File(TinyNgram)
	if resp, _, _ := get(t, http.MethodHead, ts.URL+tiny.Path, nil); resp.Header.Get("X-Checksum-Sha256") != tiny.SHA256 {
		t.Fatalf("%s announced %q; want its own %s", TinyNgram, resp.Header.Get("X-Checksum-Sha256"), tiny.SHA256)
	}

	cat, err := catalog.New(t.TempDir(), catalog.Options{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cat.Download(ctx, Ngram4, nil); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("catalog download of a wrongly announced model: %v; want a checksum mismatch", err)
	}
	if _, err := cat.Download(ctx, TinyNgram, nil); err != nil {
		t.Fatalf("catalog download of %s: %v", TinyNgram, err)
	}

	if _, err := NewHub(Options{WrongSHA256: []string{"rbee/nope:model.bin"}}); err == nil || !strings.Contains(err.Error(), "rbee/nope:model.bin") {
		t.Fatalf("an unknown model in WrongSHA256: %v; want an error naming it", err)
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"1000", 1000, true}, {"512k", 512 << 10, true}, {"2M", 2 << 20, true}, {"1G", 1 << 30, true},
		{"-5", 0, false}, {"fast", 0, false}, {"1.5M", 0, false}, {"M", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestBadSpec(t *testing.T) {
	for _, id := range []string{"noorg", "a/b", "a/b:", "a/b/c:f", ":f"} {
		if _, err := NewHub(Options{Models: []Spec{{ID: id, Order: 2}}}); err == nil {
			t.Errorf("spec %q accepted", id)
		}
	}
}

func BenchmarkDownloadBig(b *testing.B) {
	hub := New(Options{})
	ts := httptest.NewServer(hub)
	defer ts.Close()
	f, _ := hub.File(BigNgram)
	for b.Loop() {
		resp, err := http.Get(ts.URL + f.Path)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.SetBytes(f.Size)
}
