package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
)

// flakyStream serves events 1..total then [DONE], but drops the connection
// after cutAfter events on the first request, and sends nothing at all
// (forcing the idle timeout) on the second when stall is set.
func flakyStream(t *testing.T, total, cutAfter int, stall bool) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		after, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		if stall && n == 2 {
			<-r.Context().Done()
			return
		}
		for id := after + 1; id <= total; id++ {
			_ = sse.Write(w, sse.Event{ID: id, Name: api.EventToken, Data: fmt.Sprintf(`{"t":"%d","i":%d}`, id, id-1)})
			if n == 1 && id == cutAfter {
				w.(http.Flusher).Flush()
				return // connection ends mid-stream
			}
		}
		_ = sse.Write(w, sse.Event{ID: total + 1, Data: api.TermDone})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestFollowResumesWithoutLossOrDuplicates(t *testing.T) {
	srv, calls := flakyStream(t, 10, 4, false)
	c := New(srv.URL)
	out, err := c.Follow(context.Background(), "job-1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Events) != 10 || out.Reconnects != 1 || calls.Load() != 2 || out.Kind != sse.Done {
		t.Fatalf("events %d reconnects %d calls %d kind %v", len(out.Events), out.Reconnects, calls.Load(), out.Kind)
	}
	for i, ev := range out.Events {
		if ev.ID != i+1 {
			t.Fatalf("event %d has id %d", i, ev.ID)
		}
	}
}

func TestFollowIdleTimeoutReconnects(t *testing.T) {
	srv, calls := flakyStream(t, 6, 2, true)
	c := New(srv.URL, WithIdleTimeout(100*time.Millisecond))
	out, err := c.Follow(context.Background(), "job-1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Events) != 6 || calls.Load() != 3 {
		t.Fatalf("events %d calls %d", len(out.Events), calls.Load())
	}
}

func TestFollowGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200) // and never a terminator
	}))
	defer srv.Close()
	c := New(srv.URL, WithReconnects(2))
	c.backoff = time.Millisecond
	_, err := c.Follow(context.Background(), "job-1", 0, nil)
	if err == nil {
		t.Fatal("want an error for a stream without terminator")
	}
}

func TestAPIErrorDecoded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		fmt.Fprint(w, `{"error":{"code":"not_found","message":"unknown job \"job-x\""}}`)
	}))
	defer srv.Close()
	_, err := New(srv.URL).Job(context.Background(), "job-x")
	ae, ok := err.(*APIError)
	if !ok || ae.Status != 404 || ae.Code != "not_found" || !IsStatus(err, 404) {
		t.Fatalf("err %#v", err)
	}
	// A 404 on a stream is final: no reconnects.
	_, err = New(srv.URL).Follow(context.Background(), "job-x", 0, nil)
	if !IsStatus(err, 404) {
		t.Fatalf("follow err %v", err)
	}
}

func TestCallbackErrorStops(t *testing.T) {
	srv, _ := flakyStream(t, 10, 100, false)
	stop := fmt.Errorf("enough")
	n := 0
	_, err := New(srv.URL).Follow(context.Background(), "job-1", 0, func(sse.Event) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Fatalf("err %v after %d events", err, n)
	}
}

func TestTokensAndResults(t *testing.T) {
	o := Outcome{Events: []sse.Event{
		{ID: 1, Name: api.EventToken, Data: `{"t":"he","i":0}`},
		{ID: 2, Name: api.EventResult, Data: `{"worker_id":"w-1","pid":4}`},
		{ID: 3, Name: api.EventToken, Data: `{"t":"llo","i":1}`},
	}}
	s, err := Tokens(o)
	if err != nil || s != "hello" {
		t.Fatalf("tokens %q %v", s, err)
	}
	rs, err := Results[api.WorkerProcess](o)
	if err != nil || len(rs) != 1 || rs[0].WorkerID != "w-1" || rs[0].PID != 4 {
		t.Fatalf("results %+v %v", rs, err)
	}
	if (Outcome{Kind: sse.Error, Error: "x"}).Terminator() != "[ERROR] x" {
		t.Fatal("terminator text")
	}
}

func TestNarrations(t *testing.T) {
	o := Outcome{Events: []sse.Event{
		{ID: 1, Name: api.EventNarration, Data: `{"actor":"queen","action":"schedule","message":"one"}`},
		{ID: 2, Name: api.EventToken, Data: `{"t":"he","i":0}`},
		{ID: 3, Name: api.EventNarration, Data: `{"actor":"hive","action":"spawn","hive":"hive-1","message":"two"}`},
	}}
	ns, err := Narrations(o)
	if err != nil || len(ns) != 2 || ns[0].Message != "one" || ns[1].Actor != "hive" || ns[1].Hive != "hive-1" {
		t.Fatalf("narrations %+v %v", ns, err)
	}
	if _, ok, err := Narration(o.Events[1]); ok || err != nil {
		t.Fatalf("token event taken for a narration: %v %v", ok, err)
	}
	o.Events = append(o.Events, sse.Event{ID: 4, Name: api.EventNarration, Data: "not json"})
	if _, err := Narrations(o); err == nil || !strings.Contains(err.Error(), "narration event 4") {
		t.Fatalf("bad narration: %v", err)
	}
}
