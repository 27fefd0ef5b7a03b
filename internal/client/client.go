// Package client is the typed Go client of the rbee HTTP API: the job API
// that queen-rbee and rbee-hive share (submit, follow a stream with
// reconnects, status, cancel) and the queen's registry endpoints. The keeper
// CLI, the queen (towards hives) and the Docker test suites all use it, so a
// suite exercises exactly what a user's tools do.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/sse"
)

// Client talks to one rbee server (queen, hive or worker).
type Client struct {
	base        string
	hc          *http.Client // for short calls
	stream      *http.Client // for streams: no overall timeout
	token       string
	maxRetries  int
	idleTimeout time.Duration
	backoff     time.Duration
	noEventLog  bool
	key         *auth.Key
	signClock   func() time.Time
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the client for short calls (and streams, unless
// WithStreamClient is also given).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc; c.stream = hc }
}

// WithStreamClient sets the client used to read streams.
func WithStreamClient(hc *http.Client) Option { return func(c *Client) { c.stream = hc } }

// WithToken sends "Authorization: Bearer token" on every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithKey signs every request with the cluster secret (see internal/auth):
// each attempt is signed when it is sent, on both the short-call and the
// stream client.
func WithKey(k *auth.Key) Option { return func(c *Client) { c.key = k } }

// WithSigningClock makes a signing client stamp its requests with clock()
// instead of the current time: for tests of how far from its own clock a
// receiver accepts a signature (SignatureWindow).
func WithSigningClock(clock func() time.Time) Option { return func(c *Client) { c.signClock = clock } }

// SignatureWindow is how far a signed request's timestamp may be from the
// receiver's clock, in either direction, for the queen and the hive.
const SignatureWindow = auth.DefaultWindow

// WithKeyFile is WithKey with the key read from a key file (64 hex digits,
// mode 0600), for tools and tests that hold the cluster secret.
func WithKeyFile(path string) (Option, error) {
	k, err := auth.LoadKey(path)
	if err != nil {
		return nil, err
	}
	return WithKey(k), nil
}

// WithWorkerTokenFrom sends the bearer token that the workers of hiveID
// expect, derived from the cluster secret in keyFile (auth.Key.WorkerToken),
// for tools and tests that talk to a worker directly.
func WithWorkerTokenFrom(keyFile, hiveID string) (Option, error) {
	k, err := auth.LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	return WithToken(k.WorkerToken(hiveID)), nil
}

// WithReconnects sets how many times Follow reconnects a dropped stream
// (default 5).
func WithReconnects(n int) Option { return func(c *Client) { c.maxRetries = n } }

// WithIdleTimeout makes Follow treat a stream that sends nothing (not even a
// keepalive) for d as dropped. Default 40 s: keepalives come every 15 s.
func WithIdleTimeout(d time.Duration) Option { return func(c *Client) { c.idleTimeout = d } }

// WithoutEventLog makes Follow pass events to its callback only, without
// keeping them in Outcome.Events: for relays of long streams, whose memory
// must not grow with the stream's length.
func WithoutEventLog() Option { return func(c *Client) { c.noEventLog = true } }

// New returns a client for the server at baseURL (e.g. "http://127.0.0.1:8500").
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base:        strings.TrimRight(baseURL, "/"),
		hc:          &http.Client{Timeout: 10 * time.Second},
		stream:      &http.Client{},
		maxRetries:  5,
		idleTimeout: 40 * time.Second,
		backoff:     200 * time.Millisecond,
	}
	for _, o := range opts {
		o(c)
	}
	if c.key != nil {
		c.hc = signing(c.hc, c.key, c.signClock)
		c.stream = signing(c.stream, c.key, c.signClock)
	}
	return c
}

// signing returns a copy of hc whose transport signs each request.
func signing(hc *http.Client, k *auth.Key, now func() time.Time) *http.Client {
	cp := *hc
	cp.Transport = &auth.Transport{Key: k, Base: hc.Transport, Now: now}
	return &cp
}

// BaseURL returns the server's base URL.
func (c *Client) BaseURL() string { return c.base }

// APIError is a non-2xx answer from the server.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// IsStatus reports whether err is an *APIError with the given status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is non-nil). Non-2xx answers are *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, out)
}

func decodeAnswer(resp *http.Response, out any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var eb api.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
			ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		}
		return ae
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*string); ok {
		*s = string(data)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

// Health calls GET /health and returns the body ("ok" for queen and hive,
// a JSON document for workers).
func (c *Client) Health(ctx context.Context) (string, error) {
	var s string
	err := c.Do(ctx, http.MethodGet, "/health", nil, &s)
	return strings.TrimSpace(s), err
}

// BuildInfo calls GET /v1/build-info.
func (c *Client) BuildInfo(ctx context.Context) (api.BuildInfo, error) {
	var b api.BuildInfo
	return b, c.Do(ctx, http.MethodGet, "/v1/build-info", nil, &b)
}

// Capabilities calls a hive's GET /capabilities.
func (c *Client) Capabilities(ctx context.Context) (api.Capabilities, error) {
	var cp api.Capabilities
	return cp, c.Do(ctx, http.MethodGet, "/capabilities", nil, &cp)
}

// Workers calls the queen's GET /v1/workers.
func (c *Client) Workers(ctx context.Context) ([]api.WorkerInfo, error) {
	var ws []api.WorkerInfo
	return ws, c.Do(ctx, http.MethodGet, "/v1/workers", nil, &ws)
}

// Hives calls the queen's GET /v1/hives.
func (c *Client) Hives(ctx context.Context) ([]api.HiveInfo, error) {
	var hs []api.HiveInfo
	return hs, c.Do(ctx, http.MethodGet, "/v1/hives", nil, &hs)
}

// Shutdown calls POST /v1/shutdown.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/v1/shutdown", nil, nil)
}

// Submit calls POST /v1/jobs.
func (c *Client) Submit(ctx context.Context, req api.JobRequest) (api.JobAccepted, error) {
	var a api.JobAccepted
	return a, c.Do(ctx, http.MethodPost, "/v1/jobs", req, &a)
}

// Job calls GET /v1/jobs/{id}.
func (c *Client) Job(ctx context.Context, id string) (api.JobStatus, error) {
	var st api.JobStatus
	return st, c.Do(ctx, http.MethodGet, "/v1/jobs/"+id, nil, &st)
}

// Cancel calls DELETE /v1/jobs/{id}.
func (c *Client) Cancel(ctx context.Context, id string) (api.CancelAnswer, error) {
	var a api.CancelAnswer
	return a, c.Do(ctx, http.MethodDelete, "/v1/jobs/"+id, nil, &a)
}

// Outcome is how a followed stream ended.
type Outcome struct {
	JobID      string
	Kind       sse.TermKind // Done, Error or Cancelled
	Error      string       // the [ERROR] message
	LastID     int          // id of the last event seen
	Events     []sse.Event  // every non-terminator event, in order
	Reconnects int          // how often the stream was resumed
}

// Terminator returns the terminator line the stream ended with.
func (o Outcome) Terminator() string {
	if o.Kind == sse.Error {
		return api.TermError + " " + o.Error
	}
	return o.Kind.String()
}

// ErrNoTerminator is returned by Follow when the stream could not be
// followed to its terminator.
var ErrNoTerminator = errors.New("stream ended without a terminator")

// Follow reads job id's stream from after afterID to its terminator,
// calling onEvent (if non-nil) for every other event. A dropped or idle
// connection is resumed with Last-Event-ID up to the reconnect limit, so no
// event is lost or repeated. An error from onEvent stops following.
func (c *Client) Follow(ctx context.Context, id string, afterID int, onEvent func(sse.Event) error) (Outcome, error) {
	return c.FollowPath(ctx, "/v1/jobs/"+id+"/stream", id, afterID, onEvent)
}

// FollowPath is Follow for a stream at an explicit path (the worker's
// /v1/inference/{id}/stream).
func (c *Client) FollowPath(ctx context.Context, path, id string, afterID int, onEvent func(sse.Event) error) (Outcome, error) {
	out := Outcome{JobID: id, LastID: afterID}
	var lastErr error
	for attempt := 0; attempt <= c.maxRetries; attempt++ {
		if attempt > 0 {
			out.Reconnects++
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(c.backoff * time.Duration(attempt)):
			}
		}
		done, err := c.followOnce(ctx, path, &out, onEvent)
		if done {
			return out, nil
		}
		var ae *APIError
		// A stream that breaks SSE framing would break it again on resume.
		if errors.As(err, &ae) || ctx.Err() != nil || errors.Is(err, errCallback) || errors.Is(err, sse.ErrBadName) {
			return out, unwrapCallback(err)
		}
		lastErr = err
	}
	return out, fmt.Errorf("following %s: %w (after %d reconnects: %v)", id, ErrNoTerminator, out.Reconnects, lastErr)
}

var errCallback = errors.New("callback")

type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Is(t error) bool {
	return t == errCallback
}
func (e *callbackError) Unwrap() error { return e.err }

func unwrapCallback(err error) error {
	var ce *callbackError
	if errors.As(err, &ce) {
		return ce.err
	}
	return err
}

// followOnce reads one connection's worth of stream. It reports done when
// the terminator arrived.
func (c *Client) followOnce(ctx context.Context, path string, out *Outcome, onEvent func(sse.Event) error) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if out.LastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(out.LastID))
	}
	// The idle watchdog cancels the request when nothing arrives in time.
	idle := time.AfterFunc(c.idleTimeout, cancel)
	defer idle.Stop()
	resp, err := c.stream.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, decodeAnswer(resp, nil)
	}
	rd := sse.NewReader(&touchReader{r: resp.Body, touch: func() { idle.Reset(c.idleTimeout) }})
	for {
		ev, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return false, err
		}
		if k, msg := sse.Terminator(ev.Data); ev.Name == "" && k != sse.NotTerminator {
			out.Kind, out.Error = k, msg
			out.LastID = max(out.LastID, ev.ID)
			return true, nil
		}
		if ev.ID > 0 {
			if ev.ID <= out.LastID {
				continue // already seen before a reconnect
			}
			out.LastID = ev.ID
		}
		if !c.noEventLog {
			out.Events = append(out.Events, ev)
		}
		if onEvent != nil {
			if err := onEvent(ev); err != nil {
				return false, &callbackError{err}
			}
		}
	}
}

type touchReader struct {
	r     io.Reader
	touch func()
}

func (t *touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.touch()
	}
	return n, err
}

// Run submits req and follows its stream to the terminator.
func (c *Client) Run(ctx context.Context, req api.JobRequest, onEvent func(sse.Event) error) (Outcome, error) {
	acc, err := c.Submit(ctx, req)
	if err != nil {
		return Outcome{}, err
	}
	return c.Follow(ctx, acc.JobID, 0, onEvent)
}

// Results decodes every "result" event of o into a fresh T, in order.
func Results[T any](o Outcome) ([]T, error) {
	var out []T
	for _, ev := range o.Events {
		if ev.Name != api.EventResult {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
			return nil, fmt.Errorf("decoding result event %d: %w", ev.ID, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Tokens joins the text of every "token" event of o.
func Tokens(o Outcome) (string, error) {
	var b strings.Builder
	for _, ev := range o.Events {
		if ev.Name != api.EventToken {
			continue
		}
		var t api.Token
		if err := json.Unmarshal([]byte(ev.Data), &t); err != nil {
			return "", fmt.Errorf("decoding token event %d: %w", ev.ID, err)
		}
		b.WriteString(t.T)
	}
	return b.String(), nil
}

// Narration decodes ev when it is a "narration" event; ok is false for
// every other event.
func Narration(ev sse.Event) (n api.Narration, ok bool, err error) {
	if ev.Name != api.EventNarration {
		return api.Narration{}, false, nil
	}
	if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
		return api.Narration{}, true, fmt.Errorf("decoding narration event %d: %w", ev.ID, err)
	}
	return n, true, nil
}

// Narrations decodes every "narration" event of o, in order.
func Narrations(o Outcome) ([]api.Narration, error) {
	var out []api.Narration
	for _, ev := range o.Events {
		n, ok, err := Narration(ev)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, n)
		}
	}
	return out, nil
}
