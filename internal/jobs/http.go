package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
)

// KeepaliveInterval is how often a silent stream gets a ": keepalive"
// comment (PROTOCOL.md §2). A variable so tests can shorten it.
var KeepaliveInterval = 15 * time.Second

// CancelWait is how long DELETE waits for the work to stop before it
// answers 202 instead of 200. A variable so tests can shorten it.
var CancelWait = 10 * time.Second

// Dispatcher turns a validated job request into the work to run. An error
// that is an *api.RequestError is answered 400; any other error 500.
type Dispatcher interface {
	Specs() api.OpSpecs
	Prepare(req api.JobRequest) (Func, error)
}

// Mount registers the job API (POST /v1/jobs, GET /v1/jobs/{id},
// GET /v1/jobs/{id}/stream, DELETE /v1/jobs/{id}) on mux.
func (e *Engine) Mount(mux *http.ServeMux, d Dispatcher) {
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		if e.Closing() {
			WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "shutting down: not accepting jobs")
			return
		}
		body, ok := ReadJSONBody(w, r)
		if !ok {
			return
		}
		req, err := api.DecodeJobRequest(body, d.Specs())
		if err != nil {
			WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
			return
		}
		fn, err := d.Prepare(req)
		if err != nil {
			var re *api.RequestError
			if errors.As(err, &re) {
				WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
				return
			}
			WriteError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
			return
		}
		j, err := e.TrySubmit(req.Operation, fn)
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error()+"; try again when some have finished")
			return
		}
		WriteJSON(w, http.StatusOK, api.JobAccepted{JobID: j.ID(), SSEURL: "/v1/jobs/" + j.ID() + "/stream"})
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, ok := e.Get(r.PathValue("id"))
		if !ok {
			WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("unknown job %q", r.PathValue("id")))
			return
		}
		WriteJSON(w, http.StatusOK, j.Status())
	})
	mux.HandleFunc("DELETE /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		e.ServeCancel(w, r.PathValue("id"))
	})
	mux.HandleFunc("GET /v1/jobs/{id}/stream", func(w http.ResponseWriter, r *http.Request) {
		e.ServeStream(w, r, r.PathValue("id"))
	})
}

// ServeCancel answers a cancel request for job id.
func (e *Engine) ServeCancel(w http.ResponseWriter, id string) {
	j, err := e.Cancel(id, CancelWait)
	switch {
	case errors.Is(err, ErrNotFound):
		WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("unknown job %q", id))
	case errors.Is(err, ErrFinished):
		WriteError(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("job %s already finished (%s)", id, j.State()))
	case !j.State().Finished():
		// The work has not stopped within the wait: the cancel stands and
		// the stream will end [CANCELLED], but say what is true now.
		WriteJSON(w, http.StatusAccepted, api.CancelAnswer{JobID: id, State: j.State()})
	default:
		WriteJSON(w, http.StatusOK, api.CancelAnswer{JobID: id, State: api.StateCancelled})
	}
}

// ServeStream streams job id's events as SSE: every recorded event after
// Last-Event-ID, then live ones, with keepalive comments while silent,
// until the terminator has been sent or the client goes away.
func (e *Engine) ServeStream(w http.ResponseWriter, r *http.Request, id string) {
	j, ok := e.Get(id)
	if !ok {
		WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("unknown job %q", id))
		return
	}
	after := 0
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, fmt.Sprintf("bad Last-Event-ID %q: want a non-negative integer", v))
			return
		}
		after = n
		// A resumed stream is worth a line: it is how an operator (and a
		// test) sees that a reader reconnected instead of starting over.
		e.opts.Logf("job %s: stream resumed after event %d by %s", id, after, r.RemoteAddr)
	}
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	keepalive := time.NewTicker(KeepaliveInterval)
	defer keepalive.Stop()
	if evs, _, finished := j.EventsAfter(0); finished && after >= len(evs) {
		// Resuming at or past the terminator: send it again, so a client
		// that missed only the end still ends.
		after = len(evs) - 1
	} else if !finished && after > len(evs) {
		// Past the end of a running job: no event with a higher id than
		// the last one exists, so resume from the last one. Otherwise the
		// terminator (whose id would be at most after) is never sent.
		after = len(evs)
	}
	for {
		evs, notify, finished := j.EventsAfter(after)
		for _, ev := range evs {
			if err := sse.Write(w, ev); err != nil {
				return
			}
			after = ev.ID
		}
		if len(evs) > 0 && flusher != nil {
			flusher.Flush()
		}
		if finished { // the terminator was among evs or sent before
			return
		}
		select {
		case <-notify:
		case <-keepalive.C:
			if err := sse.WriteComment(w, "keepalive"); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		case <-r.Context().Done():
			return
		}
	}
}

// ReadJSONBody enforces the JSON content type (415) and the 1 MiB limit
// (413) and returns the body. On failure it has answered already.
func ReadJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		WriteError(w, http.StatusUnsupportedMediaType, api.CodeUnsupportedMediaType,
			fmt.Sprintf("Content-Type must be application/json, got %q", ct))
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// The server's body deadline cut a body sent too slowly.
			w.Header().Set("Connection", "close")
			WriteError(w, http.StatusRequestTimeout, api.CodeInvalidRequest, "request body not received in time")
			return nil, false
		}
		WriteError(w, http.StatusBadRequest, api.CodeInvalidRequest, "reading body: "+err.Error())
		return nil, false
	}
	if len(body) > api.MaxBodyBytes {
		WriteError(w, http.StatusRequestEntityTooLarge, api.CodePayloadTooLarge,
			fmt.Sprintf("body is over the limit of %d bytes", api.MaxBodyBytes))
		return nil, false
	}
	return body, true
}

// WriteJSON writes v as a JSON answer.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the protocol's JSON error body.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg}})
}
