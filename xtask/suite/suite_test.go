package suite

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

// recorder is a testing.TB whose Fatalf/Errorf are recorded, so the
// helpers' failure paths can be tested.
type recorder struct {
	testing.TB
	mu    sync.Mutex
	msgs  []string
	fatal bool
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(f, a...))
}
func (r *recorder) Fatalf(f string, a ...any) {
	r.Errorf(f, a...)
	r.fatal = true
	runtime.Goexit()
}

// run calls fn with a recorder on its own goroutine (Fatalf ends it).
func run(t *testing.T, fn func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fn(r) }()
	wg.Wait()
	return r
}

func TestQueenConfig(t *testing.T) {
	b := QueenConfig(t, "localhost", map[string]string{"http.timeout": `"20s"`, "retries": "10"})
	s := string(b)
	if !strings.Contains(s, "\ntimeout = \"20s\"") || !strings.Contains(s, "\nretries = 10") || !strings.Contains(s, "connect_timeout") {
		t.Fatalf("variant:\n%s", s)
	}
	r := run(t, func(tb testing.TB) { QueenConfig(tb, "localhost", map[string]string{"ssh.conect_timeout": `"1s"`}) })
	if !r.fatal || !strings.Contains(r.msgs[0], `"ssh.conect_timeout" is in configs/localhost/queen.toml 0 times`) {
		t.Fatalf("typo not caught: %v", r.msgs)
	}
}

func TestMustDoneAndMustError(t *testing.T) {
	done := client.Outcome{JobID: "job-1", Kind: sse.Done}
	failed := client.Outcome{JobID: "job-2", Kind: sse.Error, Error: "hive-1 (http://hive-1:9000): connection refused"}
	if r := run(t, func(tb testing.TB) { MustDone(tb, done); MustError(tb, failed, "hive-1", "connection refused") }); len(r.msgs) != 0 {
		t.Fatalf("good outcomes failed: %v", r.msgs)
	}
	if r := run(t, func(tb testing.TB) { MustDone(tb, failed) }); !r.fatal {
		t.Fatal("MustDone accepted [ERROR]")
	}
	if r := run(t, func(tb testing.TB) { MustError(tb, done) }); !r.fatal {
		t.Fatal("MustError accepted [DONE]")
	}
	if r := run(t, func(tb testing.TB) { MustError(tb, failed, "timed out") }); r.fatal || len(r.msgs) != 1 || !strings.Contains(r.msgs[0], `does not name "timed out"`) {
		t.Fatalf("missing part not reported: %v", r.msgs)
	}
}
