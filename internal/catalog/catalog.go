// Package catalog is the hive's model catalog: models downloaded from a
// Hugging Face style hub (HF_ENDPOINT, /{org}/{repo}/resolve/main/{file})
// and kept under <data-dir>/models/<org--repo--file>/ as model.bin plus
// metadata.json (an api.Model).
//
// A download goes to model.bin.partial in the model's directory, is checked
// against the size and sha256 the hub announces, fsynced and renamed into
// place; metadata.json is written last (atomically), so a model is in the
// catalog exactly when its metadata exists and names a file of the recorded
// size. An interrupted or cancelled download leaves the partial file, and
// the next download of the same model resumes it with a Range request.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// File names inside a model directory.
const (
	ModelFile    = "model.bin"
	PartialFile  = "model.bin.partial"
	MetadataFile = "metadata.json"
)

// Defaults for Options.
const (
	DefaultEndpoint         = "https://huggingface.co"
	DefaultIdleTimeout      = 60 * time.Second
	DefaultProgressInterval = time.Second
)

// Errors callers can test with errors.Is.
var (
	// ErrNotFound: the model is not (completely) in the catalog.
	ErrNotFound = errors.New("model not in catalog")
	// ErrBusy: the model is being downloaded right now.
	ErrBusy = errors.New("model is being downloaded")
)

// Options configure a Catalog.
type Options struct {
	// Endpoint is the hub's base URL (HF_ENDPOINT); default huggingface.co.
	Endpoint string
	// Client is used for downloads; default NewHTTPClient().
	Client *http.Client
	// IdleTimeout fails a download when no byte arrived for this long. There
	// is deliberately no total timeout: a big model on a slow link is fine
	// as long as it keeps moving.
	IdleTimeout time.Duration
	// ProgressInterval is the most time between two progress reports
	// (besides one report per 10% of the file).
	ProgressInterval time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// Catalog is a model catalog rooted at <data-dir>/models.
type Catalog struct {
	dir  string
	opts Options

	mu    sync.Mutex
	locks map[string]*modelLock // per model dir name, only while in use
}

// NewHTTPClient returns the download client: bounded connect, TLS and
// response-header waits, no total timeout (see Options.IdleTimeout).
func NewHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          16,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
}

// New opens (creating if needed) the catalog under dataDir/models.
func New(dataDir string, opts Options) (*Catalog, error) {
	if dataDir == "" {
		return nil, errors.New("catalog: empty data dir")
	}
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	opts.Endpoint = strings.TrimRight(opts.Endpoint, "/")
	if opts.Client == nil {
		opts.Client = NewHTTPClient()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = DefaultProgressInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(filepath.Join(dataDir, "models"))
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return &Catalog{dir: abs, opts: opts, locks: map[string]*modelLock{}}, nil
}

// Dir returns the absolute models directory.
func (c *Catalog) Dir() string { return c.dir }

// Endpoint returns the hub base URL.
func (c *Catalog) Endpoint() string { return c.opts.Endpoint }

// modelLock is one model's lock: a token in ch means free; refs counts the
// holders and waiters, and the entry is dropped when it falls to zero, so
// the map holds only models in use (ids that were only ever asked about
// once do not accumulate).
type modelLock struct {
	ch   chan struct{}
	refs int
}

func (c *Catalog) ref(key string) *modelLock {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.locks[key]
	if !ok {
		l = &modelLock{ch: make(chan struct{}, 1)}
		l.ch <- struct{}{}
		c.locks[key] = l
	}
	l.refs++
	return l
}

func (c *Catalog) unref(key string, l *modelLock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(c.locks, key)
	}
}

// release returns the token, then drops the reference (in that order, so
// an entry is only deleted while it holds its token).
func (c *Catalog) release(key string, l *modelLock) func() {
	return func() {
		l.ch <- struct{}{}
		c.unref(key, l)
	}
}

// lock takes the per-model lock, waiting until ctx is done.
func (c *Catalog) lock(ctx context.Context, key string) (func(), error) {
	l := c.ref(key)
	select {
	case <-l.ch:
		return c.release(key, l), nil
	case <-ctx.Done():
		c.unref(key, l)
		return nil, ctx.Err()
	}
}

func (c *Catalog) tryLock(key string) (func(), bool) {
	l := c.ref(key)
	select {
	case <-l.ch:
		return c.release(key, l), true
	default:
		c.unref(key, l)
		return nil, false
	}
}

// lockCount returns how many per-model lock entries exist.
func (c *Catalog) lockCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.locks)
}

func (c *Catalog) modelDir(m ModelID) string { return filepath.Join(c.dir, m.DirName()) }

// load returns the model if it is complete: metadata present, for this id,
// and model.bin of the recorded size.
func (c *Catalog) load(m ModelID) (api.Model, error) {
	dir := c.modelDir(m)
	b, err := os.ReadFile(filepath.Join(dir, MetadataFile))
	if err != nil {
		return api.Model{}, fmt.Errorf("%w: %s", ErrNotFound, m)
	}
	var md api.Model
	if err := json.Unmarshal(b, &md); err != nil || md.ID != m.String() {
		return api.Model{}, fmt.Errorf("%w: %s (bad metadata)", ErrNotFound, m)
	}
	path := filepath.Join(dir, ModelFile)
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() != md.Size {
		return api.Model{}, fmt.Errorf("%w: %s (file missing or wrong size)", ErrNotFound, m)
	}
	md.Path = path
	return md, nil
}

// Get returns a complete model. Errors: *InvalidIDError, ErrNotFound.
func (c *Catalog) Get(id string) (api.Model, error) {
	m, err := ParseModelID(id)
	if err != nil {
		return api.Model{}, err
	}
	return c.load(m)
}

// List returns the complete models, sorted by id. Partial downloads and
// directories that are not model directories are left out.
func (c *Catalog) List() ([]api.Model, error) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("reading catalog %s: %w", c.dir, err)
	}
	models := []api.Model{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		parts := strings.Split(e.Name(), "--")
		if len(parts) != 3 {
			continue
		}
		m, err := ParseModelID(parts[0] + "/" + parts[1] + ":" + parts[2])
		if err != nil {
			continue
		}
		if md, err := c.load(m); err == nil {
			models = append(models, md)
		}
	}
	sort.Slice(models, func(a, b int) bool { return models[a].ID < models[b].ID })
	return models, nil
}

// Delete removes a model's directory (a complete model or a partial
// download). It returns the model that was removed and whether it was only
// a partial download. Errors: *InvalidIDError, ErrNotFound (nothing there),
// ErrBusy (a download of it is running).
func (c *Catalog) Delete(id string) (api.Model, bool, error) {
	m, err := ParseModelID(id)
	if err != nil {
		return api.Model{}, false, err
	}
	unlock, ok := c.tryLock(m.DirName())
	if !ok {
		return api.Model{}, false, fmt.Errorf("%w: %s; cancel that download first", ErrBusy, m)
	}
	defer unlock()
	dir := c.modelDir(m)
	if _, err := os.Stat(dir); err != nil {
		return api.Model{}, false, fmt.Errorf("%w: %s", ErrNotFound, m)
	}
	md, lerr := c.load(m)
	partial := lerr != nil
	if partial {
		md = api.Model{ID: m.String()}
	}
	// Remove metadata first so a crash mid-way never leaves a listed model
	// without its file.
	_ = os.Remove(filepath.Join(dir, MetadataFile))
	if err := os.RemoveAll(dir); err != nil {
		return api.Model{}, false, fmt.Errorf("deleting %s: %w", m, err)
	}
	_ = syncDir(c.dir)
	return md, partial, nil
}

// Progress is one progress report of a download.
type Progress struct {
	Bytes   int64 // bytes of the file on disk so far
	Total   int64 // file size, -1 when the hub did not say
	Resumed int64 // bytes that were already there when this download started
	Done    bool  // the last report: all bytes received
}

// ProgressFunc receives throttled progress reports: the first right after
// the hub answered, then at every 10% of the file or every
// ProgressInterval, and a final one with Done set.
type ProgressFunc func(Progress)

// DownloadError is a failed download; Kept tells whether the partial file
// was kept for a later resume.
type DownloadError struct {
	Model string
	Msg   string
	Kept  bool
	Err   error
}

func (e *DownloadError) Error() string {
	s := fmt.Sprintf("downloading %s: %s", e.Model, e.Msg)
	if e.Kept {
		s += "; the partial file is kept, run model_download again to resume"
	}
	return s
}

func (e *DownloadError) Unwrap() error { return e.Err }

var errIdle = errors.New("download idle")

// Download fetches a model into the catalog and returns it; a model that is
// already complete is returned at once. Concurrent downloads of the same
// model are serialised (the later one then finds it complete). When ctx is
// cancelled the download stops, the partial file stays for a resume, and
// the returned error wraps ctx.Err().
func (c *Catalog) Download(ctx context.Context, id string, progress ProgressFunc) (api.Model, error) {
	m, err := ParseModelID(id)
	if err != nil {
		return api.Model{}, err
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	unlock, err := c.lock(ctx, m.DirName())
	if err != nil {
		return api.Model{}, fmt.Errorf("waiting for another download of %s: %w", m, err)
	}
	defer unlock()
	if md, err := c.load(m); err == nil {
		return md, nil
	}
	dir := c.modelDir(m)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return api.Model{}, fmt.Errorf("downloading %s: %w", m, err)
	}
	// A model.bin without valid metadata is the remains of a crash between
	// rename and metadata write (or a foreign file): we cannot vouch for it.
	_ = os.Remove(filepath.Join(dir, MetadataFile))
	_ = os.Remove(filepath.Join(dir, ModelFile))

	var sum string
	var size int64
	for attempt := 0; ; attempt++ {
		sum, size, err = c.fetch(ctx, m, dir, progress)
		var re *restartError
		if errors.As(err, &re) && attempt == 0 {
			continue // the partial file did not fit the hub's file: start over once
		}
		break
	}
	if err != nil {
		// Leave no empty leftovers: an empty partial file (and then the
		// empty model directory) is not worth keeping for a resume.
		if st, serr := os.Stat(filepath.Join(dir, PartialFile)); serr != nil || st.Size() == 0 {
			_ = os.Remove(filepath.Join(dir, PartialFile))
			_ = os.Remove(dir)
		}
		return api.Model{}, err
	}
	final := filepath.Join(dir, ModelFile)
	if err := os.Rename(filepath.Join(dir, PartialFile), final); err != nil {
		return api.Model{}, fmt.Errorf("downloading %s: %w", m, err)
	}
	if err := syncDir(dir); err != nil {
		return api.Model{}, fmt.Errorf("downloading %s: %w", m, err)
	}
	md := api.Model{ID: m.String(), Size: size, SHA256: sum, Path: final, DownloadedAt: c.opts.Now().UTC()}
	b, _ := json.MarshalIndent(md, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, MetadataFile), append(b, '\n')); err != nil {
		return api.Model{}, fmt.Errorf("downloading %s: writing metadata: %w", m, err)
	}
	return md, nil
}

// restartError asks Download to discard the partial file and try again.
type restartError struct{ msg string }

func (e *restartError) Error() string { return e.msg }

var contentRangeRE = regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+|\*)$`)

// fetch downloads (or resumes) dir/model.bin.partial and verifies it. It
// returns the file's sha256 (hex) and size.
func (c *Catalog) fetch(ctx context.Context, m ModelID, dir string, progress ProgressFunc) (string, int64, error) {
	id := m.String()
	fail := func(kept bool, err error, format string, args ...any) (string, int64, error) {
		return "", 0, &DownloadError{Model: id, Msg: fmt.Sprintf(format, args...), Kept: kept, Err: err}
	}
	partialPath := filepath.Join(dir, PartialFile)
	f, err := os.OpenFile(partialPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fail(false, err, "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fail(false, err, "%v", err)
	}
	offset := st.Size()
	url := c.opts.Endpoint + m.ResolvePath()

	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
	if err != nil {
		return fail(false, err, "%v", err)
	}
	// Identity encoding: byte offsets must refer to the file itself.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fail(offset > 0, ctx.Err(), "cancelled")
		}
		return fail(offset > 0, err, "GET %s: %v", url, err)
	}
	defer resp.Body.Close()

	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		mm := contentRangeRE.FindStringSubmatch(resp.Header.Get("Content-Range"))
		if mm == nil {
			return fail(false, nil, "hub answered 206 with a bad Content-Range %q", resp.Header.Get("Content-Range"))
		}
		start, _ := strconv.ParseInt(mm[1], 10, 64)
		if start != offset {
			if err := f.Truncate(0); err != nil {
				return fail(false, err, "%v", err)
			}
			return "", 0, &restartError{fmt.Sprintf("hub resumed at byte %d, asked for %d", start, offset)}
		}
		if mm[3] != "*" {
			total, _ = strconv.ParseInt(mm[3], 10, 64)
		}
	case http.StatusOK:
		// No (or ignored) Range support: start from the beginning.
		if offset > 0 {
			if err := f.Truncate(0); err != nil {
				return fail(false, err, "%v", err)
			}
			offset = 0
		}
		total = resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file is as long as or longer than the hub's file (or
		// the file changed): start over.
		if err := f.Truncate(0); err != nil {
			return fail(false, err, "%v", err)
		}
		return "", 0, &restartError{"hub answered 416 to the resume request"}
	case http.StatusNotFound:
		return fail(offset > 0, nil, "not found on the hub (GET %s: 404)", url)
	default:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fail(offset > 0, nil, "GET %s: hub answered %s %s", url, resp.Status, strings.TrimSpace(string(snippet)))
	}
	want := expectedSHA256(resp.Header)

	// Hash what is already there, then append.
	h := sha256.New()
	if offset > 0 {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail(false, err, "%v", err)
		}
		if n, err := io.CopyN(h, f, offset); err != nil || n != offset {
			return fail(false, err, "reading partial file: %v", err)
		}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fail(false, err, "%v", err)
	}

	idle := time.AfterFunc(c.opts.IdleTimeout, func() { cancel(errIdle) })
	defer idle.Stop()
	pr := newThrottle(progress, offset, total, c.opts.ProgressInterval)
	pr.report(offset, false, true)
	buf := make([]byte, 256<<10)
	written := offset
	var readErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			idle.Reset(c.opts.IdleTimeout)
			if _, werr := f.Write(buf[:n]); werr != nil {
				return fail(true, werr, "writing %s: %v", partialPath, werr)
			}
			h.Write(buf[:n])
			written += int64(n)
			if total >= 0 && written > total {
				break // more than announced: refused below
			}
			if total < 0 || written < total {
				pr.report(written, false, false) // the last report (Done) follows verification
			}
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
	}
	switch {
	case ctx.Err() != nil:
		return fail(true, ctx.Err(), "cancelled after %d of %s bytes", written, totalText(total))
	case errors.Is(context.Cause(reqCtx), errIdle):
		return fail(true, errIdle, "no data from the hub for %s (got %d of %s bytes)", c.opts.IdleTimeout, written, totalText(total))
	case total >= 0 && written > total:
		f.Close()
		_ = os.Remove(partialPath)
		return fail(false, nil, "size mismatch: got more than the %d bytes the hub announced", total)
	case readErr != nil:
		return fail(true, readErr, "connection lost after %d of %s bytes: %v", written, totalText(total), readErr)
	case total >= 0 && written < total:
		return fail(true, nil, "size mismatch: got %d of %d bytes", written, total)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		f.Close()
		_ = os.Remove(partialPath)
		return fail(false, nil, "checksum mismatch: sha256 of the %d bytes received is %s, the hub says %s; the partial file was removed", written, got, want)
	}
	if err := f.Sync(); err != nil {
		return fail(true, err, "fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		return fail(true, err, "close: %v", err)
	}
	pr.report(written, true, true)
	return got, written, nil
}

func totalText(total int64) string {
	if total < 0 {
		return "?"
	}
	return strconv.FormatInt(total, 10)
}

var hex64 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// expectedSHA256 returns the sha256 the hub announces: X-Checksum-Sha256,
// else a strong ETag (or Hugging Face's X-Linked-Etag) that is 64 hex
// digits. Weak ETags say nothing about the bytes and are ignored.
func expectedSHA256(h http.Header) string {
	if v := strings.TrimSpace(h.Get("X-Checksum-Sha256")); hex64.MatchString(v) {
		return strings.ToLower(v)
	}
	for _, k := range []string{"X-Linked-Etag", "ETag"} {
		v := strings.TrimSpace(h.Get(k))
		if strings.HasPrefix(v, "W/") {
			continue
		}
		v = strings.Trim(v, `"`)
		if hex64.MatchString(v) {
			return strings.ToLower(v)
		}
	}
	return ""
}

// throttle limits progress reports to one per 10% or per interval.
type throttle struct {
	fn       ProgressFunc
	resumed  int64
	total    int64
	interval time.Duration
	last     time.Time
	nextStep int64
}

func newThrottle(fn ProgressFunc, resumed, total int64, interval time.Duration) *throttle {
	return &throttle{fn: fn, resumed: resumed, total: total, interval: interval}
}

func (t *throttle) step(bytes int64) int64 {
	if t.total <= 0 {
		return 1 << 62
	}
	// next multiple of 10% strictly above bytes
	tenth := t.total / 10
	if tenth == 0 {
		tenth = 1
	}
	return (bytes/tenth + 1) * tenth
}

func (t *throttle) report(bytes int64, done, force bool) {
	now := time.Now()
	if !force && bytes < t.nextStep && now.Sub(t.last) < t.interval {
		return
	}
	t.last = now
	t.nextStep = t.step(bytes)
	t.fn(Progress{Bytes: bytes, Total: t.total, Resumed: t.resumed, Done: done})
}

// writeFileAtomic writes data to a temp file beside path, fsyncs it and
// renames it over path, then fsyncs the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
