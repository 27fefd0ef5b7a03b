// Package worker is llm-worker-rbee (PROTOCOL.md §5): it loads one n-gram
// model file (internal/model), serves GET /health and the inference API
// (POST /v1/inference, GET|DELETE /v1/inference/{id}, GET
// /v1/inference/{id}/stream) on the shared job engine, and heartbeats to the
// queen with its advertised URL.
//
// Run its tests with: go test ./internal/worker/
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/httpsrv"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/model"
)

// Defaults for Config.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultTokenDelay        = 5 * time.Millisecond
	DefaultListenHost        = "0.0.0.0"
	// ShutdownTimeout bounds a graceful stop (PROTOCOL §1: exit within 10 s).
	ShutdownTimeout = 8 * time.Second
)

// Limits of an inference request beyond api.MinMaxTokens..MaxMaxTokens.
const (
	MaxTemperature = 10.0
	MaxStops       = 16
	MaxStopBytes   = 64
)

// TokenEnv names the environment variable holding the optional bearer token.
const TokenEnv = "LLORCH_API_TOKEN"

// Config is a worker's configuration (the command-line flags).
type Config struct {
	WorkerID  string
	ModelPath string
	// ModelID is the id reported in /health and heartbeats. Empty: the
	// "id" of metadata.json beside the model file (the hive catalog writes
	// it), else the name stored in the model file, else the file path.
	ModelID           string
	Device            string // "cpu:0", "gpu:1"
	ListenHost        string
	Port              int // 0 picks a free port (tests)
	QueenURL          string
	HiveID            string
	AdvertiseURL      string // empty: http://<hostname>:<port>
	HeartbeatInterval time.Duration
	TokenDelay        time.Duration
	// APIToken, when set, is required as "Authorization: Bearer <token>"
	// on the inference endpoints.
	APIToken string
	// Logf receives one line per event (default: discard).
	Logf func(format string, args ...any)
	// HTTPClient sends heartbeats (default: a client with a timeout of
	// min(interval, 5s)).
	HTTPClient *http.Client
	// Key is the cluster secret (--secret-file): heartbeats are signed with
	// it, and when APIToken is empty the bearer token is derived from it
	// for HiveID, as the queen derives it (auth.Key.WorkerToken).
	Key *auth.Key
}

var deviceRE = regexp.MustCompile(`^(cpu|gpu):[0-9]{1,3}$`)

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.WorkerID) == "" {
		return errors.New("--worker-id is required")
	}
	if c.ModelPath == "" {
		return errors.New("--model is required")
	}
	if c.Device == "" {
		c.Device = "cpu:0"
	}
	if !deviceRE.MatchString(c.Device) {
		return fmt.Errorf("--device %q: want cpu:N or gpu:N", c.Device)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("--port %d out of range 1..65535", c.Port)
	}
	if c.ListenHost == "" {
		c.ListenHost = DefaultListenHost
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatInterval < 0 {
		return fmt.Errorf("--heartbeat-interval %s must be positive", c.HeartbeatInterval)
	}
	if err := config.CheckMinDuration("--heartbeat-interval", c.HeartbeatInterval, config.MinHeartbeatInterval); err != nil {
		return err
	}
	if c.TokenDelay < 0 {
		return fmt.Errorf("--token-delay %s must not be negative", c.TokenDelay)
	}
	for name, v := range map[string]string{"--queen-url": c.QueenURL, "--advertise-url": c.AdvertiseURL} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s %q: want an http(s)://host:port URL", name, v)
		}
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Key != nil && c.APIToken == "" {
		if c.HiveID == "" {
			return errors.New("--hive-id is required with --secret-file (the bearer token is derived for it)")
		}
		c.APIToken = c.Key.WorkerToken(c.HiveID)
	}
	return nil
}

// Server is a running worker's HTTP side and heartbeat sender.
type Server struct {
	cfg      Config
	model    *model.Model
	modelID  string
	engine   *jobs.Engine
	hc       *http.Client
	active   atomic.Int64
	sentMu   sync.Mutex
	lastSent time.Time // strictly increasing heartbeat timestamps
	stopping atomic.Bool
	advURL   atomic.Value // string
}

// New returns a worker serving m. cfg must have passed Validate.
func New(cfg Config, m *model.Model) *Server {
	s := &Server{cfg: cfg, model: m}
	s.modelID = ResolveModelID(cfg.ModelID, cfg.ModelPath, m)
	s.engine = jobs.NewEngine(jobs.Options{Logf: cfg.Logf})
	s.hc = cfg.HTTPClient
	if s.hc == nil {
		s.hc = &http.Client{Timeout: min(cfg.HeartbeatInterval, 5*time.Second)}
	}
	if cfg.Key != nil {
		hc := *s.hc
		hc.Transport = &auth.Transport{Key: cfg.Key, Base: s.hc.Transport}
		s.hc = &hc
	}
	s.advURL.Store(cfg.AdvertiseURL)
	return s
}

// ModelID returns the id the worker reports for its model.
func (s *Server) ModelID() string { return s.modelID }

// ResolveModelID picks the model id to report: explicit, else the "id"
// field of metadata.json beside path, else the name stored in the model,
// else path itself.
func ResolveModelID(explicit, path string, m *model.Model) string {
	if explicit != "" {
		return explicit
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "metadata.json")); err == nil {
		var md struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(b, &md) == nil && md.ID != "" {
			return md.ID
		}
	}
	if m != nil && m.Name != "" {
		return m.Name
	}
	return path
}

// Handler returns the worker's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /v1/inference", s.auth(s.submit))
	mux.HandleFunc("GET /v1/inference/{id}", s.auth(func(w http.ResponseWriter, r *http.Request) {
		j, ok := s.engine.Get(r.PathValue("id"))
		if !ok {
			jobs.WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("unknown job %q", r.PathValue("id")))
			return
		}
		jobs.WriteJSON(w, http.StatusOK, j.Status())
	}))
	mux.HandleFunc("DELETE /v1/inference/{id}", s.auth(func(w http.ResponseWriter, r *http.Request) {
		s.engine.ServeCancel(w, r.PathValue("id"))
	}))
	mux.HandleFunc("GET /v1/inference/{id}/stream", s.auth(func(w http.ResponseWriter, r *http.Request) {
		s.engine.ServeStream(w, r, r.PathValue("id"))
	}))
	// Everything else gets a JSON error too: 405 for a known path with the
	// wrong method, else 404.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/health" || p == "/v1/inference" || strings.HasPrefix(p, "/v1/inference/") {
			jobs.WriteError(w, http.StatusMethodNotAllowed, api.CodeInvalidRequest, fmt.Sprintf("method %s not allowed on %s", r.Method, p))
			return
		}
		jobs.WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	status := api.WorkerReady
	if s.stopping.Load() {
		status = api.WorkerStopping
	}
	jobs.WriteJSON(w, http.StatusOK, api.WorkerHealth{Status: status, WorkerID: s.cfg.WorkerID, Model: s.modelID, Device: s.cfg.Device})
}

// auth enforces the bearer token when one is configured. The comparison
// is on the whole header so "Bearer" with another token or scheme fails.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.APIToken == "" {
		return h
	}
	want := "Bearer " + s.cfg.APIToken
	return func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		if got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="llm-worker-rbee"`)
			jobs.WriteError(w, http.StatusUnauthorized, api.CodeUnauthorized, "missing Authorization: Bearer <token> header")
			return
		}
		if !constantTimeEqual(got, want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="llm-worker-rbee", error="invalid_token"`)
			jobs.WriteError(w, http.StatusUnauthorized, api.CodeUnauthorized, "invalid bearer token")
			return
		}
		h(w, r)
	}
}

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range len(a) {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// DecodeInferenceRequest strictly decodes and validates a POST
// /v1/inference body: unknown, missing ("prompt", "max_tokens") and
// ill-typed fields and out-of-range values are *api.RequestError values
// naming the field.
func DecodeInferenceRequest(body []byte) (api.InferenceRequest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return api.InferenceRequest{}, &api.RequestError{Msg: "malformed JSON: " + err.Error()}
	}
	if raw == nil {
		return api.InferenceRequest{}, &api.RequestError{Msg: "body must be a JSON object"}
	}
	for _, f := range []string{"prompt", "max_tokens"} {
		if v, ok := raw[f]; !ok || string(v) == "null" {
			return api.InferenceRequest{}, &api.RequestError{Msg: fmt.Sprintf("missing field %q", f)}
		}
	}
	var req api.InferenceRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return req, &api.RequestError{Msg: fmt.Sprintf("field %q must be %s, got %s", te.Field, jsonType(te.Type.String()), te.Value)}
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return req, &api.RequestError{Msg: "unknown field " + f}
		}
		return req, &api.RequestError{Msg: "invalid body: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, &api.RequestError{Msg: "body has trailing data after the JSON object"}
	}
	switch {
	case req.MaxTokens < api.MinMaxTokens || req.MaxTokens > api.MaxMaxTokens:
		return req, &api.RequestError{Msg: fmt.Sprintf("field \"max_tokens\" must be %d..%d, got %d", api.MinMaxTokens, api.MaxMaxTokens, req.MaxTokens)}
	case req.Temperature < 0 || req.Temperature > MaxTemperature:
		return req, &api.RequestError{Msg: fmt.Sprintf("field \"temperature\" must be 0..%g, got %g", MaxTemperature, req.Temperature)}
	case len(req.Stop) > MaxStops:
		return req, &api.RequestError{Msg: fmt.Sprintf("field \"stop\" has %d entries, at most %d allowed", len(req.Stop), MaxStops)}
	}
	for i, s := range req.Stop {
		if s == "" || len(s) > MaxStopBytes {
			return req, &api.RequestError{Msg: fmt.Sprintf("field \"stop\"[%d] must be 1..%d bytes", i, MaxStopBytes)}
		}
	}
	return req, nil
}

func jsonType(goType string) string {
	switch goType {
	case "string":
		return "a string"
	case "int", "uint64":
		return "a non-negative integer"
	case "float64":
		return "a number"
	case "[]string":
		return "an array of strings"
	}
	return goType
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if s.stopping.Load() {
		jobs.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "worker is shutting down")
		return
	}
	body, ok := jobs.ReadJSONBody(w, r)
	if !ok {
		return
	}
	req, err := DecodeInferenceRequest(body)
	if err != nil {
		jobs.WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
		return
	}
	j, err := s.engine.TrySubmit("inference", s.generate(req))
	if err != nil {
		jobs.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error())
		return
	}
	s.cfg.Logf("inference %s: accepted max_tokens=%d temperature=%g seed=%d prompt_chars=%d", j.ID(), req.MaxTokens, req.Temperature, req.Seed, len([]rune(req.Prompt)))
	jobs.WriteJSON(w, http.StatusOK, api.JobAccepted{JobID: j.ID(), SSEURL: "/v1/inference/" + j.ID() + "/stream"})
}

// generate is the job: one token event per character (paced by
// TokenDelay so long streams can be watched and cancelled), then one end
// event. A cancelled generation still reports how far it got in its end
// event before [CANCELLED].
func (s *Server) generate(req api.InferenceRequest) jobs.Func {
	return func(ctx context.Context, j *jobs.Job) error {
		s.active.Add(1)
		defer s.active.Add(-1)
		var timer *time.Timer
		if s.cfg.TokenDelay > 0 {
			timer = time.NewTimer(0)
			<-timer.C
			defer timer.Stop()
		}
		emit := func(tok string, i int) error {
			if timer != nil && i > 0 {
				timer.Reset(s.cfg.TokenDelay)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			j.Emit(api.EventToken, api.Token{T: tok, I: i})
			return nil
		}
		n, reason, err := s.model.Generate(ctx, req.Prompt, req.MaxTokens, req.Temperature, req.Seed, req.Stop, emit)
		j.Emit(api.EventEnd, api.End{TokensOut: n, StopReason: reason})
		s.cfg.Logf("inference %s: %d tokens, %s", j.ID(), n, reason)
		return err
	}
}

// State is the heartbeat state: stopping, busy while generating, else ready.
func (s *Server) State() string {
	switch {
	case s.stopping.Load():
		return api.WorkerStopping
	case s.active.Load() > 0:
		return api.WorkerBusy
	}
	return api.WorkerReady
}

// AdvertisedURL is the URL the worker tells the queen.
func (s *Server) AdvertisedURL() string { v, _ := s.advURL.Load().(string); return v }

// Heartbeat posts one heartbeat with the given state to the queen.
func (s *Server) Heartbeat(ctx context.Context, state string) error {
	if s.cfg.QueenURL == "" {
		return nil
	}
	hb := api.WorkerHeartbeat{
		WorkerID: s.cfg.WorkerID, HiveID: s.cfg.HiveID, Model: s.modelID, Device: s.cfg.Device,
		URL: s.AdvertisedURL(), State: state, Timestamp: s.sendTime(),
	}
	return client.New(s.cfg.QueenURL, client.WithHTTPClient(s.hc)).
		Do(ctx, http.MethodPost, "/v1/worker-heartbeat", hb, nil)
}

// sendTime is the wall clock, but strictly later than the previous
// heartbeat's: the queen ignores a heartbeat not newer than the last one it
// accepted from this worker.
func (s *Server) sendTime() time.Time {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	t := time.Now().UTC()
	if !t.After(s.lastSent) {
		t = s.lastSent.Add(time.Microsecond)
	}
	s.lastSent = t
	return t
}

// heartbeatLoop sends one heartbeat now and then every interval until ctx
// ends. A failed heartbeat is logged and never blocks serving.
func (s *Server) heartbeatLoop(ctx context.Context) {
	if s.cfg.QueenURL == "" {
		return
	}
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		state := s.State()
		if err := s.Heartbeat(ctx, state); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logf("heartbeat to %s failed: %q", s.cfg.QueenURL, err.Error())
			failing = true
		} else if failing {
			s.cfg.Logf("heartbeat to %s ok again (state %s)", s.cfg.QueenURL, state)
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// defaultAdvertise is http://<hostname>:<port>: the host's name, never
// localhost, so the queen can reach the worker from another machine.
func defaultAdvertise(port int) string {
	h, err := os.Hostname()
	if err != nil || h == "" || h == "localhost" {
		h = firstNonLoopbackIP()
	}
	return "http://" + net.JoinHostPort(h, strconv.Itoa(port))
}

func firstNonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return "0.0.0.0"
}

// Run loads the model, listens, serves and heartbeats until ctx is done,
// then shuts down gracefully: a "stopping" heartbeat, running generations
// end with [CANCELLED], streams get their terminator, and Run returns nil
// within ShutdownTimeout. A model that cannot be loaded or a port that
// cannot be bound is an error at once.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m, err := model.Load(cfg.ModelPath)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if cfg.AdvertiseURL == "" {
		cfg.AdvertiseURL = defaultAdvertise(port)
	}
	s := New(cfg, m)
	cfg.Logf("worker %s: model %s (%s, order %d, %d contexts) on %s, listening on %s, advertised as %s",
		cfg.WorkerID, s.modelID, cfg.ModelPath, m.Order(), m.Contexts(), cfg.Device, ln.Addr(), cfg.AdvertiseURL)
	return s.Serve(ctx, ln)
}

// Serve serves on ln and heartbeats until ctx is done, then stops
// gracefully (see Run).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpsrv.Server(s.Handler(), httpsrv.Limits{})
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpsrv.Serve(srv, ln, httpsrv.Limits{}) }()
	hbCtx, hbCancel := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); s.heartbeatLoop(hbCtx) }()

	select {
	case err := <-serveErr:
		hbCancel()
		<-hbDone
		s.engine.Close(time.Second)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.cfg.Logf("worker %s: shutting down", s.cfg.WorkerID)
	s.stopping.Store(true)
	hbCancel()
	<-hbDone
	deadline := time.Now().Add(ShutdownTimeout)
	if s.cfg.QueenURL != "" {
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.Heartbeat(hctx, api.WorkerStopping); err != nil {
			s.cfg.Logf("stopping heartbeat failed: %v", err)
		}
		cancel()
	}
	// Cancel generations first so open streams receive [CANCELLED] and
	// their handlers return; then Shutdown finds idle connections.
	if err := s.engine.Close(time.Until(deadline) / 2); err != nil {
		s.cfg.Logf("worker %s: %v", s.cfg.WorkerID, err)
	}
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.cfg.Logf("worker %s: forced close: %v", s.cfg.WorkerID, err)
		srv.Close()
	}
	s.cfg.Logf("worker %s: stopped", s.cfg.WorkerID)
	return nil
}
