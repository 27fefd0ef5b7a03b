// Package hive is rbee-hive (PROTOCOL.md §4): one per machine, it keeps a
// model catalog, starts llm-worker-rbee processes as its children on a
// port range and tracks them in its own table, reports its devices (the
// CPU plus --gpus simulated GPUs), runs the job API for worker and model
// operations, and heartbeats to the queen.
package hive

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/catalog"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/httpsrv"
	"github.com/rbee-dev/rbee/internal/jobs"
)

// Defaults for Config.
const (
	DefaultPort              = 9000
	DefaultListenHost        = "0.0.0.0"
	DefaultWorkerPortMin     = 9100
	DefaultWorkerPortMax     = 9199
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultSpawnTimeout      = 30 * time.Second
	DefaultStopGrace         = 5 * time.Second
	// WorkerBinaryName is the worker program the hive starts.
	WorkerBinaryName = "llm-worker-rbee"
)

// Config configures a hive.
type Config struct {
	HiveID            string
	Port              int    // the hive's own port (never given to a worker)
	ListenHost        string // default 0.0.0.0
	QueenURL          string // heartbeats go here; "" = no heartbeats
	AdvertiseURL      string // how others reach this hive; default http://<host>:<port>
	DataDir           string // catalog under DataDir/models, worker logs under DataDir/logs
	WorkerPortMin     int
	WorkerPortMax     int
	GPUs              int // simulated GPUs
	HeartbeatInterval time.Duration
	HFEndpoint        string        // model hub base URL
	WorkerBinary      string        // path (or name looked up in $PATH) of llm-worker-rbee
	SpawnTimeout      time.Duration // how long a new worker may take to answer /health
	StopGrace         time.Duration // SIGTERM → SIGKILL delay
	// SecretFile is the cluster secret (see internal/auth): heartbeats are
	// signed with it, shutdown and the job API require its signature, and
	// it is passed to the workers this hive starts. Key, when set, is used
	// instead of reading the file. Neither: nothing is signed or checked.
	SecretFile string
	Key        *auth.Key
	// CatalogOptions are passed to catalog.New (Endpoint is set from HFEndpoint).
	CatalogOptions catalog.Options
	Logf           func(format string, args ...any)
}

var hiveIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (c *Config) setDefaults() error {
	if c.HiveID == "" {
		return errors.New("hive id is empty")
	}
	if !hiveIDRE.MatchString(c.HiveID) {
		return fmt.Errorf("invalid hive id %q: use 1-63 letters, digits, '.', '_', '-', starting with a letter or digit", c.HiveID)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("port %d out of range 0..65535", c.Port)
	}
	if c.ListenHost == "" {
		c.ListenHost = DefaultListenHost
	}
	if c.WorkerPortMin == 0 && c.WorkerPortMax == 0 {
		c.WorkerPortMin, c.WorkerPortMax = DefaultWorkerPortMin, DefaultWorkerPortMax
	}
	if c.WorkerPortMin < 1 || c.WorkerPortMax > 65535 || c.WorkerPortMin > c.WorkerPortMax {
		return fmt.Errorf("invalid worker port range %d-%d", c.WorkerPortMin, c.WorkerPortMax)
	}
	if c.GPUs < 0 || c.GPUs > 64 {
		return fmt.Errorf("gpus %d out of range 0..64", c.GPUs)
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.SpawnTimeout <= 0 {
		c.SpawnTimeout = DefaultSpawnTimeout
	}
	if c.StopGrace <= 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.DataDir == "" {
		return errors.New("data dir is empty")
	}
	for name, u := range map[string]string{"queen url": c.QueenURL, "advertise url": c.AdvertiseURL, "hf endpoint": c.HFEndpoint} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("invalid %s %q: want http(s)://host[:port]", name, u)
		}
	}
	if c.Logf == nil {
		c.Logf = log.New(os.Stderr, "rbee-hive ", log.LstdFlags|log.Lmicroseconds|log.LUTC).Printf
	}
	return nil
}

// Server is a running hive.
type Server struct {
	cfg        Config
	devices    []api.Device
	cat        *catalog.Catalog
	engine     *jobs.Engine
	hc         *http.Client // health probes and heartbeats
	workerHost string       // host part of workers' advertised URLs
	verifier   *auth.Verifier
	kick       chan struct{} // asks the heartbeat loop for a heartbeat now
	hbMu       sync.Mutex
	lastSent   time.Time // timestamp of the last heartbeat, strictly increasing

	mu       sync.Mutex
	children map[string]*child
	reserved map[int]bool // ports handed to a spawn that is still starting

	shutdownOnce sync.Once
	shutdownReq  chan struct{}
	closeOnce    sync.Once
}

// New validates cfg and prepares a hive (catalog directory, devices).
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	copts := cfg.CatalogOptions
	copts.Endpoint = cfg.HFEndpoint
	cat, err := catalog.New(cfg.DataDir, copts)
	if err != nil {
		return nil, err
	}
	if cfg.AdvertiseURL == "" {
		cfg.AdvertiseURL = "http://" + net.JoinHostPort(defaultHost(), strconv.Itoa(cfg.Port))
	}
	cfg.AdvertiseURL = strings.TrimRight(cfg.AdvertiseURL, "/")
	cfg.QueenURL = strings.TrimRight(cfg.QueenURL, "/")
	if cfg.Key == nil && cfg.SecretFile != "" {
		if cfg.Key, err = auth.LoadKey(cfg.SecretFile); err != nil {
			return nil, err
		}
	}
	u, _ := url.Parse(cfg.AdvertiseURL)
	s := &Server{
		kick:    make(chan struct{}, 1),
		cfg:     cfg,
		devices: buildDevices(cfg.GPUs),
		cat:     cat,
		engine:  jobs.NewEngine(jobs.Options{Logf: cfg.Logf}),
		hc: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
				ResponseHeaderTimeout: 5 * time.Second,
				MaxIdleConnsPerHost:   2,
				IdleConnTimeout:       30 * time.Second,
			},
		},
		workerHost:  u.Hostname(),
		children:    map[string]*child{},
		reserved:    map[int]bool{},
		shutdownReq: make(chan struct{}),
	}
	if cfg.Key != nil {
		s.verifier = auth.NewVerifier(cfg.Key, auth.VerifierOptions{})
		s.hc = &http.Client{Timeout: s.hc.Timeout, Transport: &auth.Transport{Key: cfg.Key, Base: s.hc.Transport}}
	} else {
		cfg.Logf("hive %s: WARNING: no cluster secret (--secret-file): heartbeats are unsigned and shutdown and the job API accept anyone", cfg.HiveID)
	}
	return s, nil
}

// defaultHost is the machine's name, or its first non-loopback IPv4
// address; never localhost (others must be able to reach it).
func defaultHost() string {
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		return h
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return "0.0.0.0"
}

// Config returns the effective configuration.
func (s *Server) Config() Config { return s.cfg }

// Catalog returns the hive's model catalog.
func (s *Server) Catalog() *catalog.Catalog { return s.cat }

// Devices returns the hive's devices.
func (s *Server) Devices() []api.Device { return append([]api.Device(nil), s.devices...) }

// ShutdownRequested is closed when POST /v1/shutdown was received.
func (s *Server) ShutdownRequested() <-chan struct{} { return s.shutdownReq }

// Handler returns the hive's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /capabilities", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, http.StatusOK, api.Capabilities{HiveID: s.cfg.HiveID, Devices: s.Devices()})
	})
	mux.Handle("POST /v1/shutdown", s.signed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.cfg.Logf("hive %s: shutdown requested by %s", s.cfg.HiveID, r.RemoteAddr)
		jobs.WriteJSON(w, http.StatusOK, api.StatusOK{Status: "ok"})
		s.shutdownOnce.Do(func() { close(s.shutdownReq) })
	})))
	// The job API (submit, stream, status, cancel) is the queen's to use:
	// every call must carry the cluster signature.
	jobsMux := http.NewServeMux()
	s.engine.Mount(jobsMux, dispatcher{s})
	mux.Handle("/v1/jobs", s.signed(jobsMux))
	mux.Handle("/v1/jobs/", s.signed(jobsMux))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// Run listens on ListenHost:Port and serves until ctx is done or a
// shutdown is requested, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (and heartbeats) until ctx is done or POST
// /v1/shutdown arrives; then it stops accepting, cancels running jobs
// ([CANCELLED]), stops every worker it started and returns nil, within
// about StopGrace+3 s.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpsrv.Server(s.Handler(), httpsrv.Limits{})
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpsrv.Serve(srv, ln, httpsrv.Limits{}) }()
	hbCtx, hbCancel := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); s.heartbeatLoop(hbCtx) }()
	s.cfg.Logf("hive %s listening on %s, advertised as %s; %d devices; workers on ports %d-%d; catalog %s; hub %s; worker binary %q",
		s.cfg.HiveID, ln.Addr(), s.cfg.AdvertiseURL, len(s.devices), s.cfg.WorkerPortMin, s.cfg.WorkerPortMax,
		s.cat.Dir(), s.cat.Endpoint(), s.cfg.WorkerBinary)

	var result error
	select {
	case err := <-serveErr:
		result = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		s.cfg.Logf("hive %s: shutting down (signal)", s.cfg.HiveID)
	case <-s.shutdownReq:
		s.cfg.Logf("hive %s: shutting down (request)", s.cfg.HiveID)
	}
	hbCancel()
	// Closing the listener first means no new jobs; then jobs and workers
	// stop in parallel so the whole shutdown stays well under 10 s.
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopGrace+4*time.Second)
	defer cancel()
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv.Shutdown(sctx) }()
	s.Close()
	<-hbDone
	if err := <-shutdownDone; err != nil {
		s.cfg.Logf("hive %s: forced close: %v", s.cfg.HiveID, err)
		srv.Close()
	}
	s.cfg.Logf("hive %s: stopped", s.cfg.HiveID)
	return result
}

// Close cancels running jobs and stops every worker this hive started. It
// is called by Serve; tests that use Handler call it themselves.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.engine.Close(3 * time.Second); err != nil {
				s.cfg.Logf("hive %s: %v", s.cfg.HiveID, err)
			}
		}()
		s.stopAllWorkers()
		wg.Wait()
	})
}

// signed guards h with the cluster signature (when the hive has a secret).
func (s *Server) signed(h http.Handler) http.Handler {
	if s.verifier == nil {
		return h
	}
	inner := s.verifier.Require(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(auth.HeaderSignature) == "" {
			s.cfg.Logf("hive %s: refused unsigned %s %s from %s", s.cfg.HiveID, r.Method, r.URL.Path, r.RemoteAddr)
		}
		inner.ServeHTTP(w, r)
	})
}

// kickHeartbeat asks for a heartbeat now (the queen accepts a worker's
// heartbeats only once this hive's heartbeat lists it).
func (s *Server) kickHeartbeat() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// sendTime is the heartbeat's send time: the wall clock, but strictly
// later than the previous heartbeat's, because the queen ignores a
// heartbeat that is not newer than the last one it accepted.
func (s *Server) sendTime() time.Time {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	t := time.Now().UTC()
	if !t.After(s.lastSent) {
		t = s.lastSent.Add(time.Microsecond)
	}
	s.lastSent = t
	return t
}

// heartbeat builds the hive heartbeat document.
func (s *Server) heartbeat() api.HiveHeartbeat {
	return api.HiveHeartbeat{
		HiveID:    s.cfg.HiveID,
		URL:       s.cfg.AdvertiseURL,
		Timestamp: s.sendTime(),
		Devices:   s.Devices(),
		Workers:   s.liveWorkerIDs(),
	}
}

// SendHeartbeat posts one hive heartbeat to the queen.
func (s *Server) SendHeartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.HeartbeatInterval, 5*time.Second))
	defer cancel()
	return client.New(s.cfg.QueenURL, client.WithHTTPClient(s.hc)).
		Do(ctx, http.MethodPost, "/v1/hive-heartbeat", s.heartbeat(), nil)
}

// heartbeatLoop sends a heartbeat now and every interval until ctx ends.
// Failures are logged (on change, not every beat) and never block serving.
func (s *Server) heartbeatLoop(ctx context.Context) {
	if s.cfg.QueenURL == "" {
		return
	}
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	var lastErr string
	first := true
	for {
		err := s.SendHeartbeat(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && err.Error() != lastErr:
			s.cfg.Logf("hive %s: heartbeat to %s failed: %q", s.cfg.HiveID, s.cfg.QueenURL, err.Error())
			lastErr = err.Error()
		case err == nil && (first || lastErr != ""):
			s.cfg.Logf("hive %s: heartbeat to %s accepted (every %s)", s.cfg.HiveID, s.cfg.QueenURL, s.cfg.HeartbeatInterval)
			first, lastErr = false, ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

func (s *Server) logsDir() string { return filepath.Join(s.cfg.DataDir, "logs") }
