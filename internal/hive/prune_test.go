package hive

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// Workers that exit are reaped into the table as "exited", but only the
// newest MaxExitedChildren stay; a live worker is never dropped.
func TestExitedChildrenPruned(t *testing.T) {
	s, _, _ := newTestHive(t, nil)
	base := time.Now().UTC()
	live := &child{exited: make(chan struct{}), info: api.WorkerProcess{WorkerID: "w-live", StartedAt: base.Add(-time.Hour)}}
	s.mu.Lock()
	s.children["w-live"] = live
	s.mu.Unlock()
	const n = MaxExitedChildren + 10
	for i := range n {
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			t.Skipf("cannot run true: %v", err)
		}
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("w-%03d", i)
		c := &child{cmd: cmd, exited: make(chan struct{}),
			info: api.WorkerProcess{WorkerID: id, PID: cmd.Process.Pid, State: ChildRunning, StartedAt: base.Add(time.Duration(i) * time.Second)}}
		s.mu.Lock()
		s.children[id] = c
		s.mu.Unlock()
		s.reap(c, devnull)
	}
	list := s.Workers()
	if len(list) != MaxExitedChildren+1 {
		t.Fatalf("%d workers in the table after %d exits; want %d exited + 1 live", len(list), n, MaxExitedChildren)
	}
	if list[0].WorkerID != "w-live" {
		t.Fatalf("the live worker is gone: first is %s", list[0].WorkerID)
	}
	if first := list[1].WorkerID; first != fmt.Sprintf("w-%03d", n-MaxExitedChildren) {
		t.Fatalf("oldest exited worker kept is %s; want the newest %d kept", first, MaxExitedChildren)
	}
	s.mu.Lock()
	delete(s.children, "w-live")
	s.mu.Unlock()
}

// A heartbeat interval below the minimum is refused on the command line
// and in hive.toml, naming the flag or key and the minimum.
func TestHeartbeatIntervalMinimum(t *testing.T) {
	isolate(t)
	var stderr bytes.Buffer
	_, _, err := ParseFlags([]string{"--heartbeat-interval", "1ns"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--heartbeat-interval 1ns is below the minimum of 10ms") {
		t.Fatalf("--heartbeat-interval 1ns: %v", err)
	}
	home := isolate(t)
	writeHiveTOML(t, home, "heartbeat_interval = \"1ns\"\n")
	_, _, err = ParseFlags(nil, &stderr)
	if err == nil || !strings.Contains(err.Error(), `"heartbeat_interval": 1ns is below the minimum of 10ms`) {
		t.Fatalf("hive.toml heartbeat_interval = 1ns: %v", err)
	}
}
