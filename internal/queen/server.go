// Package queen is queen-rbee, the orchestrator (PROTOCOL.md §3): it keeps
// the registry of hives and workers from their heartbeats, runs the queen's
// job operations (status, hive lifecycle over SSH, forwarding to hives,
// scheduling inference onto workers) on the shared job engine, and serves
// all of it over HTTP.
//
//	go test ./internal/queen/...            # unit tests (httptest hives/workers, in-process SSH)
//	go test -run X -bench . ./internal/queen/   # heartbeat, submit→first event, 1000 readers
package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/httpsrv"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/registry"
	"github.com/rbee-dev/rbee/internal/scheduler"
	"github.com/rbee-dev/rbee/internal/sshx"
)

func keepaliveInterval() time.Duration { return jobs.KeepaliveInterval }

// Options are the queen's non-config dependencies; zero values are fine.
type Options struct {
	// Logf receives one line per event (default: log to stderr).
	Logf func(format string, args ...any)
	// Now is the registry clock (tests inject a fake one for staleness).
	Now func() time.Time
	// DialSSH opens SSH connections to hives (default: sshx with the keys
	// and timeouts of [ssh]).
	DialSSH SSHDialer
	// WorkerToken is sent as a bearer token to workers (default: the
	// queen's LLORCH_API_TOKEN environment variable; without either, the
	// token derived from the cluster secret for the worker's hive).
	WorkerToken string
	// Key is the cluster secret (default: read from [auth] secret_file).
	// Without one the queen authenticates nothing.
	Key *auth.Key
}

// Server is one queen.
type Server struct {
	cfg    *config.Queen
	hives  map[string]config.Hive
	logf   func(format string, args ...any)
	reg    *registry.Registry
	sched  *scheduler.Scheduler
	engine *jobs.Engine
	http   *httpClients // to workers: unsigned (they check a bearer token)
	hhttp  *httpClients // to hives: every attempt signed with the cluster secret
	ssh    *sshGate
	token  string
	key    *auth.Key
	verify *auth.Verifier

	uploads uploadDirs // guards temporaries of hive_install uploads

	mux          *http.ServeMux
	draining     atomic.Bool
	shutdownOnce sync.Once
	shutdownCh   chan struct{}
}

// New builds a queen from its configuration and hives.conf entries.
func New(cfg *config.Queen, hives []config.Hive, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("queen: nil config")
	}
	logf := opts.Logf
	if logf == nil {
		l := log.New(os.Stderr, "queen-rbee ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
		logf = l.Printf
	}
	s := &Server{
		cfg:        cfg,
		hives:      map[string]config.Hive{},
		logf:       logf,
		http:       newHTTPClients(cfg.HTTP.Timeout.D(), cfg.HTTP.Retries),
		token:      opts.WorkerToken,
		key:        opts.Key,
		shutdownCh: make(chan struct{}),
	}
	if s.token == "" {
		s.token = os.Getenv("LLORCH_API_TOKEN")
	}
	if s.key == nil && cfg.Auth.SecretFile != "" {
		k, err := auth.LoadKey(cfg.Auth.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("queen: %w", err)
		}
		s.key = k
	}
	s.hhttp = s.http
	if s.key != nil {
		s.verify = auth.NewVerifier(s.key, auth.VerifierOptions{})
		k := s.key
		s.hhttp = newHTTPClientsWith(cfg.HTTP.Timeout.D(), cfg.HTTP.Retries, func(rt http.RoundTripper) http.RoundTripper {
			return &auth.Transport{Key: k, Base: rt}
		})
	}
	specs := make([]registry.HiveSpec, 0, len(hives))
	for _, h := range hives {
		if _, dup := s.hives[h.Alias]; dup {
			return nil, fmt.Errorf("queen: duplicate hive alias %q", h.Alias)
		}
		s.hives[h.Alias] = h
		specs = append(specs, registry.HiveSpec{Alias: h.Alias, Hostname: h.Hostname, HivePort: h.HivePort, SSHPort: h.SSHPort})
	}
	if err := checkPublicURL(cfg.PublicURL, hives); err != nil {
		return nil, err
	}
	s.reg = registry.New(specs, registry.Options{StaleAfter: cfg.Heartbeat.StaleAfter.D(), Now: opts.Now,
		MaxWorkers: cfg.Limits.MaxWorkers, MaxLearnedHives: cfg.Limits.MaxLearnedHives,
		Bind: s.key != nil, LearnHives: cfg.Auth.LearnHives, StandaloneHive: cfg.Auth.StandaloneHive})
	s.sched = scheduler.New(s.reg)
	s.engine = jobs.NewEngine(jobs.Options{Retention: cfg.Jobs.Retention.D(), MaxJobs: cfg.Jobs.MaxJobs, Logf: logf,
		MaxRunning: cfg.Limits.MaxRunningJobs, MaxEvents: cfg.Limits.MaxJobEvents, MaxJobBytes: cfg.Limits.MaxJobBytes,
		RetainedBytes: int64(cfg.Limits.RetainedBytes)})
	dial := opts.DialSSH
	if dial == nil {
		// The real SSH client: its key files are checked now, not at the
		// first hive_start.
		if err := sshx.CheckKeyFiles(cfg.SSH.IdentityFile, cfg.SSH.KnownHosts); err != nil {
			return nil, fmt.Errorf("queen: [ssh]: %w", err)
		}
		dial = defaultSSHDialer(cfg)
	}
	s.ssh = newSSHGate(dial, cfg.SSH.MaxSessionsPerHost)
	s.mux = http.NewServeMux()
	s.routes()
	return s, nil
}

// Registry returns the queen's registry.
func (s *Server) Registry() *registry.Registry { return s.reg }

// Engine returns the queen's job engine.
func (s *Server) Engine() *jobs.Engine { return s.engine }

// Handler returns the queen's HTTP API.
func (s *Server) Handler() http.Handler { return s.mux }

// ShutdownRequested is closed when POST /v1/shutdown was called.
func (s *Server) ShutdownRequested() <-chan struct{} { return s.shutdownCh }

// Close cancels every running job (readers see [CANCELLED]) and waits up to
// timeout for them to end. New jobs are refused from now on.
func (s *Server) Close(timeout time.Duration) error {
	s.draining.Store(true)
	return s.engine.Close(timeout)
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	m.HandleFunc("GET /v1/build-info", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, http.StatusOK, buildinfo.Get())
	})
	m.HandleFunc("POST /v1/worker-heartbeat", s.handleWorkerHeartbeat)
	m.HandleFunc("POST /v1/hive-heartbeat", s.handleHiveHeartbeat)
	m.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, http.StatusOK, s.reg.Workers())
	})
	m.HandleFunc("GET /v1/hives", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, http.StatusOK, s.reg.Hives())
	})
	var shutdown http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, http.StatusOK, api.StatusOK{Status: "ok"})
		s.logf("shutdown requested by %s", r.RemoteAddr)
		s.shutdownOnce.Do(func() { close(s.shutdownCh) })
	})
	if s.verify != nil {
		shutdown = s.verify.Require(shutdown)
	}
	m.Handle("POST /v1/shutdown", shutdown)
	// The job API, with submissions refused while shutting down.
	jobsMux := http.NewServeMux()
	s.engine.Mount(jobsMux, s)
	m.HandleFunc("/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			jobs.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "queen is shutting down")
			return
		}
		jobsMux.ServeHTTP(w, r)
	})
	m.Handle("/v1/jobs/", jobsMux)
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %q must be %s, got %s", te.Field, te.Type.String(), te.Value)
		}
		return fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return errors.New("body has trailing data after the JSON object")
	}
	return nil
}

// checkSigned verifies a heartbeat's signature. Heartbeats are not put
// in the replay cache: their signed timestamp must be newer than the last
// accepted one of the same sender (the registry checks), which refuses a
// replay just as well and costs no memory per request.
func (s *Server) checkSigned(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if s.verify == nil {
		return true
	}
	if _, err := s.verify.Check(r, body); err != nil {
		auth.Refuse(w, err)
		return false
	}
	return true
}

// heartbeatRefused answers a registry refusal: 503 when the registry is at
// its cap (the sender may retry later), 409 for an out-of-order heartbeat,
// 403 for one the sender may not send, 400 for a malformed one.
func (s *Server) heartbeatRefused(w http.ResponseWriter, err error) {
	var full *registry.FullError
	switch {
	case errors.As(err, &full):
		jobs.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error())
	case errors.Is(err, registry.ErrNotNewer):
		jobs.WriteError(w, http.StatusConflict, api.CodeConflict, err.Error())
	case errors.Is(err, registry.ErrNotVouched), errors.Is(err, registry.ErrBinding),
		errors.Is(err, registry.ErrUnknownHive), errors.Is(err, registry.ErrStandalone):
		jobs.WriteError(w, http.StatusForbidden, api.CodeForbidden, err.Error())
	default:
		jobs.WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
	}
}

func (s *Server) handleWorkerHeartbeat(w http.ResponseWriter, r *http.Request) {
	body, ok := jobs.ReadJSONBody(w, r)
	if !ok {
		return
	}
	if !s.checkSigned(w, r, body) {
		return
	}
	var hb api.WorkerHeartbeat
	if err := decodeStrict(body, &hb); err != nil {
		jobs.WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
		return
	}
	change, err := s.reg.WorkerHeartbeat(hb)
	if err != nil {
		s.heartbeatRefused(w, err)
		return
	}
	if change != "" {
		s.logf("worker %q on %q (%q, %q at %q): %s", hb.WorkerID, hb.HiveID, hb.Model, hb.Device, hb.URL, change)
	}
	jobs.WriteJSON(w, http.StatusOK, api.StatusOK{Status: "ok"})
}

func (s *Server) handleHiveHeartbeat(w http.ResponseWriter, r *http.Request) {
	body, ok := jobs.ReadJSONBody(w, r)
	if !ok {
		return
	}
	if !s.checkSigned(w, r, body) {
		return
	}
	var hb api.HiveHeartbeat
	if err := decodeStrict(body, &hb); err != nil {
		jobs.WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
		return
	}
	change, err := s.reg.HiveHeartbeat(hb)
	if err != nil {
		s.heartbeatRefused(w, err)
		return
	}
	if change != "" {
		s.logf("hive %q (%q): %s", hb.HiveID, hb.URL, change)
	}
	jobs.WriteJSON(w, http.StatusOK, api.StatusOK{Status: "ok"})
}

// Run serves the queen on cfg.Listen until ctx is done (SIGTERM) or
// POST /v1/shutdown, then shuts down gracefully: running jobs end with
// [CANCELLED], streams are closed, all within 10 s.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	lim := httpsrv.Limits{MaxConns: s.cfg.Limits.MaxConnections}
	srv := httpsrv.Server(s.mux, lim)
	errc := make(chan error, 1)
	go func() { errc <- httpsrv.Serve(srv, ln, lim) }()
	s.logf("listening on %s (public URL %s, %d hives configured, stale_after %s)",
		ln.Addr(), s.cfg.PublicURL, len(s.hives), s.reg.StaleAfter())
	select {
	case err := <-errc:
		_ = s.Close(5 * time.Second)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		s.logf("signal received; shutting down")
	case <-s.shutdownCh:
	}
	start := time.Now()
	if err := s.Close(7 * time.Second); err != nil {
		s.logf("shutdown: %v", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	s.logf("stopped after %s", time.Since(start).Round(time.Millisecond))
	return nil
}
