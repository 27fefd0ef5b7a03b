package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testID = "rbee/tiny:model.bin"

// hub is a test model hub serving one file with configurable misbehaviour.
type hub struct {
	t    *testing.T
	data []byte

	mu        sync.Mutex
	ranges    []string // Range header of every request
	checksum  string   // X-Checksum-Sha256 to send ("" = real, "-" = none)
	etag      string   // ETag to send ("" = none)
	noRange   bool     // ignore Range, always 200
	truncate  int      // when > 0: announce the full length, send only this many bytes, then drop
	block     chan struct{}
	blockAt   int           // with block: send this many bytes, flush, then wait on block
	reachedAt chan struct{} // closed when blockAt bytes were sent
	requests  atomic.Int32
}

func newHub(t *testing.T, size int) (*hub, *httptest.Server) {
	h := &hub{t: t, data: make([]byte, size)}
	for i := range h.data {
		h.data[i] = byte(i*7 + i/251)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hub) sum() string {
	s := sha256.Sum256(h.data)
	return hex.EncodeToString(s[:])
}

func (h *hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	if r.URL.Path != "/rbee/tiny/resolve/main/model.bin" {
		http.NotFound(w, r)
		return
	}
	h.mu.Lock()
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	checksum, etag, noRange, truncate := h.checksum, h.etag, h.noRange, h.truncate
	block, blockAt, reached := h.block, h.blockAt, h.reachedAt
	h.mu.Unlock()
	switch checksum {
	case "":
		w.Header().Set("X-Checksum-Sha256", h.sum())
	case "-":
	default:
		w.Header().Set("X-Checksum-Sha256", checksum)
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	start := 0
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !noRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(h.data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(h.data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(h.data)-1, len(h.data)))
	}
	body := h.data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if truncate > 0 && truncate < len(body) {
		_, _ = w.Write(body[:truncate])
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	if block != nil && blockAt < len(body) {
		_, _ = w.Write(body[:blockAt])
		w.(http.Flusher).Flush()
		close(reached)
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
		body = body[blockAt:]
	}
	_, _ = w.Write(body)
}

func newCat(t *testing.T, endpoint string) *Catalog {
	t.Helper()
	c, err := New(t.TempDir(), Options{Endpoint: endpoint, IdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertNotListed(t *testing.T, c *Catalog) {
	t.Helper()
	ms, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 0 {
		t.Fatalf("catalog lists %v, want nothing", ms)
	}
	if _, err := c.Get(testID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v, want ErrNotFound", err)
	}
}

func TestDownloadListGetDelete(t *testing.T) {
	h, srv := newHub(t, 300_000)
	c := newCat(t, srv.URL)
	var reports []Progress
	m, err := c.Download(context.Background(), testID, func(p Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != testID || m.Size != int64(len(h.data)) || m.SHA256 != h.sum() {
		t.Fatalf("model = %+v", m)
	}
	if m.Path != filepath.Join(c.Dir(), "rbee--tiny--model.bin", ModelFile) {
		t.Fatalf("path = %s", m.Path)
	}
	b, err := os.ReadFile(m.Path)
	if err != nil || string(b) != string(h.data) {
		t.Fatalf("file content differs (err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(m.Path), PartialFile)); !os.IsNotExist(err) {
		t.Fatalf("partial file still there: %v", err)
	}
	if len(reports) < 2 || !reports[len(reports)-1].Done || reports[len(reports)-1].Bytes != m.Size || reports[0].Total != m.Size {
		t.Fatalf("progress reports = %+v", reports)
	}
	if len(reports) > 13 {
		t.Fatalf("progress not throttled: %d reports", len(reports))
	}
	ms, err := c.List()
	if err != nil || len(ms) != 1 || ms[0].ID != testID || ms[0].SHA256 != m.SHA256 {
		t.Fatalf("List = %+v, %v", ms, err)
	}
	g, err := c.Get(testID)
	if err != nil || g.SHA256 != m.SHA256 {
		t.Fatalf("Get = %+v, %v", g, err)
	}
	// A second download is a no-op.
	before := h.requests.Load()
	if _, err := c.Download(context.Background(), testID, nil); err != nil {
		t.Fatal(err)
	}
	if h.requests.Load() != before {
		t.Fatal("second download hit the hub again")
	}
	d, partial, err := c.Delete(testID)
	if err != nil || partial || d.ID != testID {
		t.Fatalf("Delete = %+v %v %v", d, partial, err)
	}
	assertNotListed(t, c)
	if _, _, err := c.Delete(testID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
}

func TestChecksumSources(t *testing.T) {
	cases := []struct {
		name, checksum, etag string
		wantErr              bool
	}{
		{"x-checksum", "", "", false},
		{"etag-only", "-", "", false}, // etag filled in below
		{"no-checksum-at-all", "-", "", false},
		{"weak-etag-ignored", "-", `W/"` + strings.Repeat("0", 64) + `"`, false},
		{"non-hex-etag-ignored", "-", `"abc"`, false},
		{"x-checksum-wrong", strings.Repeat("a", 64), "", true},
		{"etag-wrong", "-", `"` + strings.Repeat("b", 64) + `"`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := newHub(t, 50_000)
			h.checksum, h.etag = tc.checksum, tc.etag
			if tc.name == "etag-only" {
				h.etag = `"` + strings.ToUpper(h.sum()) + `"`
			}
			c := newCat(t, srv.URL)
			m, err := c.Download(context.Background(), testID, nil)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
					t.Fatalf("err = %v, want checksum mismatch", err)
				}
				assertNotListed(t, c)
				if _, err := os.Stat(filepath.Join(c.Dir(), "rbee--tiny--model.bin")); !os.IsNotExist(err) {
					t.Fatalf("model dir left behind after checksum mismatch: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.SHA256 != h.sum() {
				t.Fatalf("sha = %s, want %s", m.SHA256, h.sum())
			}
		})
	}
}

func TestResumeWithRange(t *testing.T) {
	h, srv := newHub(t, 200_000)
	c := newCat(t, srv.URL)
	h.truncate = 70_000
	_, err := c.Download(context.Background(), testID, nil)
	var de *DownloadError
	if !errors.As(err, &de) || !de.Kept {
		t.Fatalf("err = %v, want a DownloadError keeping the partial file", err)
	}
	assertNotListed(t, c)
	partial := filepath.Join(c.Dir(), "rbee--tiny--model.bin", PartialFile)
	st, err := os.Stat(partial)
	if err != nil || st.Size() == 0 || st.Size() > 70_000 {
		t.Fatalf("partial: %v %v", st, err)
	}
	h.mu.Lock()
	h.truncate = 0
	h.mu.Unlock()
	var first Progress
	got := false
	m, err := c.Download(context.Background(), testID, func(p Progress) {
		if !got {
			first, got = p, true
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256 != h.sum() || m.Size != int64(len(h.data)) {
		t.Fatalf("model = %+v", m)
	}
	if first.Resumed != st.Size() {
		t.Fatalf("first progress %+v, want Resumed=%d", first, st.Size())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ranges) != 2 || h.ranges[0] != "" || h.ranges[1] != fmt.Sprintf("bytes=%d-", st.Size()) {
		t.Fatalf("Range headers = %q", h.ranges)
	}
}

func TestResumeFallbacks(t *testing.T) {
	cases := []struct {
		name     string
		prefill  func(h *hub) []byte
		noRange  bool
		requests int32
	}{
		{"hub-ignores-range-200", func(h *hub) []byte { return h.data[:1000] }, true, 1},
		{"partial-too-long-416", func(h *hub) []byte { return append(append([]byte{}, h.data...), 1, 2, 3) }, false, 2},
		{"partial-garbage-checksum-fails", func(h *hub) []byte { return make([]byte, 500) }, false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := newHub(t, 20_000)
			h.noRange = tc.noRange
			c := newCat(t, srv.URL)
			dir := filepath.Join(c.Dir(), "rbee--tiny--model.bin")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, PartialFile), tc.prefill(h), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := c.Download(context.Background(), testID, nil)
			if tc.name == "partial-garbage-checksum-fails" {
				if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
					t.Fatalf("err = %v", err)
				}
				// The bad partial is gone, so the next try starts clean.
				if m, err = c.Download(context.Background(), testID, nil); err != nil {
					t.Fatal(err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if m.SHA256 != h.sum() {
				t.Fatalf("sha mismatch")
			}
			if tc.name != "partial-garbage-checksum-fails" && h.requests.Load() != tc.requests {
				t.Fatalf("requests = %d, want %d", h.requests.Load(), tc.requests)
			}
		})
	}
}

func TestSizeMismatch(t *testing.T) {
	h, srv := newHub(t, 100_000)
	h.truncate = 10_000
	h.checksum = "-"
	c := newCat(t, srv.URL)
	_, err := c.Download(context.Background(), testID, nil)
	if err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("err = %v", err)
	}
	assertNotListed(t, c)
}

func TestSizeMismatchShortBodyWithoutDrop(t *testing.T) {
	// A hub that announces one size in Content-Range but sends a shorter
	// complete body.
	data := []byte("0123456789")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 5-99/100")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[5:])
	}))
	defer srv.Close()
	c := newCat(t, srv.URL)
	dir := filepath.Join(c.Dir(), "rbee--tiny--model.bin")
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, PartialFile), data[:5], 0o644)
	_, err := c.Download(context.Background(), testID, nil)
	if err == nil || !strings.Contains(err.Error(), "size mismatch: got 10 of 100 bytes") {
		t.Fatalf("err = %v", err)
	}
	assertNotListed(t, c)
}

func TestCancelMidDownload(t *testing.T) {
	h, srv := newHub(t, 100_000)
	h.block, h.blockAt, h.reachedAt = make(chan struct{}), 30_000, make(chan struct{})
	c := newCat(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Download(ctx, testID, nil)
		errc <- err
	}()
	select {
	case <-h.reachedAt:
	case <-time.After(10 * time.Second):
		t.Fatal("hub never sent the first part")
	}
	partial := filepath.Join(c.Dir(), "rbee--tiny--model.bin", PartialFile)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(partial); err == nil && st.Size() == 30_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("partial never reached 30000 bytes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("download did not stop after cancel")
	}
	close(h.block)
	assertNotListed(t, c)
	if st, err := os.Stat(partial); err != nil || st.Size() != 30_000 {
		t.Fatalf("partial after cancel: %v %v", st, err)
	}
	h.mu.Lock()
	h.block = nil
	h.mu.Unlock()
	m, err := c.Download(context.Background(), testID, nil)
	if err != nil || m.SHA256 != h.sum() {
		t.Fatalf("resume after cancel: %+v %v", m, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if last := h.ranges[len(h.ranges)-1]; last != "bytes=30000-" {
		t.Fatalf("resume Range = %q", last)
	}
}

func TestIdleTimeout(t *testing.T) {
	h, srv := newHub(t, 100_000)
	h.block, h.blockAt, h.reachedAt = make(chan struct{}), 1000, make(chan struct{})
	defer close(h.block)
	c, err := New(t.TempDir(), Options{Endpoint: srv.URL, IdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Download(context.Background(), testID, nil)
	if err == nil || !strings.Contains(err.Error(), "no data from the hub") {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentDownloadsSameModel(t *testing.T) {
	h, srv := newHub(t, 500_000)
	c := newCat(t, srv.URL)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = c.Download(context.Background(), testID, nil)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := h.requests.Load(); n != 1 {
		t.Fatalf("hub got %d requests, want 1", n)
	}
	m, err := c.Get(testID)
	if err != nil || m.SHA256 != h.sum() {
		t.Fatalf("Get = %+v %v", m, err)
	}
}

func TestDeleteWhileDownloading(t *testing.T) {
	h, srv := newHub(t, 100_000)
	h.block, h.blockAt, h.reachedAt = make(chan struct{}), 1000, make(chan struct{})
	c := newCat(t, srv.URL)
	done := make(chan error, 1)
	go func() { _, err := c.Download(context.Background(), testID, nil); done <- err }()
	<-h.reachedAt
	if _, _, err := c.Delete(testID); !errors.Is(err, ErrBusy) {
		t.Fatalf("Delete during download: %v, want ErrBusy", err)
	}
	close(h.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDeletePartial(t *testing.T) {
	h, srv := newHub(t, 100_000)
	h.truncate = 70_000
	c := newCat(t, srv.URL)
	if _, err := c.Download(context.Background(), testID, nil); err == nil {
		t.Fatal("want an error")
	}
	m, partial, err := c.Delete(testID)
	if err != nil || !partial || m.ID != testID {
		t.Fatalf("Delete = %+v %v %v", m, partial, err)
	}
}

func TestHubErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/boom/") {
			http.Error(w, "internal trouble", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	c := newCat(t, srv.URL)
	cases := []struct{ id, want string }{
		{"rbee/missing:model.bin", "not found on the hub"},
		{"rbee/boom:model.bin", "500 Internal Server Error internal trouble"},
		{"../etc:passwd", "invalid model id"},
	}
	for _, tc := range cases {
		_, err := c.Download(context.Background(), tc.id, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.id, err, tc.want)
		}
	}
	ents, _ := os.ReadDir(c.Dir())
	if len(ents) != 0 {
		t.Fatalf("leftovers in catalog: %v", ents)
	}
	// Connection refused.
	dead := newCat(t, "http://127.0.0.1:1")
	if _, err := dead.Download(context.Background(), testID, nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
}

func TestListIgnoresForeignAndBroken(t *testing.T) {
	h, srv := newHub(t, 1000)
	_ = h
	c := newCat(t, srv.URL)
	if _, err := c.Download(context.Background(), testID, nil); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll(filepath.Join(c.Dir(), "not-a-model"), 0o755)
	_ = os.MkdirAll(filepath.Join(c.Dir(), "a--b--c"), 0o755)                                          // no metadata
	_ = os.WriteFile(filepath.Join(c.Dir(), "a--b--c", MetadataFile), []byte(`{"id":"x/y:z"}`), 0o644) // wrong id
	ms, err := c.List()
	if err != nil || len(ms) != 1 {
		t.Fatalf("List = %+v %v", ms, err)
	}
	// Truncating model.bin makes the model disappear from the list.
	if err := os.Truncate(ms[0].Path, 10); err != nil {
		t.Fatal(err)
	}
	assertNotListed(t, c)
}

func TestSizeMismatchLongBody(t *testing.T) {
	// Content-Range announces 10 bytes in all, the body carries more.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 5-9/10")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write([]byte(strings.Repeat("x", 20)))
	}))
	defer srv.Close()
	c := newCat(t, srv.URL)
	dir := filepath.Join(c.Dir(), "rbee--tiny--model.bin")
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, PartialFile), []byte("01234"), 0o644)
	_, err := c.Download(context.Background(), testID, nil)
	if err == nil || !strings.Contains(err.Error(), "size mismatch: got more than the 10 bytes") {
		t.Fatalf("err = %v", err)
	}
	assertNotListed(t, c)
	if _, err := os.Stat(filepath.Join(dir, PartialFile)); !os.IsNotExist(err) {
		t.Fatalf("oversized partial kept: %v", err)
	}
}
