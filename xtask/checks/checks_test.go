package checks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/jobs"
)

type ops struct{}

func (ops) Specs() api.OpSpecs {
	return api.OpSpecs{"status": {}, "model_get": {Required: []string{"model"}}}
}
func (ops) Prepare(req api.JobRequest) (jobs.Func, error) {
	return func(ctx context.Context, j *jobs.Job) error {
		if req.Operation == "model_get" {
			return errors.New("model " + req.Model + " is not on hive-1")
		}
		j.Result(map[string]string{"ok": "yes"})
		return nil
	}, nil
}

func TestAwaitReportsLastSeen(t *testing.T) {
	old := PollInterval
	PollInterval = time.Millisecond
	defer func() { PollInterval = old }()
	err := Await(context.Background(), 20*time.Millisecond, "hive-1 online", func(context.Context) (bool, string, error) {
		return false, "hive-1 is offline; want online", nil
	})
	if err == nil || !strings.Contains(err.Error(), "hive-1 is offline; want online") {
		t.Fatalf("err = %v", err)
	}
	if err := Await(context.Background(), 0, "x", nil); err == nil {
		t.Fatal("zero timeout accepted")
	}
	n := 0
	if err := Await(context.Background(), time.Second, "third try", func(context.Context) (bool, string, error) { n++; return n == 3, "", nil }); err != nil {
		t.Fatal(err)
	}
}

func TestHistoryNothingLost(t *testing.T) {
	e := jobs.NewEngine(jobs.Options{})
	defer e.Close(time.Second)
	mux := http.NewServeMux()
	e.Mount(mux, ops{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	q := client.New(srv.URL)
	ctx := context.Background()
	var h History
	if _, err := h.Run(ctx, q, api.JobRequest{Operation: "status"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, q, api.JobRequest{Operation: "model_get", Model: "a/b:c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, q, api.JobRequest{Operation: "nope"}); err == nil {
		t.Fatal("bad op accepted")
	}
	if err := h.CheckNothingLost(ctx, q); err != nil {
		t.Fatal(err)
	}
	// A record that disagrees with the server is caught.
	h.add(Entry{Op: "status", JobID: h.Entries()[0].JobID, Accepted: true, Outcome: h.Entries()[1].Outcome})
	if err := h.CheckNothingLost(ctx, q); err == nil || !strings.Contains(err.Error(), "client saw") {
		t.Fatalf("inconsistency not caught: %v", err)
	}
	out := h.Entries()[0].Outcome
	if r, err := Result[map[string]string](out); err != nil || r["ok"] != "yes" {
		t.Fatalf("result %v %v", r, err)
	}
}
