// Package auth signs and verifies the cluster-internal HTTP calls of rbee:
// heartbeats (worker → queen, hive → queen), shutdown requests and the
// hive's job API (queen → hive). Every party holds the same cluster secret,
// a 32-byte key in a file only its owner may read. A request is signed with
// HMAC-SHA256 over a canonical string of its method, path and query, a
// timestamp and the SHA-256 of its body; the verifier accepts it within a
// short window around its own clock and, for calls that must not run twice,
// only once (Verifier.Verify remembers every signature inside the window).
// Heartbeats get their replay protection from their signed body instead:
// the queen accepts only a heartbeat newer than the last one of that sender.
//
// The same secret derives the bearer token a hive gives its workers
// (WorkerToken), so delivering one file to a machine provisions all of it.
//
//	go test ./internal/auth/...
package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Header names of a signed request.
const (
	HeaderTimestamp = "X-Rbee-Timestamp" // Unix time in nanoseconds, decimal
	HeaderSignature = "X-Rbee-Signature" // "v1=" + hex HMAC-SHA256
)

// KeySize is the length of the cluster secret in bytes.
const KeySize = 32

// DefaultWindow is how far a request's timestamp may be from the
// verifier's clock, in either direction.
const DefaultWindow = 30 * time.Second

// Errors a verification can end with; all of them mean 401.
var (
	ErrMissing   = errors.New("request is not signed (no " + HeaderTimestamp + " / " + HeaderSignature + " header)")
	ErrMalformed = errors.New("malformed signature headers")
	ErrSignature = errors.New("signature does not match (wrong key, or method, path or body changed)")
	ErrExpired   = errors.New("signature timestamp is outside the accepted window")
	ErrReplayed  = errors.New("request was already accepted once (replay)")
)

// Key is the cluster secret.
type Key struct {
	b []byte
	// last is the newest timestamp Sign and Transport have put on a
	// request with this key (Unix ns); see stamp.
	last atomic.Int64
}

// NewKey wraps secret, which must be exactly KeySize bytes.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) != KeySize {
		return nil, fmt.Errorf("cluster secret has %d bytes; want %d", len(secret), KeySize)
	}
	return &Key{b: bytes.Clone(secret)}, nil
}

// ParseKey decodes the key file format: 64 hex digits, optionally followed
// by a newline.
func ParseKey(data []byte) (*Key, error) {
	s := strings.TrimSpace(string(data))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return nil, fmt.Errorf("want %d hex digits (a %d-byte key)", 2*KeySize, KeySize)
	}
	return &Key{b: b}, nil
}

// LoadKey reads a key file. Like OpenSSH with identity files, it refuses a
// file that its group or others may read or write, or that is not a
// regular file.
func LoadKey(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("cluster secret %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cluster secret %s has mode %04o: it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("cluster secret %s: %v", path, err)
	}
	return k, nil
}

// GenerateKeyFile writes a new random key to path with mode 0600, through a
// temporary file and a rename, so a reader never sees half a key.
func GenerateKeyFile(path string) error {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return WriteKeyFile(path, &Key{b: b})
}

// WriteKeyFile writes k to path (mode 0600) atomically.
func WriteKeyFile(path string, k *Key) error {
	dir, base := splitPath(path)
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(k.Encode()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ".", p
	}
	if i == 0 {
		return "/", p[1:]
	}
	return p[:i], p[i+1:]
}

// Encode returns the key file content.
func (k *Key) Encode() []byte { return []byte(hex.EncodeToString(k.b) + "\n") }

// WorkerToken is the bearer token the workers of hive hiveID require on
// their inference API. It is derived from the cluster secret (so the queen
// and the hive agree without another file), differs per hive (a token seen
// by one hive's workers opens no other hive's), and does not reveal the
// secret.
func (k *Key) WorkerToken(hiveID string) string {
	m := hmac.New(sha256.New, k.b)
	m.Write([]byte("rbee-worker-token\n" + hiveID))
	return hex.EncodeToString(m.Sum(nil))
}

// mac computes the signature of one request.
func (k *Key) mac(method, uri, ts string, body []byte) []byte {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, k.b)
	m.Write([]byte("rbee-v1\n" + method + "\n" + uri + "\n" + ts + "\n"))
	var hexsum [2 * sha256.Size]byte
	hex.Encode(hexsum[:], sum[:])
	m.Write(hexsum[:])
	return m.Sum(nil)
}

// requestURI is the signed form of the request's target: escaped path and
// raw query, the same on both sides of the connection.
func requestURI(r *http.Request) string {
	u := r.URL.EscapedPath()
	if u == "" {
		u = "/"
	}
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

// SignAt sets the signature headers of r for body (the exact bytes that
// will be sent) at time t, exactly.
func (k *Key) SignAt(r *http.Request, body []byte, t time.Time) {
	k.signNanos(r, body, t.UnixNano())
}

func (k *Key) signNanos(r *http.Request, body []byte, n int64) {
	ts := strconv.FormatInt(n, 10)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderSignature, "v1="+hex.EncodeToString(k.mac(r.Method, requestURI(r), ts, body)))
}

// Sign signs r at the current time; see Transport for why two requests
// never get the same timestamp.
func (k *Key) Sign(r *http.Request, body []byte) { k.signNanos(r, body, k.stamp(time.Now())) }

// maxStampLead bounds how far stamp may move a timestamp ahead of the
// clock it was given. A clock that went back by more than this (a step,
// or a test's clock) is taken as it is.
const maxStampLead = time.Second

// stamp returns t in Unix nanoseconds, made strictly greater than every
// timestamp this key has stamped before unless that would put it more than
// maxStampLead ahead of t. Two requests with the same method, target and
// body signed in the same nanosecond (concurrent goroutines read the same
// clock value often enough) would otherwise carry the same signature, and
// a verifier refuses the second as a replay.
func (k *Key) stamp(t time.Time) int64 {
	n := t.UnixNano()
	for {
		last := k.last.Load()
		next := n
		if n <= last && last-n < int64(maxStampLead) {
			next = last + 1
		}
		if k.last.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Transport signs every request it sends, each attempt anew (so a retry is
// not mistaken for a replay), then hands it to Base. The timestamps of one
// key's requests strictly increase (within a second of the clock), so
// identical requests sent at once are told apart as well.
type Transport struct {
	Key  *Key
	Base http.RoundTripper // nil: http.DefaultTransport
	Now  func() time.Time  // nil: time.Now
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("signing %s %s: reading body: %w", req.Method, req.URL.Path, err)
		}
	}
	r := req.Clone(req.Context())
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	t.Key.signNanos(r, body, t.Key.stamp(now()))
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// Verifier checks signed requests.
type Verifier struct {
	key    *Key
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	cur      map[[sha256.Size]byte]struct{}
	prev     map[[sha256.Size]byte]struct{}
	genStart time.Time
}

// VerifierOptions configure a Verifier.
type VerifierOptions struct {
	Window time.Duration    // default DefaultWindow
	Now    func() time.Time // default time.Now
}

// NewVerifier returns a verifier for key.
func NewVerifier(key *Key, opts VerifierOptions) *Verifier {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{key: key, window: opts.Window, now: opts.Now,
		cur: map[[sha256.Size]byte]struct{}{}, prev: map[[sha256.Size]byte]struct{}{}}
}

// Window returns the accepted clock difference.
func (v *Verifier) Window() time.Duration { return v.window }

// Signed is what a valid signature vouches for.
type Signed struct {
	At  time.Time         // the signer's timestamp
	mac [sha256.Size]byte // identifies the request for replay detection
}

// Check verifies r's signature over body and its timestamp window. It does
// not remember the request: a caller whose requests carry their own
// ordering (heartbeats) uses Check; one whose requests must run once uses
// Verify.
func (v *Verifier) Check(r *http.Request, body []byte) (Signed, error) {
	ts, sig := r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
	if ts == "" && sig == "" {
		return Signed{}, ErrMissing
	}
	if ts == "" || sig == "" {
		return Signed{}, fmt.Errorf("%w: both %s and %s are required", ErrMalformed, HeaderTimestamp, HeaderSignature)
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || n <= 0 {
		return Signed{}, fmt.Errorf("%w: %s %q is not Unix nanoseconds", ErrMalformed, HeaderTimestamp, clip(ts))
	}
	hexsig, ok := strings.CutPrefix(sig, "v1=")
	if !ok || len(hexsig) != 2*sha256.Size {
		return Signed{}, fmt.Errorf("%w: %s must be v1= and %d hex digits", ErrMalformed, HeaderSignature, 2*sha256.Size)
	}
	var got [sha256.Size]byte
	if _, err := hex.Decode(got[:], []byte(hexsig)); err != nil {
		return Signed{}, fmt.Errorf("%w: %s is not hex", ErrMalformed, HeaderSignature)
	}
	want := v.key.mac(r.Method, requestURI(r), ts, body)
	if !hmac.Equal(got[:], want) {
		return Signed{}, ErrSignature
	}
	at := time.Unix(0, n)
	if d := v.now().Sub(at); d > v.window || d < -v.window {
		return Signed{}, fmt.Errorf("%w: signed at %s, %s from this host's clock (window ±%s)",
			ErrExpired, at.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), v.window)
	}
	return Signed{At: at, mac: got}, nil
}

// Verify is Check plus replay detection: a signature already accepted
// inside the window is refused with ErrReplayed. Memory is bounded by the
// rate of genuinely signed requests times two windows.
func (v *Verifier) Verify(r *http.Request, body []byte) (Signed, error) {
	s, err := v.Check(r, body)
	if err != nil {
		return s, err
	}
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	// Two generations of 2×window each: an entry lives at least 2×window,
	// and a replay must arrive within timestamp+window ≤ acceptance+2×window.
	if now.Sub(v.genStart) > 2*v.window {
		v.prev, v.cur, v.genStart = v.cur, map[[sha256.Size]byte]struct{}{}, now
	}
	if _, seen := v.cur[s.mac]; seen {
		return s, ErrReplayed
	}
	if _, seen := v.prev[s.mac]; seen {
		return s, ErrReplayed
	}
	v.cur[s.mac] = struct{}{}
	return s, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
