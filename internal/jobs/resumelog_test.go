package jobs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// A stream opened with Last-Event-ID is logged as a resume (with the event
// it resumed after); a stream read from the start is not.
func TestStreamResumeIsLogged(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	e := NewEngine(Options{Logf: func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
	}})
	defer e.Close(time.Second)
	j := e.Submit("status", func(ctx context.Context, j *Job) error {
		for i := range 3 {
			j.Emit(api.EventToken, api.Token{T: "x", I: i})
		}
		return nil
	})
	<-j.Done()
	mux := http.NewServeMux()
	e.Mount(mux, &dispatcher{})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(lastID string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/jobs/"+j.ID()+"/stream", nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resumes := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var rs []string
		for _, l := range lines {
			if strings.Contains(l, "stream resumed") {
				rs = append(rs, l)
			}
		}
		return rs
	}
	get("")
	if rs := resumes(); len(rs) != 0 {
		t.Fatalf("a stream read from the start was logged as a resume: %q", rs)
	}
	get("2")
	rs := resumes()
	if len(rs) != 1 || !strings.Contains(rs[0], "job "+j.ID()+": stream resumed after event 2 by ") {
		t.Fatalf("resume lines %q; want one naming %s and event 2", rs, j.ID())
	}
}
