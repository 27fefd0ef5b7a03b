package hive

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/rbee-dev/rbee/internal/api"
)

// Child states in the hive's table (api.WorkerProcess.State).
const (
	ChildStarting = "starting"
	ChildRunning  = "running"
	ChildExited   = "exited"
)

// child is one worker process the hive started.
type child struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed after cmd.Wait returned

	mu   sync.Mutex
	info api.WorkerProcess
}

func (c *child) snapshot() api.WorkerProcess {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.info
	if w.ExitCode != nil {
		code := *w.ExitCode
		w.ExitCode = &code
	}
	return w
}

func (c *child) live() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// liveWorkerIDs are the ids of children that have not exited, sorted.
func (s *Server) liveWorkerIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := []string{}
	for id, c := range s.children {
		if c.live() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Workers returns the child table, oldest first.
func (s *Server) Workers() []api.WorkerProcess {
	s.mu.Lock()
	list := make([]api.WorkerProcess, 0, len(s.children))
	for _, c := range s.children {
		list = append(list, c.snapshot())
	}
	s.mu.Unlock()
	sort.Slice(list, func(a, b int) bool {
		if !list[a].StartedAt.Equal(list[b].StartedAt) {
			return list[a].StartedAt.Before(list[b].StartedAt)
		}
		return list[a].WorkerID < list[b].WorkerID
	})
	return list
}

func (s *Server) lookup(id string) (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.children[id]
	if !ok {
		return nil, fmt.Errorf("worker %s is not on %s", id, s.cfg.HiveID)
	}
	return c, nil
}

// allocatePort reserves the first port of the worker range that is not the
// hive's own, not used by a live child or a spawn in progress, and that we
// can bind right now. The caller must release it.
func (s *Server) allocatePort() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := map[int]bool{s.cfg.Port: true}
	for p := range s.reserved {
		used[p] = true
	}
	for _, c := range s.children {
		if c.live() {
			used[c.info.Port] = true
		}
	}
	for p := s.cfg.WorkerPortMin; p <= s.cfg.WorkerPortMax; p++ {
		if used[p] {
			continue
		}
		// The worker listens on all interfaces; check exactly that.
		ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		s.reserved[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port in the worker range %d-%d on %s", s.cfg.WorkerPortMin, s.cfg.WorkerPortMax, s.cfg.HiveID)
}

func (s *Server) releasePort(p int) {
	s.mu.Lock()
	delete(s.reserved, p)
	s.mu.Unlock()
}

// workerBinary resolves the configured worker binary.
func (s *Server) workerBinary() (string, error) {
	b := s.cfg.WorkerBinary
	if b == "" {
		b = WorkerBinaryName
	}
	if !strings.Contains(b, "/") {
		p, err := exec.LookPath(b)
		if err != nil {
			return "", fmt.Errorf("worker binary %s not found next to rbee-hive or in $PATH; set --worker-binary", b)
		}
		return p, nil
	}
	st, err := os.Stat(b)
	if err != nil {
		return "", fmt.Errorf("worker binary %s: %v", b, err)
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("worker binary %s is not an executable file", b)
	}
	return b, nil
}

// workerURL is how the queen reaches a worker on port p: the hive's
// advertised host with the worker's port.
func (s *Server) workerURL(p int) string {
	return "http://" + net.JoinHostPort(s.workerHost, strconv.Itoa(p))
}

// spawn starts a worker for modelPath on device and waits until it is
// healthy. narrate reports steps. On any failure (including ctx being
// cancelled) the process is stopped and removed from the table.
func (s *Server) spawn(ctx context.Context, modelID, modelPath, device string, narrate func(action, format string, args ...any)) (api.WorkerProcess, error) {
	bin, err := s.workerBinary()
	if err != nil {
		return api.WorkerProcess{}, err
	}
	port, err := s.allocatePort()
	if err != nil {
		return api.WorkerProcess{}, err
	}
	defer s.releasePort(port)
	id := "w-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	if err := os.MkdirAll(s.logsDir(), 0o755); err != nil {
		return api.WorkerProcess{}, fmt.Errorf("creating log directory: %w", err)
	}
	logPath := filepath.Join(s.logsDir(), id+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return api.WorkerProcess{}, fmt.Errorf("creating worker log: %w", err)
	}
	url := s.workerURL(port)
	args := []string{
		"--worker-id", id,
		"--model", modelPath,
		"--device", device,
		"--port", strconv.Itoa(port),
		"--hive-id", s.cfg.HiveID,
		"--advertise-url", url,
		"--heartbeat-interval", s.cfg.HeartbeatInterval.String(),
	}
	if s.cfg.QueenURL != "" {
		args = append(args, "--queen-url", s.cfg.QueenURL)
	}
	if s.cfg.SecretFile != "" {
		// The worker signs its heartbeats with the cluster secret and
		// derives its bearer token from it (the queen derives the same).
		args = append(args, "--secret-file", s.cfg.SecretFile)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = s.cfg.DataDir
	// Own process group: a Ctrl-C on the hive's terminal does not reach the
	// workers directly, and stopping a worker can signal its whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return api.WorkerProcess{}, fmt.Errorf("starting %s: %w", bin, err)
	}
	c := &child{
		cmd:     cmd,
		logPath: logPath,
		exited:  make(chan struct{}),
		info: api.WorkerProcess{
			WorkerID:  id,
			PID:       cmd.Process.Pid,
			Port:      port,
			URL:       url,
			Device:    device,
			Model:     modelID,
			State:     ChildStarting,
			StartedAt: time.Now().UTC(),
		},
	}
	s.mu.Lock()
	s.children[id] = c
	s.mu.Unlock()
	s.kickHeartbeat() // vouch for the new worker before its first heartbeat
	go s.reap(c, logFile)
	s.cfg.Logf("hive %s: started worker %s (pid %d, port %d, device %s, model %s, log %s)", s.cfg.HiveID, id, c.info.PID, port, device, modelID, logPath)
	narrate("worker_start", "started worker %s (pid %d) on port %d; waiting for its /health", id, c.info.PID, port)

	if err := s.waitHealthy(ctx, c, port); err != nil {
		s.stopChild(c, s.cfg.StopGrace)
		s.mu.Lock()
		delete(s.children, id)
		s.mu.Unlock()
		if ctx.Err() != nil {
			return api.WorkerProcess{}, ctx.Err()
		}
		return api.WorkerProcess{}, fmt.Errorf("worker %s on %s %v; log %s: %s", id, s.cfg.HiveID, err, logPath, logTail(logPath, 5))
	}
	c.mu.Lock()
	if c.info.State == ChildStarting {
		c.info.State = ChildRunning
	}
	c.mu.Unlock()
	s.cfg.Logf("hive %s: worker %s is ready at %s", s.cfg.HiveID, id, url)
	return c.snapshot(), nil
}

// reap waits for the child and records how it ended.
func (s *Server) reap(c *child, logFile *os.File) {
	err := c.cmd.Wait()
	logFile.Close()
	code := exitCode(c.cmd.ProcessState, err)
	c.mu.Lock()
	c.info.State = ChildExited
	c.info.ExitCode = &code
	c.mu.Unlock()
	close(c.exited)
	s.cfg.Logf("hive %s: worker %s (pid %d) exited with code %d", s.cfg.HiveID, c.info.WorkerID, c.info.PID, code)
	s.mu.Lock()
	s.pruneExitedLocked(MaxExitedChildren)
	s.mu.Unlock()
}

// MaxExitedChildren is how many exited workers the child table keeps (for
// worker_process_list to show how they ended); older ones are forgotten so
// that workers spawned and crashed in a loop cannot grow it without bound.
const MaxExitedChildren = 64

// pruneExitedLocked drops the exited children that started earliest while
// more than keep are in the table. Live children are never dropped.
func (s *Server) pruneExitedLocked(keep int) {
	var exited []*child
	for _, c := range s.children {
		if !c.live() {
			exited = append(exited, c)
		}
	}
	if len(exited) <= keep {
		return
	}
	sort.Slice(exited, func(a, b int) bool { return exited[a].snapshot().StartedAt.Before(exited[b].snapshot().StartedAt) })
	for _, c := range exited[:len(exited)-keep] {
		id := c.snapshot().WorkerID
		if s.children[id] == c {
			delete(s.children, id)
		}
	}
}

// exitCode is the process's exit status, or 128+signal when a signal
// ended it (the shell convention).
func exitCode(ps *os.ProcessState, err error) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// waitHealthy polls the worker's /health on 127.0.0.1 until it answers
// {"status":"ready"}, the process exits, ctx ends or SpawnTimeout passes.
func (s *Server) waitHealthy(ctx context.Context, c *child, port int) error {
	deadline := time.NewTimer(s.cfg.SpawnTimeout)
	defer deadline.Stop()
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/health"
	delay := 50 * time.Millisecond
	last := "no answer yet"
	for {
		if ok, why := s.probe(ctx, url); ok {
			return nil
		} else if why != "" {
			last = why
		}
		select {
		case <-c.exited:
			code := *c.snapshot().ExitCode
			return fmt.Errorf("exited with code %d before it became healthy", code)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("was not healthy within %s (last probe: %s)", s.cfg.SpawnTimeout, last)
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

func (s *Server) probe(ctx context.Context, url string) (bool, string) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var h api.WorkerHealth
	if resp.StatusCode != http.StatusOK {
		return false, "health answered " + resp.Status
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return false, "health body: " + err.Error()
	}
	if h.Status != api.WorkerReady {
		return false, fmt.Sprintf("health status %q", h.Status)
	}
	return true, ""
}

// stopChild sends SIGTERM to the worker (and its process group), waits up
// to grace, then SIGKILLs. It returns once the process was reaped (or,
// should even SIGKILL not be reaped within 2 s, gives up).
func (s *Server) stopChild(c *child, grace time.Duration) {
	if !c.live() {
		return
	}
	pid := c.cmd.Process.Pid
	signal := func(sig syscall.Signal) {
		// Only while the leader is unreaped: its pid (= the group id) cannot
		// have been reused yet.
		if c.live() {
			_ = syscall.Kill(-pid, sig)
			_ = c.cmd.Process.Signal(sig)
		}
	}
	signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return
	case <-time.After(grace):
	}
	s.cfg.Logf("hive %s: worker %s (pid %d) did not stop within %s; sending SIGKILL", s.cfg.HiveID, c.info.WorkerID, pid, grace)
	signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(2 * time.Second):
		s.cfg.Logf("hive %s: worker %s (pid %d) not reaped after SIGKILL", s.cfg.HiveID, c.info.WorkerID, pid)
	}
}

// deleteWorker stops a worker and removes it from the table.
func (s *Server) deleteWorker(id string) (api.WorkerProcess, error) {
	c, err := s.lookup(id)
	if err != nil {
		return api.WorkerProcess{}, err
	}
	s.stopChild(c, s.cfg.StopGrace)
	s.mu.Lock()
	if s.children[id] == c {
		delete(s.children, id)
	}
	s.mu.Unlock()
	return c.snapshot(), nil
}

// stopAllWorkers stops every live child in parallel.
func (s *Server) stopAllWorkers() {
	s.mu.Lock()
	var live []*child
	for _, c := range s.children {
		if c.live() {
			live = append(live, c)
		}
	}
	s.mu.Unlock()
	if len(live) == 0 {
		return
	}
	s.cfg.Logf("hive %s: stopping %d worker(s)", s.cfg.HiveID, len(live))
	var wg sync.WaitGroup
	for _, c := range live {
		wg.Add(1)
		go func(c *child) { defer wg.Done(); s.stopChild(c, s.cfg.StopGrace) }(c)
	}
	wg.Wait()
}

// logTail returns the last n non-empty lines of a log file, joined by
// " | ", for error messages.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "(log is empty)"
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
