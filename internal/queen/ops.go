package queen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/sse"
)

// Specs are the queen's operations and their fields: api.QueenOps.
var Specs = api.QueenOps

// Specs implements jobs.Dispatcher.
func (s *Server) Specs() api.OpSpecs { return Specs }

func badRequest(format string, args ...any) error {
	return &api.RequestError{Msg: fmt.Sprintf(format, args...)}
}

var deviceRE = regexp.MustCompile(`^(cpu|gpu):[0-9]{1,4}$`)

// DefaultTemperature is used by infer when the request has none.
const DefaultTemperature = 0.7

// Prepare implements jobs.Dispatcher: everything that can be checked
// before the job starts is answered 400 here, not as a failed stream.
func (s *Server) Prepare(req api.JobRequest) (jobs.Func, error) {
	switch req.Operation {
	case api.OpStatus:
		return func(ctx context.Context, j *jobs.Job) error {
			j.Result(api.StatusResult{Hives: s.reg.Hives(), Workers: s.reg.Workers()})
			return nil
		}, nil
	case api.OpHiveList:
		return func(ctx context.Context, j *jobs.Job) error {
			j.Result(api.HiveListResult{Hives: s.reg.Hives()})
			return nil
		}, nil
	case api.OpHiveGet:
		if _, err := s.target(req.Alias); err != nil {
			return nil, err
		}
		return func(ctx context.Context, j *jobs.Job) error {
			h, _ := s.reg.Hive(req.Alias)
			j.Result(h)
			return nil
		}, nil
	case api.OpHiveStatus:
		t, err := s.target(req.Alias)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, j *jobs.Job) error { return s.hiveStatus(ctx, j, t) }, nil
	case api.OpHiveRefreshCapabilities:
		t, err := s.target(req.Alias)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, j *jobs.Job) error { return s.refreshCapabilities(ctx, j, t) }, nil
	case api.OpHiveInstall, api.OpHiveUninstall, api.OpHiveStart, api.OpHiveStop:
		h, ok := s.hives[req.Alias]
		if !ok {
			return nil, s.unknownHive(req.Alias, true)
		}
		switch req.Operation {
		case api.OpHiveInstall:
			return func(ctx context.Context, j *jobs.Job) error { return s.hiveInstall(ctx, j, h, req.Force) }, nil
		case api.OpHiveUninstall:
			return func(ctx context.Context, j *jobs.Job) error { return s.hiveUninstall(ctx, j, h) }, nil
		case api.OpHiveStart:
			return func(ctx context.Context, j *jobs.Job) error { return s.hiveStart(ctx, j, h) }, nil
		default:
			return func(ctx context.Context, j *jobs.Job) error { return s.hiveStop(ctx, j, h) }, nil
		}
	case api.OpWorkerSpawn, api.OpWorkerProcessList, api.OpWorkerProcessGet, api.OpWorkerProcessDelete,
		api.OpModelDownload, api.OpModelList, api.OpModelGet, api.OpModelDelete:
		t, err := s.target(req.HiveID)
		if err != nil {
			return nil, err
		}
		if req.Operation == api.OpWorkerSpawn && !deviceRE.MatchString(req.Device) {
			return nil, badRequest("field \"device\" must look like \"cpu:0\" or \"gpu:1\", got %q", req.Device)
		}
		fwd := req
		fwd.HiveID = "" // the hive's own operations do not take hive_id
		return func(ctx context.Context, j *jobs.Job) error {
			err := withDeadline(ctx, s.forwardTimeout(), "forwarded "+req.Operation, "[limits] forward_timeout",
				func(ctx context.Context) error { return s.forward(ctx, j, t, fwd) })
			if err != nil {
				return err
			}
			if req.Operation == api.OpWorkerProcessDelete {
				s.reg.RemoveWorker(req.WorkerID) // do not schedule onto it until it heartbeats again
			}
			return nil
		}, nil
	case api.OpInfer:
		if req.MaxTokens < api.MinMaxTokens || req.MaxTokens > api.MaxMaxTokens {
			return nil, badRequest("field \"max_tokens\" must be between %d and %d, got %d", api.MinMaxTokens, api.MaxMaxTokens, req.MaxTokens)
		}
		if req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 100) {
			return nil, badRequest("field \"temperature\" must be between 0 and 100, got %g", *req.Temperature)
		}
		// hive_id is not checked against hives.conf: workers register
		// their hive themselves, and "no ready worker … on hive X" says it.
		return func(ctx context.Context, j *jobs.Job) error {
			return withDeadline(ctx, s.inferTimeout(), "infer", "[limits] infer_timeout",
				func(ctx context.Context) error { return s.infer(ctx, j, req) })
		}, nil
	}
	return nil, badRequest("operation %q is not implemented by the queen", req.Operation)
}

// hiveTarget is a hive the queen can talk to over HTTP.
type hiveTarget struct {
	alias string
	url   string // http://hostname:hive_port
}

func (s *Server) target(alias string) (hiveTarget, error) {
	if h, ok := s.hives[alias]; ok {
		return hiveTarget{alias: alias, url: h.URL()}, nil
	}
	if u := s.reg.HiveURL(alias); u != "" {
		return hiveTarget{alias: alias, url: strings.TrimRight(u, "/")}, nil
	}
	return hiveTarget{}, s.unknownHive(alias, false)
}

func (s *Server) unknownHive(alias string, configuredOnly bool) error {
	known := make([]string, 0, len(s.hives))
	for a := range s.hives {
		known = append(known, a)
	}
	sort.Strings(known)
	if _, learned := s.reg.Hive(alias); learned && configuredOnly {
		return badRequest("hive %q is not in hives.conf (it only sent heartbeats), so it cannot be managed over SSH", alias)
	}
	return badRequest("unknown hive %q (configured: %s)", alias, strings.Join(known, ", "))
}

func (t hiveTarget) errorf(cause string) error {
	return fmt.Errorf("%s (%s): %s", t.alias, t.url, cause)
}

func (s *Server) hiveClient(t hiveTarget) *client.Client {
	return client.New(t.url,
		client.WithHTTPClient(s.hhttp.short),
		client.WithStreamClient(s.hhttp.stream),
		client.WithReconnects(s.http.retries),
		client.WithoutEventLog(),
		// The transport's idle cut fires first and names the cause.
		client.WithIdleTimeout(s.http.idleTimeout()+5*time.Second),
	)
}

// narrator turns retries of a job's HTTP calls into narration (and log lines).
func (s *Server) narrator(j *jobs.Job, hive string) func(string) {
	return func(msg string) { s.narrate(j, "retry", hive, "%s", msg) }
}

func (s *Server) narrate(j *jobs.Job, action, hive, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	j.Narrate(api.Narration{Actor: "queen", Action: action, Message: msg, Hive: hive})
	s.logf("job %s: %q", j.ID(), msg)
}

// probe asks GET /health once with a short timeout and classifies the answer.
func (s *Server) probe(ctx context.Context, url string) (state, probe string) {
	ctx, cancel := context.WithTimeout(ctx, s.http.probeTO)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return api.HiveUnreachable, err.Error()
	}
	resp, err := s.http.probe.Do(req)
	if err != nil {
		switch {
		case isConnRefused(err):
			return api.HiveOffline, "connection refused"
		case isTimeout(err):
			return api.HiveUnreachable, "timeout"
		}
		return api.HiveUnreachable, describeErr(err, s.http.probeTO)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.HiveOffline, fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return api.HiveOnline, "ok"
}

func (s *Server) hiveStatus(ctx context.Context, j *jobs.Job, t hiveTarget) error {
	state, probe := s.probe(ctx, t.url)
	if ctx.Err() != nil {
		return jobs.ErrCancelled
	}
	if state == api.HiveOnline {
		s.reg.MarkHiveSeen(t.alias)
	}
	info, _ := s.reg.Hive(t.alias)
	info.State = state
	s.narrate(j, "hive_status", t.alias, "%s (%s): health probe %s", t.alias, t.url, probe)
	j.Result(api.HiveStatus{HiveInfo: info, Probe: probe})
	return nil
}

func (s *Server) refreshCapabilities(ctx context.Context, j *jobs.Job, t hiveTarget) error {
	caps, err := s.fetchCapabilities(ctx, j, t)
	if err != nil {
		return err
	}
	j.Result(caps)
	return nil
}

func (s *Server) fetchCapabilities(ctx context.Context, j *jobs.Job, t hiveTarget) (api.Capabilities, error) {
	caps, err := s.hiveClient(t).Capabilities(withNarrator(ctx, s.narrator(j, t.alias)))
	if err != nil {
		if ctx.Err() != nil {
			return caps, jobs.ErrCancelled
		}
		return caps, t.errorf("GET /capabilities: " + describeErr(err, s.http.timeout))
	}
	s.reg.SetDevices(t.alias, caps.Devices)
	s.reg.MarkHiveSeen(t.alias)
	s.narrate(j, "capabilities", t.alias, "%s has %d devices", t.alias, len(caps.Devices))
	return caps, nil
}

// forward runs req on hive t and re-emits its events on j; the queen's
// terminator is derived from the hive's.
func (s *Server) forward(ctx context.Context, j *jobs.Job, t hiveTarget, req api.JobRequest) error {
	ctx = withNarrator(ctx, s.narrator(j, t.alias))
	c := s.hiveClient(t)
	// The submit is not cut short by a cancel: a job the hive accepted must
	// be known here so it can be cancelled there too.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.http.timeout*time.Duration(s.http.retries+2))
	acc, err := c.Submit(sctx, req)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return jobs.ErrCancelled
		}
		cause := describeErr(err, s.http.timeout)
		if mayHaveArrived(err) {
			cause += unanswered
		}
		return t.errorf(cause)
	}
	if ctx.Err() != nil {
		s.cancelRemote(c, t.alias, acc.JobID)
		return jobs.ErrCancelled
	}
	s.narrate(j, "forward", t.alias, "forwarded %s to %s as %s", req.Operation, t.alias, acc.JobID)
	out, err := c.Follow(ctx, acc.JobID, 0, func(ev sse.Event) error {
		s.reemit(j, ev, t.alias)
		return nil
	})
	if ctx.Err() != nil {
		s.cancelRemote(c, t.alias, acc.JobID)
		return jobs.ErrCancelled
	}
	if err != nil {
		// Our job ends [ERROR]; the hive's must not run on unseen (a
		// download nobody can cancel any more would block the next one).
		s.cancelRemote(c, t.alias, acc.JobID)
		return t.errorf("lost the job stream of " + acc.JobID + ": " + followCause(err, s.http.timeout))
	}
	switch out.Kind {
	case sse.Done:
		return nil
	case sse.Cancelled:
		return jobs.ErrCancelled
	}
	msg := out.Error
	if msg == "" {
		msg = "failed without a message"
	}
	// A hive names itself in its own errors; say the alias once.
	if strings.HasPrefix(msg, t.alias+": ") {
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %s", t.alias, msg)
}

// followCause strips client.Follow's "following <id>: " prefix.
func followCause(err error, timeout time.Duration) string {
	if errors.Is(err, client.ErrNoTerminator) {
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "following ") {
			msg = msg[i+2:]
		}
		return msg
	}
	return describeErr(err, timeout)
}

// cancelRemote cancels a forwarded job, with its own short deadline because
// the job's context is already done.
func (s *Server) cancelRemote(c *client.Client, who, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), min(s.http.timeout, 3*time.Second))
	defer cancel()
	if _, err := c.Cancel(ctx, id); err != nil && !client.IsStatus(err, http.StatusConflict) {
		s.logf("cancel %s on %s: %q", id, who, err.Error())
		return
	}
	s.logf("cancelled %s on %s", id, who)
}

// reemit copies a hive or worker event onto the queen's job; narration
// gains the hive's alias.
func (s *Server) reemit(j *jobs.Job, ev sse.Event, hive string) {
	if ev.Name == api.EventNarration {
		var m map[string]any
		if json.Unmarshal([]byte(ev.Data), &m) == nil && m != nil {
			m["hive"] = hive
			j.Emit(ev.Name, m)
			return
		}
	}
	name := ev.Name
	if name == "" {
		name = "message" // an unnamed non-terminator: keep it, but never as a terminator
	}
	j.EmitRaw(name, ev.Data)
}
