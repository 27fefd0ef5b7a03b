// Package modelhub is a Hugging Face style model hub (what HF_ENDPOINT
// points at) for tests and the full-stack Docker topology. It serves
// generated n-gram models (internal/model) at
//
//	GET|HEAD /{org}/{repo}/resolve/main/{file}
//
// with X-Checksum-Sha256 and a strong ETag (the sha256 in quotes, as the
// real hub does for LFS files), Range requests (http.ServeContent), an
// optional bandwidth limit so a download can take seconds (and be
// cancelled or interrupted mid-way), an optional cut-off that aborts
// every non-Range download after N bytes so resume-with-Range can be
// tested deterministically, and an optional list of models whose announced
// sha256 is deliberately not their file's, so checksum verification can be
// tested end to end.
//
// Other endpoints: GET /health → "ok"; GET /api/models → the model list;
// GET /_hub/requests → the requests served so far (for black-box checks
// that a resume really used Range).
//
// Tests use it in-process: httptest.NewServer(modelhub.New(modelhub.Options{})).
// Run its tests with: go test ./xtask/modelhub/
package modelhub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/model"
)

// Spec describes one generated model.
type Spec struct {
	ID    string // "org/repo:file"
	Order int
	// MinSize pads the file with filler up to at least this many bytes
	// (0: no padding), for slow-download tests.
	MinSize int64
}

// Model ids the hub serves by default.
const (
	TinyNgram = "rbee/tiny-ngram:model.bin" // order 3, about 21 KiB
	Ngram4    = "rbee/ngram-4:model.bin"    // order 4, about 46 KiB
	BigNgram  = "rbee/big-ngram:model.bin"  // order 4 padded to 8 MiB
)

// BigSize is the size of BigNgram.
const BigSize = 8 << 20

// DefaultSpecs are the models New serves when Options.Models is nil.
var DefaultSpecs = []Spec{
	{ID: TinyNgram, Order: 3},
	{ID: Ngram4, Order: 4},
	{ID: BigNgram, Order: 4, MinSize: BigSize},
}

// File is one served model file.
type File struct {
	ID     string `json:"id"`
	Path   string `json:"path"` // "/org/repo/resolve/main/file"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Data   []byte `json:"-"`
}

var (
	buildMu    sync.Mutex
	buildCache = map[Spec]*File{}
)

// Build generates (once per process; the output is deterministic) the
// file for spec: a model trained on model.Corpus, named spec.ID.
func Build(spec Spec) (*File, error) {
	org, repo, file, err := splitID(spec.ID)
	if err != nil {
		return nil, err
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if f, ok := buildCache[spec]; ok {
		return f, nil
	}
	m := model.Train(model.Corpus, spec.Order)
	m.Name = spec.ID
	m.Source = model.CorpusName
	data, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if int64(len(data)) < spec.MinSize {
		// Each padding byte adds one byte; the length varint may grow by a
		// byte or two, so pad, measure, and trim.
		m.Padding = spec.MinSize - int64(len(data))
		for {
			if data, err = m.MarshalBinary(); err != nil {
				return nil, err
			}
			over := int64(len(data)) - spec.MinSize
			if over <= 0 || m.Padding == 0 {
				break
			}
			m.Padding -= min(over, m.Padding)
		}
	}
	sum := sha256.Sum256(data)
	f := &File{ID: spec.ID, Path: "/" + org + "/" + repo + "/resolve/main/" + file, Size: int64(len(data)),
		SHA256: hex.EncodeToString(sum[:]), Data: data}
	buildCache[spec] = f
	return f, nil
}

func splitID(id string) (org, repo, file string, err error) {
	or, file, ok := strings.Cut(id, ":")
	org, repo, ok2 := strings.Cut(or, "/")
	if !ok || !ok2 || org == "" || repo == "" || file == "" || strings.ContainsAny(repo+file, "/:") {
		return "", "", "", fmt.Errorf("model id %q: want org/repo:file", id)
	}
	return org, repo, file, nil
}

// Options configure a hub.
type Options struct {
	// Models to serve; nil means DefaultSpecs.
	Models []Spec
	// RateBytesPerSec limits each download's body (0: unlimited).
	RateBytesPerSec int64
	// CutAfterBytes aborts every download that has no Range header after
	// this many body bytes (0: never), to test resuming.
	CutAfterBytes int64
	// WrongSHA256 lists model ids (each one the hub serves) whose
	// X-Checksum-Sha256 and ETag announce WrongSum of the file instead of
	// its sha256; the bytes served stay the file's.
	WrongSHA256 []string
	// Logf receives one line per request (default: discard).
	Logf func(format string, args ...any)
}

// Request is one request the hub served (GET /_hub/requests).
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Range  string `json:"range,omitempty"`
	Status int    `json:"status"`
	Bytes  int64  `json:"bytes"`
	Cut    bool   `json:"cut,omitempty"`
}

// Hub is the model hub's http.Handler.
type Hub struct {
	opts  Options
	files map[string]*File // by path
	list  []*File
	wrong map[string]bool // by model id: announce WrongSum

	mu       sync.Mutex
	reqs     []Request
	inflight int           // file requests begun and not yet recorded
	idle     chan struct{} // closed when inflight drops to 0; nil while 0
}

// settleWait bounds how long Requests waits for requests in progress.
const settleWait = 10 * time.Second

// maxRecorded bounds the request log.
const maxRecorded = 10000

// New builds the models and returns the hub. It panics only if a spec in
// opts.Models is malformed (a programming error in a test).
func New(opts Options) *Hub {
	h, err := NewHub(opts)
	if err != nil {
		panic(err)
	}
	return h
}

// NewHub is New returning an error instead of panicking.
func NewHub(opts Options) (*Hub, error) {
	if opts.Models == nil {
		opts.Models = DefaultSpecs
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	h := &Hub{opts: opts, files: map[string]*File{}}
	for _, s := range opts.Models {
		f, err := Build(s)
		if err != nil {
			return nil, err
		}
		h.files[f.Path] = f
		h.list = append(h.list, f)
	}
	h.wrong = map[string]bool{}
	for _, id := range opts.WrongSHA256 {
		if _, ok := h.File(id); !ok {
			return nil, fmt.Errorf("wrong sha256 for %q: the hub does not serve that model", id)
		}
		h.wrong[id] = true
	}
	return h, nil
}

// WrongSum is the sha256 (hex) the hub announces for f when f's id is in
// Options.WrongSHA256: the sha256 of "wrong:" and f's real sum, so it is
// well-formed, deterministic and never the file's.
func WrongSum(f *File) string {
	s := sha256.Sum256([]byte("wrong:" + f.SHA256))
	return hex.EncodeToString(s[:])
}

// Announced is the sha256 the hub announces for f (its headers).
func (h *Hub) Announced(f *File) string {
	if h.wrong[f.ID] {
		return WrongSum(f)
	}
	return f.SHA256
}

// Files returns the served files.
func (h *Hub) Files() []*File { return h.list }

// File returns the file for a model id.
func (h *Hub) File(id string) (*File, bool) {
	for _, f := range h.list {
		if f.ID == id {
			return f, true
		}
	}
	return nil, false
}

// Requests returns the requests served so far. It first waits, up to 10
// s, for file requests in progress to end: a request is recorded when its
// handler returns, which can be just after its client read the last byte,
// so a client that has its whole response always finds it in the log. A
// request still in progress after the wait is left out.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	idle := h.idle
	h.mu.Unlock()
	if idle != nil {
		t := time.NewTimer(settleWait)
		select {
		case <-idle:
		case <-t.C:
		}
		t.Stop()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.reqs...)
}

// begin counts a file request in progress until its record.
func (h *Hub) begin() {
	h.mu.Lock()
	if h.inflight == 0 {
		h.idle = make(chan struct{})
	}
	h.inflight++
	h.mu.Unlock()
}

// record logs r; ended says r was counted by begin and is no longer in
// progress.
func (h *Hub) record(r Request, ended bool) {
	h.mu.Lock()
	if len(h.reqs) < maxRecorded {
		h.reqs = append(h.reqs, r)
	}
	if ended {
		if h.inflight--; h.inflight == 0 {
			close(h.idle)
			h.idle = nil
		}
	}
	h.mu.Unlock()
	h.opts.Logf("%s %s range=%q -> %d (%d bytes%s)", r.Method, r.Path, r.Range, r.Status, r.Bytes, map[bool]string{true: ", cut", false: ""}[r.Cut])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter, msg string) {
	w.Header().Set("X-Error-Code", "EntryNotFound")
	writeJSON(w, http.StatusNotFound, map[string]string{"error": msg})
}

// ServeHTTP implements http.Handler.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
		return
	case r.URL.Path == "/api/models" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, h.list)
		return
	case r.URL.Path == "/_hub/requests" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, h.Requests())
		return
	}
	if !strings.Contains(r.URL.Path, "/resolve/") {
		notFound(w, fmt.Sprintf("no route for %s", r.URL.Path))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " not allowed"})
		return
	}
	f, ok := h.files[r.URL.Path]
	if !ok {
		h.record(Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Status: http.StatusNotFound}, false)
		notFound(w, fmt.Sprintf("entry not found: %s", r.URL.Path))
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	announced := h.Announced(f)
	hdr.Set("ETag", `"`+announced+`"`)
	hdr.Set("X-Checksum-Sha256", announced)
	hdr.Set("X-Repo-Commit", "main")
	rw := &limitedWriter{ResponseWriter: w, req: r, rate: h.opts.RateBytesPerSec, start: time.Now()}
	if h.opts.CutAfterBytes > 0 && r.Header.Get("Range") == "" && r.Method == http.MethodGet {
		rw.cut = h.opts.CutAfterBytes
	}
	rec := Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")}
	h.begin()
	defer func() {
		rec.Status, rec.Bytes, rec.Cut = rw.status, rw.sent, rw.didCut
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
		h.record(rec, true)
		if rw.didCut {
			// Abort the connection so the client sees a short body.
			panic(http.ErrAbortHandler)
		}
	}()
	http.ServeContent(rw, r, "", time.Time{}, bytes.NewReader(f.Data))
}

// limitedWriter paces body writes to rate bytes per second and stops
// after cut bytes.
type limitedWriter struct {
	http.ResponseWriter
	req    *http.Request
	rate   int64
	cut    int64
	start  time.Time
	sent   int64
	status int
	didCut bool
}

func (w *limitedWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	written := 0
	chunk := len(p)
	if w.rate > 0 {
		chunk = int(max(w.rate/20, 512)) // ~20 writes per second
	}
	for len(p) > 0 {
		n := min(chunk, len(p))
		if w.cut > 0 && w.sent+int64(n) > w.cut {
			n = int(w.cut - w.sent)
			k, _ := w.ResponseWriter.Write(p[:n])
			w.sent += int64(k)
			_ = http.NewResponseController(w.ResponseWriter).Flush()
			w.didCut = true
			return written + k, fmt.Errorf("download cut after %d bytes", w.cut)
		}
		k, err := w.ResponseWriter.Write(p[:n])
		w.sent += int64(k)
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
		if w.rate > 0 {
			_ = http.NewResponseController(w.ResponseWriter).Flush()
			due := w.start.Add(time.Duration(float64(w.sent) / float64(w.rate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-w.req.Context().Done():
					t.Stop()
					return written, w.req.Context().Err()
				}
			}
		}
	}
	return written, nil
}

// ParseBytes parses a byte count such as "1048576", "512k", "2M" or
// "1G" (binary multiples). Empty means 0.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a byte count (like 1048576, 512k, 2M)", s)
	}
	return n * mult, nil
}
