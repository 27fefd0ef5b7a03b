package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server the bench started as a child process on 127.0.0.1.
type proc struct {
	name string
	cmd  *exec.Cmd
	url  string
	log  *os.File
	done chan struct{}
	err  error

	lines <-chan string // the first line of stdout
}

// startProc starts bin with args, logging to dir/name.log, and waits until
// GET url/health answers 200 (or the process exits, or 15 s pass).
func startProc(ctx context.Context, dir, name, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
			}
			fmt.Fprintln(lf, sc.Text())
		}
		if first {
			close(lines)
		}
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	p.lines = lines
	return p, nil
}

// waitHealthy polls url/health until it answers 200.
func (p *proc) waitHealthy(ctx context.Context, url string) error {
	p.url = url
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was healthy: %v (log: %s)", p.name, p.err, p.log.Name())
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s within 15 s (log: %s)", p.name, url, p.log.Name())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, waits up to 10 s (PROTOCOL: graceful exit within
// 10 s), then kills.
func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

// rss is the process's resident set size in bytes (VmRSS).
func (p *proc) rss() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// cpu is the process's user+system CPU time so far.
func (p *proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	ticks, err := parseStatCPU(string(b))
	if err != nil {
		return 0, err
	}
	// USER_HZ is 100 on every Linux ABI Go supports (sysconf(_SC_CLK_TCK)).
	return time.Duration(ticks) * (time.Second / 100), nil
}

// parseVmRSS reads "VmRSS:  12345 kB" from /proc/PID/status, in bytes.
func parseVmRSS(status string) (float64, error) {
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS line")
}

// parseStatCPU returns utime+stime (fields 14 and 15, clock ticks) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14 → f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want ≥ 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return u + s, nil
}

// freePort asks the kernel for a free 127.0.0.1 port. Another process may
// take it before the queen binds it; startQueen retries then.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// queenConfig renders a queen.toml for a queen on 127.0.0.1:port, with one
// configured hive that is never contacted (the queen requires at least one)
// and a staleness window longer than any benchmark.
// keyFile is the cluster secret the queen checks heartbeats with and the
// load generator signs them with; workers report the standalone hive
// "bench", so their signature alone admits them.
func queenConfig(port int, keyFile string) (toml, hives string) {
	toml = fmt.Sprintf(`# Written by xtask/bench for a loopback queen.
listen     = "127.0.0.1:%d"
public_url = "http://127.0.0.1:%d"
hives_conf = "hives.conf"

[heartbeat]
stale_after = "10m"

[jobs]
retention = "10m"
max_jobs  = 10000

[auth]
secret_file     = %q
standalone_hive = "bench"
`, port, port, keyFile)
	hives = `# Never contacted: the queen needs one configured hive to start.
[[hive]]
alias      = "bench-hive"
hostname   = "127.0.0.1"
ssh_port   = 22
ssh_user   = "rbee"
hive_port  = 1
auto_start = false
`
	return toml, hives
}

// startQueen runs bin (a queen-rbee) on a free loopback port with a config
// written to a new directory under dir.
func startQueen(ctx context.Context, dir, name, bin string) (*proc, error) {
	var last error
	for try := 0; try < 3; try++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		qdir, err := os.MkdirTemp(dir, name+"-")
		if err != nil {
			return nil, err
		}
		key, err := benchKey(dir)
		if err != nil {
			return nil, err
		}
		toml, hives := queenConfig(port, key)
		if err := os.WriteFile(filepath.Join(qdir, "queen.toml"), []byte(toml), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(qdir, "hives.conf"), []byte(hives), 0o644); err != nil {
			return nil, err
		}
		p, err := startProc(ctx, qdir, name, bin, "--config", filepath.Join(qdir, "queen.toml"))
		if err != nil {
			return nil, err
		}
		if last = p.waitHealthy(ctx, fmt.Sprintf("http://127.0.0.1:%d", port)); last == nil {
			return p, nil
		}
		p.stop()
	}
	return nil, last
}

// benchKey returns dir/cluster.key, creating it (32 random bytes as hex,
// mode 0600) on first use: the secret shared by the benchmark's queens and
// its load generator.
func benchKey(dir string) (string, error) {
	p := filepath.Join(dir, "cluster.key")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("bench cluster key: %w", err)
	}
	return p, nil
}

// startCeiling runs the bare net/http ceiling server (xtask/cmd/rbee-bench-ceiling),
// which prints the address it listens on.
func startCeiling(ctx context.Context, dir, bin string) (*proc, error) {
	p, err := startProc(ctx, dir, "ceiling", bin, "--listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var line string
	select {
	case line = <-p.lines:
	case <-time.After(10 * time.Second):
	}
	addr, ok := strings.CutPrefix(line, "listening on ")
	if !ok {
		p.stop()
		return nil, fmt.Errorf("ceiling server said %q, want \"listening on ADDR\" (log: %s)", line, p.log.Name())
	}
	if err := p.waitHealthy(ctx, "http://"+strings.TrimSpace(addr)); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}
