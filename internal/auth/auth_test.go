package auth

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testKey(t *testing.T, fill byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signedRequest(t *testing.T, k *Key, method, target string, body []byte, at time.Time) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	k.SignAt(r, body, at)
	return r
}

// clock is a settable fake clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestCheckAcceptsAGenuineRequest(t *testing.T) {
	k := testKey(t, 1)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := NewVerifier(k, VerifierOptions{Now: c.now})
	body := []byte(`{"worker_id":"w-1"}`)
	r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, c.t)
	s, err := v.Check(r, body)
	if err != nil {
		t.Fatalf("genuine request refused: %v", err)
	}
	if !s.At.Equal(c.t) {
		t.Fatalf("signed at %v, want %v", s.At, c.t)
	}
}

func TestCheckRefuses(t *testing.T) {
	k := testKey(t, 1)
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(k, VerifierOptions{Now: func() time.Time { return now }, Window: 30 * time.Second})
	body := []byte(`{"worker_id":"w-1","url":"http://hive-1:9100"}`)
	for _, tc := range []struct {
		name string
		req  func() (*http.Request, []byte)
		want error
	}{
		{"missing headers", func() (*http.Request, []byte) {
			return httptest.NewRequest("POST", "/v1/worker-heartbeat", bytes.NewReader(body)), body
		}, ErrMissing},
		{"only a timestamp", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now)
			r.Header.Del(HeaderSignature)
			return r, body
		}, ErrMalformed},
		{"tampered body", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now)
			return r, bytes.Replace(body, []byte("hive-1"), []byte("rogue1"), 1)
		}, ErrSignature},
		{"wrong path", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now)
			r.URL.Path = "/v1/hive-heartbeat"
			return r, body
		}, ErrSignature},
		{"wrong method", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/jobs/x", nil, now)
			r.Method = "DELETE"
			return r, nil
		}, ErrSignature},
		{"changed query", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "GET", "/v1/jobs/x/stream?a=1", nil, now)
			r.URL.RawQuery = "a=2"
			return r, nil
		}, ErrSignature},
		{"wrong key", func() (*http.Request, []byte) {
			return signedRequest(t, testKey(t, 2), "POST", "/v1/worker-heartbeat", body, now), body
		}, ErrSignature},
		{"expired", func() (*http.Request, []byte) {
			return signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now.Add(-31*time.Second)), body
		}, ErrExpired},
		{"from the future", func() (*http.Request, []byte) {
			return signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now.Add(31*time.Second)), body
		}, ErrExpired},
		{"timestamp rewritten", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now.Add(-time.Minute))
			r.Header.Set(HeaderTimestamp, "1800000000000000000")
			return r, body
		}, ErrSignature},
		{"garbage signature", func() (*http.Request, []byte) {
			r := signedRequest(t, k, "POST", "/v1/worker-heartbeat", body, now)
			r.Header.Set(HeaderSignature, "v1=zz")
			return r, body
		}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, b := tc.req()
			_, err := v.Check(r, b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Bounds of the window, from both sides: just inside is accepted.
	for _, d := range []time.Duration{-30 * time.Second, 30 * time.Second} {
		if _, err := v.Check(signedRequest(t, k, "POST", "/p", body, now.Add(d)), body); err != nil {
			t.Fatalf("signed %v from now: %v, want accepted", d, err)
		}
	}
}

func TestVerifyRefusesAReplayUntilItExpires(t *testing.T) {
	k := testKey(t, 1)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := NewVerifier(k, VerifierOptions{Now: c.now, Window: 30 * time.Second})
	r1 := signedRequest(t, k, "POST", "/v1/shutdown", nil, c.t)
	r2 := r1.Clone(r1.Context())
	if _, err := v.Verify(r1, nil); err != nil {
		t.Fatalf("first: %v", err)
	}
	// Every moment the signature is still inside the window, its copy is a
	// replay, across the generation rotations of the cache.
	for _, d := range []time.Duration{0, 10 * time.Second, 29 * time.Second, 30 * time.Second} {
		c.t = time.Unix(1_800_000_000, 0).Add(d)
		if _, err := v.Verify(r2, nil); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay %v later: %v, want ErrReplayed", d, err)
		}
	}
	c.t = time.Unix(1_800_000_000, 0).Add(31 * time.Second)
	if _, err := v.Verify(r2, nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("replay after the window: %v, want ErrExpired", err)
	}
	// A fresh signature of the same call is accepted: only copies are refused.
	if _, err := v.Verify(signedRequest(t, k, "POST", "/v1/shutdown", nil, c.t), nil); err != nil {
		t.Fatalf("fresh signature: %v", err)
	}
}

func TestReplayCacheForgetsOnlyExpiredEntries(t *testing.T) {
	k := testKey(t, 1)
	start := time.Unix(1_800_000_000, 0)
	c := &clock{t: start}
	v := NewVerifier(k, VerifierOptions{Now: c.now, Window: 10 * time.Second})
	// Accept one request a second for 100 s; each one's copy, sent at the
	// last moment its timestamp is valid, must still be refused.
	var reqs []*http.Request
	for i := 0; i < 100; i++ {
		c.t = start.Add(time.Duration(i) * time.Second)
		r := signedRequest(t, k, "POST", "/v1/jobs", []byte{byte(i)}, c.t.Add(9*time.Second))
		if _, err := v.Verify(r, []byte{byte(i)}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		reqs = append(reqs, r)
		if i >= 18 {
			old := reqs[i-18] // signed at (i-18)+9 s, valid until (i-18)+19 s ≥ now
			if _, err := v.Verify(old.Clone(old.Context()), []byte{byte(i - 18)}); !errors.Is(err, ErrReplayed) {
				t.Fatalf("at %d s, replay of request %d: %v, want ErrReplayed", i, i-18, err)
			}
		}
	}
	if n := len(v.cur) + len(v.prev); n > 45 {
		t.Fatalf("replay cache holds %d entries after 100 s at 1/s with a 10 s window; want at most 4 windows' worth", n)
	}
}

func TestTransportSignsEachAttempt(t *testing.T) {
	k := testKey(t, 1)
	v := NewVerifier(k, VerifierOptions{})
	var got []error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, err := v.Verify(r, b)
		got = append(got, err)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &Transport{Key: k}}
	for i := 0; i < 2; i++ {
		// Same method, path and body twice: two attempts, two signatures.
		resp, err := hc.Post(srv.URL+"/v1/jobs", "application/json", strings.NewReader(`{"operation":"status"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(got) != 2 || got[0] != nil || got[1] != nil {
		t.Fatalf("server verdicts %v, want two accepted", got)
	}
}

// Identical requests sent at once through one key's transports must all be
// accepted: a clock read by concurrent goroutines often returns the same
// nanosecond, and equal timestamps on equal requests are equal signatures.
// The clock here is frozen, the worst case; the negative control signs two
// such requests at the same instant by hand and sees the second refused.
func TestConcurrentIdenticalRequestsAreNotReplays(t *testing.T) {
	k := testKey(t, 1)
	frozen := time.Now()
	v := NewVerifier(k, VerifierOptions{})
	var mu sync.Mutex
	var refused []error
	accepted := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, err := v.Verify(r, b)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			refused = append(refused, err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		accepted++
	}))
	defer srv.Close()
	// Two transports over one key, as the queen has (a client for calls and
	// one for streams), both on the frozen clock.
	clients := []*http.Client{
		{Transport: &Transport{Key: k, Now: func() time.Time { return frozen }}},
		{Transport: &Transport{Key: k, Now: func() time.Time { return frozen }}},
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(hc *http.Client) {
			defer wg.Done()
			resp, err := hc.Post(srv.URL+"/v1/jobs", "application/json", strings.NewReader(`{"operation":"worker_spawn"}`))
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		}(clients[i%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(refused) != 0 {
		t.Fatalf("%d of %d identical concurrent requests accepted; %d refused, the first with: %v", accepted, n, len(refused), refused[0])
	}

	if accepted != n {
		t.Fatalf("%d of %d identical concurrent requests reached the verifier and were accepted", accepted, n)
	}

	// Negative control: the same request signed twice at one instant is
	// one signature, and the verifier refuses the second.
	body := []byte(`{"operation":"worker_spawn"}`)
	at := time.Now()
	if _, err := v.Verify(signedRequest(t, k, "POST", "/v1/jobs", body, at), body); err != nil {
		t.Fatalf("first: %v", err)
	}
	if _, err := v.Verify(signedRequest(t, k, "POST", "/v1/jobs", body, at), body); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second at the same instant: %v, want ErrReplayed", err)
	}
}

// stamp makes one key's timestamps strictly increasing, but never moves a
// timestamp more than maxStampLead ahead of the clock it was given: a clock
// stepped back further is taken as it is, so a skewed signer is still
// refused as expired rather than silently corrected.
func TestStampIsStrictlyIncreasingNearTheClock(t *testing.T) {
	k := testKey(t, 1)
	t0 := time.Unix(1_800_000_000, 0)
	if a, b := k.stamp(t0), k.stamp(t0); a != t0.UnixNano() || b != a+1 {
		t.Fatalf("same instant twice: %d, %d; want %d then one more", a, b, t0.UnixNano())
	}
	if got := k.stamp(t0.Add(-time.Millisecond)); got != t0.UnixNano()+2 {
		t.Fatalf("1 ms back: %d, want %d", got, t0.UnixNano()+2)
	}
	if got, want := k.stamp(t0.Add(time.Minute)), t0.Add(time.Minute).UnixNano(); got != want {
		t.Fatalf("a later clock: %d, want it as given (%d)", got, want)
	}
	back := t0.Add(-time.Minute)
	if got := k.stamp(back); got != back.UnixNano() {
		t.Fatalf("clock 2 min behind the last stamp: %d, want it as given (%d)", got, back.UnixNano())
	}
	// The skewed signer is refused by a verifier on the true clock.
	v := NewVerifier(k, VerifierOptions{Now: func() time.Time { return t0.Add(time.Minute) }})
	r := httptest.NewRequest("POST", "/v1/shutdown", nil)
	k.signNanos(r, nil, k.stamp(back))
	if _, err := v.Check(r, nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("signed 2 min behind: %v, want ErrExpired", err)
	}

	// Concurrent stamps of one instant are all distinct.
	k2 := testKey(t, 2)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				n := k2.stamp(t0)
				mu.Lock()
				seen[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 8000 {
		t.Fatalf("8000 stamps of one instant gave %d distinct values", len(seen))
	}
}

func TestRequireAnswers401AndPassesTheBody(t *testing.T) {
	k := testKey(t, 1)
	v := NewVerifier(k, VerifierOptions{})
	var seen string
	h := v.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = string(b)
	}))
	body := []byte(`{"operation":"worker_spawn"}`)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/jobs", bytes.NewReader(body)))
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "unauthorized") || seen != "" {
		t.Fatalf("unsigned: %d %s (handler saw %q)", rec.Code, rec.Body, seen)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, signedRequest(t, k, "POST", "/v1/jobs", body, time.Now()))
	if rec.Code != http.StatusOK || seen != string(body) {
		t.Fatalf("signed: %d, handler saw %q", rec.Code, seen)
	}
}

func TestLoadKeyChecksModeAndFormat(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "cluster.key")
	if err := GenerateKeyFile(good); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(good)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("generated key has mode %04o, want 0600", st.Mode().Perm())
	}
	k, err := LoadKey(good)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	// Two loads of one file are one key: same token.
	k2, _ := LoadKey(good)
	if k.WorkerToken("hive-1") != k2.WorkerToken("hive-1") || k.WorkerToken("hive-1") == k.WorkerToken("hive-2") {
		t.Fatal("worker tokens must be stable per hive and differ between hives")
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(good, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKey(good); err == nil || !strings.Contains(err.Error(), "owner only") {
			t.Fatalf("mode %04o: %v, want a refusal naming the mode", mode, err)
		}
	}
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("abcd\n"), 0o600)
	if _, err := LoadKey(short); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Fatalf("short key: %v", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file accepted")
	}
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("directory: %v", err)
	}
}
