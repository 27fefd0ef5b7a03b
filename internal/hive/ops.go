package hive

import (
	"context"
	"errors"
	"fmt"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/catalog"
	"github.com/rbee-dev/rbee/internal/jobs"
)

// Specs are the hive's operations. Every one also takes an optional
// hive_id (the queen forwards its request as is), which must then name
// this hive.
var Specs = api.OpSpecs{
	api.OpWorkerSpawn:         {Required: []string{"model", "device"}, Optional: []string{"hive_id"}},
	api.OpWorkerProcessList:   {Optional: []string{"hive_id"}},
	api.OpWorkerProcessGet:    {Required: []string{"worker_id"}, Optional: []string{"hive_id"}},
	api.OpWorkerProcessDelete: {Required: []string{"worker_id"}, Optional: []string{"hive_id"}},
	api.OpModelDownload:       {Required: []string{"model"}, Optional: []string{"hive_id"}},
	api.OpModelList:           {Optional: []string{"hive_id"}},
	api.OpModelGet:            {Required: []string{"model"}, Optional: []string{"hive_id"}},
	api.OpModelDelete:         {Required: []string{"model"}, Optional: []string{"hive_id"}},
}

// dispatcher implements jobs.Dispatcher for the hive.
type dispatcher struct{ s *Server }

func (d dispatcher) Specs() api.OpSpecs { return Specs }

// Prepare checks what can be checked without doing the work (hive id,
// model id syntax, device) so that such mistakes are a 400, and returns
// the job function.
func (d dispatcher) Prepare(req api.JobRequest) (jobs.Func, error) {
	fn, err := d.prepare(req)
	if err != nil {
		return nil, err
	}
	s := d.s
	// Log why a job failed: the engine only logs that it did.
	return func(ctx context.Context, j *jobs.Job) error {
		err := fn(ctx, j)
		if err != nil && ctx.Err() == nil && !errors.Is(err, jobs.ErrCancelled) {
			s.cfg.Logf("hive %s: %s %s failed: %q", s.cfg.HiveID, j.ID(), req.Operation, err.Error())
		}
		return err
	}, nil
}

func (d dispatcher) prepare(req api.JobRequest) (jobs.Func, error) {
	s := d.s
	if req.HiveID != "" && req.HiveID != s.cfg.HiveID {
		return nil, &api.RequestError{Msg: fmt.Sprintf("hive_id %q does not match this hive (%s)", req.HiveID, s.cfg.HiveID)}
	}
	if req.Model != "" {
		if _, err := catalog.ParseModelID(req.Model); err != nil {
			return nil, &api.RequestError{Msg: err.Error()}
		}
	}
	switch req.Operation {
	case api.OpWorkerSpawn:
		if err := s.checkDevice(req.Device); err != nil {
			return nil, err
		}
		return s.opWorkerSpawn(req), nil
	case api.OpWorkerProcessList:
		return func(ctx context.Context, j *jobs.Job) error {
			ws := s.Workers()
			s.narrator(j)(api.OpWorkerProcessList, "%d worker(s) on %s", len(ws), s.cfg.HiveID)
			j.Result(api.WorkerList{Workers: ws})
			return nil
		}, nil
	case api.OpWorkerProcessGet:
		return func(ctx context.Context, j *jobs.Job) error {
			c, err := s.lookup(req.WorkerID)
			if err != nil {
				return err
			}
			j.Result(c.snapshot())
			return nil
		}, nil
	case api.OpWorkerProcessDelete:
		return s.opWorkerDelete(req), nil
	case api.OpModelDownload:
		return s.opModelDownload(req), nil
	case api.OpModelList:
		return func(ctx context.Context, j *jobs.Job) error {
			ms, err := s.cat.List()
			if err != nil {
				return err
			}
			s.narrator(j)(api.OpModelList, "%d model(s) on %s", len(ms), s.cfg.HiveID)
			j.Result(api.ModelList{Models: ms})
			return nil
		}, nil
	case api.OpModelGet:
		return func(ctx context.Context, j *jobs.Job) error {
			m, err := s.cat.Get(req.Model)
			if errors.Is(err, catalog.ErrNotFound) {
				return fmt.Errorf("model %s is not on %s", req.Model, s.cfg.HiveID)
			}
			if err != nil {
				return err
			}
			j.Result(m)
			return nil
		}, nil
	case api.OpModelDelete:
		return s.opModelDelete(req), nil
	}
	return nil, &api.RequestError{Msg: fmt.Sprintf("operation %q is not handled by a hive", req.Operation)}
}

// narrator returns a function that emits a narration event for the job
// (actor "hive", hive = this hive's id) and logs the same line.
func (s *Server) narrator(j *jobs.Job) func(action, format string, args ...any) {
	return func(action, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		s.cfg.Logf("hive %s: %s %s: %q", s.cfg.HiveID, j.ID(), action, msg)
		j.Narrate(api.Narration{Actor: "hive", Action: action, Message: msg, Hive: s.cfg.HiveID})
	}
}

func (s *Server) opWorkerSpawn(req api.JobRequest) jobs.Func {
	return func(ctx context.Context, j *jobs.Job) error {
		say := s.narrator(j)
		m, err := s.cat.Get(req.Model)
		if errors.Is(err, catalog.ErrNotFound) {
			return fmt.Errorf("model %s is not on %s; run model_download first", req.Model, s.cfg.HiveID)
		}
		if err != nil {
			return err
		}
		say(api.OpWorkerSpawn, "spawning a worker for %s on %s", req.Model, req.Device)
		w, err := s.spawn(ctx, m.ID, m.Path, req.Device, say)
		if err != nil {
			return err
		}
		say("worker_ready", "worker %s is ready at %s (pid %d, device %s)", w.WorkerID, w.URL, w.PID, w.Device)
		j.Result(w)
		return nil
	}
}

func (s *Server) opWorkerDelete(req api.JobRequest) jobs.Func {
	return func(ctx context.Context, j *jobs.Job) error {
		say := s.narrator(j)
		c, err := s.lookup(req.WorkerID)
		if err != nil {
			return err
		}
		if c.live() {
			say(api.OpWorkerProcessDelete, "stopping worker %s (pid %d) with SIGTERM (SIGKILL after %s)", req.WorkerID, c.info.PID, s.cfg.StopGrace)
		}
		// Stopping is bounded (grace + 2 s) and is not abandoned half-way
		// when the job is cancelled: a half-stopped worker helps nobody.
		w, err := s.deleteWorker(req.WorkerID)
		if err != nil {
			return err
		}
		code := "?"
		if w.ExitCode != nil {
			code = fmt.Sprint(*w.ExitCode)
		}
		say("worker_stopped", "worker %s stopped (exit code %s) and removed", w.WorkerID, code)
		j.Result(w)
		return nil
	}
}

func (s *Server) opModelDownload(req api.JobRequest) jobs.Func {
	return func(ctx context.Context, j *jobs.Job) error {
		say := s.narrator(j)
		if m, err := s.cat.Get(req.Model); err == nil {
			say(api.OpModelDownload, "model %s is already on %s (%d bytes, sha256 %s)", m.ID, s.cfg.HiveID, m.Size, m.SHA256)
			j.Result(m)
			return nil
		}
		say(api.OpModelDownload, "downloading %s from %s", req.Model, s.cat.Endpoint())
		first := true
		m, err := s.cat.Download(ctx, req.Model, func(p catalog.Progress) {
			if first && p.Resumed > 0 {
				say("download_resume", "resuming %s at byte %d", req.Model, p.Resumed)
			}
			first = false
			switch {
			case p.Done:
				say("download_progress", "%s: 100%% (%d bytes)", req.Model, p.Bytes)
			case p.Total > 0:
				say("download_progress", "%s: %d%% (%d of %d bytes)", req.Model, p.Bytes*100/p.Total, p.Bytes, p.Total)
			default:
				say("download_progress", "%s: %d bytes", req.Model, p.Bytes)
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				return jobs.ErrCancelled
			}
			return fmt.Errorf("%s: %w", s.cfg.HiveID, err)
		}
		say("download_done", "model %s is in the catalog of %s (%d bytes, sha256 %s)", m.ID, s.cfg.HiveID, m.Size, m.SHA256)
		j.Result(m)
		return nil
	}
}

func (s *Server) opModelDelete(req api.JobRequest) jobs.Func {
	return func(ctx context.Context, j *jobs.Job) error {
		say := s.narrator(j)
		m, partial, err := s.cat.Delete(req.Model)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			return fmt.Errorf("model %s is not on %s", req.Model, s.cfg.HiveID)
		case err != nil:
			return fmt.Errorf("%s: %w", s.cfg.HiveID, err)
		}
		if partial {
			say(api.OpModelDelete, "removed a partial download of %s", req.Model)
		} else {
			say(api.OpModelDelete, "deleted model %s (%d bytes)", m.ID, m.Size)
		}
		j.Result(m)
		return nil
	}
}
