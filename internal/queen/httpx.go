package queen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/rbee-dev/rbee/internal/client"
)

// Calls to hives and workers go through go-retryablehttp with a policy that
// retries only where it is safe: idempotent requests (GET, HEAD, DELETE) on
// connection errors and 502/503/504, and any request when the connection
// was never made (refused, unresolvable, unreachable), because then the
// server cannot have seen it. Timeouts are never retried: a peer that does
// not answer in time fails the job instead of multiplying the wait.

// narrator is carried in a request's context so that each retry becomes a
// narration event of the job that made the call.
type narratorKey struct{}

func withNarrator(ctx context.Context, fn func(msg string)) context.Context {
	return context.WithValue(ctx, narratorKey{}, fn)
}

type attemptKey struct{}

// attemptState is per logical request (shared by its retries).
type attemptState struct {
	method, url string
	attempt     int
	narrate     func(string)
}

type httpClients struct {
	timeout time.Duration
	retries int
	short   *http.Client // per-attempt timeout
	stream  *http.Client // no overall timeout; idle streams are cut
	probe   *http.Client // health probes: short timeout, no retries
	probeTO time.Duration
}

func newHTTPClients(timeout time.Duration, retries int) *httpClients {
	return newHTTPClientsWith(timeout, retries, nil)
}

// newHTTPClientsWith is newHTTPClients with wrap (when non-nil) around each
// base transport, inside the retry layer, so every attempt passes it.
func newHTTPClientsWith(timeout time.Duration, retries int, wrap func(http.RoundTripper) http.RoundTripper) *httpClients {
	base := func(d time.Duration) http.RoundTripper {
		if wrap == nil {
			return baseTransport(d)
		}
		return wrap(baseTransport(d))
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if retries < 0 {
		retries = 0
	}
	probeTO := min(timeout, 2*time.Second)
	h := &httpClients{timeout: timeout, retries: retries, probeTO: probeTO}
	h.short = &http.Client{Transport: h.retrying(base(timeout), timeout)}
	h.stream = &http.Client{Transport: &idleTransport{next: h.retrying(base(timeout), 0), idle: h.idleTimeout}}
	h.probe = &http.Client{Transport: base(probeTO), Timeout: probeTO}
	return h
}

func baseTransport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // cluster-internal traffic never goes through a proxy
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: timeout,
		TLSHandshakeTimeout:   timeout,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
	}
}

// idleTimeout is how long a stream from a hive or worker may send nothing
// at all (keepalive comments count) before it is treated as dead.
func (h *httpClients) idleTimeout() time.Duration {
	return max(2*keepaliveInterval(), h.timeout)
}

// retrying wraps base in a retryablehttp round tripper with our policy;
// attemptTimeout > 0 bounds each attempt.
func (h *httpClients) retrying(base http.RoundTripper, attemptTimeout time.Duration) http.RoundTripper {
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: base, Timeout: attemptTimeout}
	rc.RetryMax = h.retries
	rc.RetryWaitMin = 100 * time.Millisecond
	rc.RetryWaitMax = time.Second
	rc.Logger = nil
	rc.CheckRetry = h.checkRetry
	rc.ErrorHandler = func(resp *http.Response, err error, attempts int) (*http.Response, error) {
		if err != nil && attempts > 1 {
			return resp, &retriedError{err: err, attempts: attempts}
		}
		return resp, err
	}
	return &stateTransport{next: &retryablehttp.RoundTripper{Client: rc}}
}

type retriedError struct {
	err      error
	attempts int
}

func (e *retriedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.err, e.attempts)
}
func (e *retriedError) Unwrap() error { return e.err }

// stateTransport gives each request its own attempt counter.
type stateTransport struct{ next http.RoundTripper }

func (t *stateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := &attemptState{method: req.Method, url: req.URL.String(), attempt: 1}
	st.narrate, _ = req.Context().Value(narratorKey{}).(func(string))
	return t.next.RoundTrip(req.WithContext(context.WithValue(req.Context(), attemptKey{}, st)))
}

func (h *httpClients) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	st, _ := ctx.Value(attemptKey{}).(*attemptState)
	if st == nil {
		return false, nil
	}
	idempotent := st.method == http.MethodGet || st.method == http.MethodHead || st.method == http.MethodDelete
	var retry bool
	var cause string
	switch {
	case err != nil:
		cause = describeErr(err, h.timeout)
		retry = !isTimeout(err) && (neverConnected(err) || (idempotent && connectionError(err)))
	case idempotent && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout):
		retry, cause = true, resp.Status
	}
	if retry && st.attempt <= h.retries {
		st.attempt++
		if st.narrate != nil {
			st.narrate(fmt.Sprintf("retrying %s %s, attempt %d/%d: %s", st.method, st.url, st.attempt, h.retries+1, cause))
		}
	}
	return retry, nil
}

// neverConnected: the request cannot have reached the server.
func neverConnected(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// connectionError: the connection failed or broke (request may have been seen).
func connectionError(err error) bool {
	if neverConnected(err) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// mayHaveArrived: the connection was made and then failed or went silent
// before an answer, so the peer may have received and acted on the
// request. A POST in this state is not retried, and its error says so.
func mayHaveArrived(err error) bool {
	return !neverConnected(err) && (isTimeout(err) || connectionError(err) || errors.Is(err, syscall.ECONNABORTED))
}

// unanswered is the note added to a POST error when the peer may have
// accepted the request.
const unanswered = "; the request was sent and may have been accepted, so it was not retried"

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describeErr turns a transport or API error into the short cause that
// follows "hive-1 (http://hive-1:9000): " in job errors.
func describeErr(err error, timeout time.Duration) string {
	suffix := ""
	var re *retriedError
	if errors.As(err, &re) {
		suffix = fmt.Sprintf(" (after %d attempts)", re.attempts)
	}
	var idle *idleError
	var dns *net.DNSError
	var ae *client.APIError
	switch {
	case errors.As(err, &idle):
		return idle.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused" + suffix
	case isTimeout(err):
		return fmt.Sprintf("timed out after %s", timeout) + suffix
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer" + suffix
	case errors.Is(err, syscall.ECONNABORTED):
		return "connection aborted" + suffix
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host" + suffix
	case errors.Is(err, syscall.ENETUNREACH):
		return "network is unreachable" + suffix
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot resolve %s: %s", dns.Name, dns.Err) + suffix
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by peer" + suffix
	case errors.As(err, &ae):
		return ae.Error()
	}
	return err.Error()
}

// idleError ends a stream that sent nothing for too long.
type idleError struct{ d time.Duration }

func (e *idleError) Error() string { return fmt.Sprintf("stream idle: no data for %s", e.d) }

// idleTransport cuts event streams that go silent (not even keepalives).
type idleTransport struct {
	next http.RoundTripper
	idle func() time.Duration
}

func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp, err
	}
	resp.Body = newIdleBody(resp.Body, t.idle())
	return resp, nil
}

type idleBody struct {
	rc    io.ReadCloser
	d     time.Duration
	timer *time.Timer
	mu    sync.Mutex
	fired bool
}

func newIdleBody(rc io.ReadCloser, d time.Duration) *idleBody {
	b := &idleBody{rc: rc, d: d}
	b.timer = time.AfterFunc(d, func() {
		b.mu.Lock()
		b.fired = true
		b.mu.Unlock()
		rc.Close() // unblocks a pending Read
	})
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	fired := b.fired
	b.mu.Unlock()
	if fired {
		return n, &idleError{d: b.d}
	}
	if n > 0 {
		b.timer.Reset(b.d)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.rc.Close()
}
