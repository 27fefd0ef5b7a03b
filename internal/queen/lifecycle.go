package queen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/sshx"
)

// SSHClient is what the hive lifecycle operations need from one SSH
// connection; *sshx.Client implements it.
type SSHClient interface {
	Run(ctx context.Context, cmd string) (sshx.Result, error)
	Upload(ctx context.Context, src io.Reader, remotePath string, mode os.FileMode) error
	Close() error
}

// SSHDialer opens an SSH connection to a hive's host.
type SSHDialer func(ctx context.Context, h config.Hive) (SSHClient, error)

func defaultSSHDialer(cfg *config.Queen) SSHDialer {
	return func(ctx context.Context, h config.Hive) (SSHClient, error) {
		c, err := sshx.Dial(ctx, sshx.Config{
			Host: h.Hostname, Port: h.SSHPort, User: h.SSHUser,
			IdentityFile: cfg.SSH.IdentityFile, KnownHostsFile: cfg.SSH.KnownHosts,
			ConnectTimeout: cfg.SSH.ConnectTimeout.D(), CommandTimeout: cfg.SSH.CommandTimeout.D(),
		})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// sshGate bounds concurrent SSH connections per host.
type sshGate struct {
	dial    SSHDialer
	limiter *sshx.Limiter
}

func newSSHGate(dial SSHDialer, maxPerHost int) *sshGate {
	if maxPerHost <= 0 {
		maxPerHost = 4
	}
	return &sshGate{dial: dial, limiter: sshx.NewLimiter(maxPerHost)}
}

// Pid and log files on the hive host (the same ones the hive container's
// entrypoint uses).
const (
	remoteStateDir = "~/.local/state/rbee"
	remotePidFile  = remoteStateDir + "/rbee-hive.pid"
	remoteLogFile  = remoteStateDir + "/rbee-hive.log"
	// remoteSecretFile is where hive_start puts the cluster secret (the
	// hive's default --secret-file).
	remoteSecretFile = "~/.config/rbee/cluster.key"
)

// shellPath quotes a remote path for sh, keeping a leading "~/" expandable.
func shellPath(p string) string {
	if p == "~" {
		return `"$HOME"`
	}
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return `"$HOME"/` + shellQuote(rest)
	}
	return shellQuote(p)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func remoteDir(p string) string {
	if i := strings.LastIndex(p, "/"); i > 0 {
		return p[:i]
	}
	return "."
}

// sshSession is one lifecycle operation's SSH connection.
type sshSession struct {
	s       *Server
	j       *jobs.Job
	h       config.Hive
	c       SSHClient
	release func()
}

func (s *Server) sshConnect(ctx context.Context, j *jobs.Job, h config.Hive) (*sshSession, error) {
	label := fmt.Sprintf("%s@%s:%d", h.SSHUser, h.Hostname, h.SSHPort)
	release, err := s.ssh.limiter.Acquire(ctx, fmt.Sprintf("%s:%d", h.Hostname, h.SSHPort))
	if err != nil {
		if ctx.Err() != nil {
			return nil, jobs.ErrCancelled
		}
		return nil, fmt.Errorf("%s: ssh %s: %v", h.Alias, label, err)
	}
	s.narrate(j, "ssh", h.Alias, "connecting to %s over SSH", label)
	c, err := s.ssh.dial(ctx, h)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return nil, jobs.ErrCancelled
		}
		msg := err.Error()
		if !strings.Contains(msg, label) {
			msg = "ssh " + label + ": " + msg
		}
		return nil, fmt.Errorf("%s: %s", h.Alias, msg)
	}
	return &sshSession{s: s, j: j, h: h, c: c, release: release}, nil
}

func (ss *sshSession) Close() {
	ss.c.Close()
	ss.release()
}

// run executes cmd; a transport error or (unless okCodes allow it) a
// non-zero exit is an error naming the hive, the command and stderr.
func (ss *sshSession) run(ctx context.Context, what, cmd string, okCodes ...int) (sshx.Result, error) {
	res, err := ss.c.Run(ctx, cmd)
	if err != nil {
		if ctx.Err() != nil {
			return res, jobs.ErrCancelled
		}
		return res, fmt.Errorf("%s: %s: %v", ss.h.Alias, what, err)
	}
	if res.ExitCode == 0 {
		return res, nil
	}
	for _, c := range okCodes {
		if res.ExitCode == c {
			return res, nil
		}
	}
	detail := strings.TrimSpace(string(res.Stderr))
	if detail == "" {
		detail = strings.TrimSpace(string(res.Stdout))
	}
	if len(detail) > 500 {
		detail = detail[len(detail)-500:]
	}
	return res, fmt.Errorf("%s: %s failed on %s@%s (exit %d): %s", ss.h.Alias, what, ss.h.SSHUser, ss.h.Hostname, res.ExitCode, detail)
}

func (ss *sshSession) exists(ctx context.Context, path string) (bool, error) {
	res, err := ss.run(ctx, "checking "+path, "test -e "+shellPath(path), 1)
	return err == nil && res.ExitCode == 0, err
}

func (s *Server) hiveInstall(ctx context.Context, j *jobs.Job, h config.Hive, force bool) error {
	f, err := os.Open(s.cfg.HiveBinary)
	if err != nil {
		return fmt.Errorf("%s: cannot read the hive binary to install: %v", h.Alias, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: cannot read the hive binary to install: %v", h.Alias, err)
	}
	ss, err := s.sshConnect(ctx, j, h)
	if err != nil {
		return err
	}
	defer ss.Close()
	there, err := ss.exists(ctx, h.BinaryPath)
	if err != nil {
		return err
	}
	if there && !force {
		return fmt.Errorf("%s: rbee-hive is already installed at %s on %s; use force to overwrite", h.Alias, h.BinaryPath, h.Hostname)
	}
	dir := shellPath(remoteDir(h.BinaryPath))
	if _, err := ss.run(ctx, "creating "+remoteDir(h.BinaryPath), "mkdir -p "+dir); err != nil {
		return err
	}
	// Remove temporaries an interrupted earlier install left behind
	// (sshx.Upload names them .<base>.tmp-<random> beside the target; a
	// connection that died mid-upload cannot delete its own) — but only
	// while no upload of ours to that directory is running, whose
	// temporary this would delete.
	lock := s.uploads.lock(h.Hostname + ":" + remoteDir(h.BinaryPath))
	if lock.TryLock() {
		_, err := ss.run(ctx, "removing stale temporaries", "rm -f "+dir+"/"+shellQuote("."+path.Base(h.BinaryPath)+".tmp-")+"*")
		lock.Unlock()
		if err != nil {
			return err
		}
	}
	lock.RLock()
	defer lock.RUnlock()
	s.narrate(j, "hive_install", h.Alias, "uploading %s (%d bytes) to %s:%s", s.cfg.HiveBinary, st.Size(), h.Hostname, h.BinaryPath)
	if err := ss.c.Upload(ctx, f, h.BinaryPath, 0o755); err != nil {
		if ctx.Err() != nil {
			return jobs.ErrCancelled
		}
		return fmt.Errorf("%s: upload: %v", h.Alias, err)
	}
	res, err := ss.run(ctx, "checking the installed binary", shellPath(h.BinaryPath)+" --version")
	if err != nil {
		return err
	}
	version := strings.TrimSpace(string(res.Stdout))
	s.narrate(j, "hive_install", h.Alias, "installed %s on %s: %s", h.BinaryPath, h.Alias, version)
	j.Result(api.HiveInstallResult{Alias: h.Alias, BinaryPath: h.BinaryPath, Version: version, Size: st.Size()})
	return nil
}

func (s *Server) hiveUninstall(ctx context.Context, j *jobs.Job, h config.Hive) error {
	if err := s.stopHive(ctx, j, h); err != nil {
		return err
	}
	ss, err := s.sshConnect(ctx, j, h)
	if err != nil {
		return err
	}
	defer ss.Close()
	there, err := ss.exists(ctx, h.BinaryPath)
	if err != nil {
		return err
	}
	if there {
		if _, err := ss.run(ctx, "removing "+h.BinaryPath, "rm -f "+shellPath(h.BinaryPath)); err != nil {
			return err
		}
		s.narrate(j, "hive_uninstall", h.Alias, "removed %s from %s", h.BinaryPath, h.Alias)
	} else {
		s.narrate(j, "hive_uninstall", h.Alias, "%s was not installed on %s", h.BinaryPath, h.Alias)
	}
	j.Result(api.HiveUninstallResult{Alias: h.Alias, BinaryPath: h.BinaryPath, Removed: there})
	return nil
}

func (s *Server) hiveURL(h config.Hive) string {
	return h.URL()
}

func (s *Server) hiveStart(ctx context.Context, j *jobs.Job, h config.Hive) error {
	t := hiveTarget{alias: h.Alias, url: s.hiveURL(h)}
	if state, _ := s.probe(ctx, t.url); state == api.HiveOnline {
		s.narrate(j, "hive_start", h.Alias, "%s is already running at %s", h.Alias, t.url)
		return s.startedResult(ctx, j, t, 0)
	}
	ss, err := s.sshConnect(ctx, j, h)
	if err != nil {
		return err
	}
	defer ss.Close()
	res, err := ss.run(ctx, "checking "+h.BinaryPath, "test -x "+shellPath(h.BinaryPath), 1)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("%s: rbee-hive is not installed at %s on %s; run hive_install first", h.Alias, h.BinaryPath, h.Hostname)
	}
	// A daemon we recorded that still runs but does not answer /health
	// (hung, or cut off from us) must not be orphaned by a second start
	// overwriting its pid file: hive_stop is the way out.
	alive := "f=" + shellPath(remotePidFile) + "\n" + recordedHiveFn + `
pid=$(recorded_hive "$f") || exit 0
echo "$pid"; exit 3`
	res, err = ss.run(ctx, "checking for a running rbee-hive", alive, 3)
	if err != nil {
		return err
	}
	if res.ExitCode == 3 {
		return fmt.Errorf("%s: rbee-hive (pid %s) is already running on %s but %s/health does not answer; stop it with hive_stop first",
			h.Alias, strings.TrimSpace(string(res.Stdout)), h.Hostname, t.url)
	}
	secretFlag := ""
	if s.key != nil {
		if err := s.deliverSecret(ctx, j, ss, h); err != nil {
			return err
		}
		secretFlag = " --secret-file " + shellPath(remoteSecretFile)
	}
	// mkdir must not be part of the background list ("a && b &" would
	// background both and $! would be a subshell, not the hive).
	cmd := fmt.Sprintf("mkdir -p %s || exit 1; nohup %s --port %d --hive-id %s --queen-url %s --advertise-url %s%s >> %s 2>&1 < /dev/null & pid=$!; echo $pid > %s && echo $pid",
		shellPath(remoteStateDir), shellPath(h.BinaryPath), h.HivePort, shellQuote(h.Alias), shellQuote(s.cfg.PublicURL),
		shellQuote(t.url), secretFlag, shellPath(remoteLogFile), shellPath(remotePidFile))
	s.narrate(j, "hive_start", h.Alias, "starting %s over SSH: %s --port %d --hive-id %s", h.Alias, h.BinaryPath, h.HivePort, h.Alias)
	res, err = ss.run(ctx, "starting rbee-hive", cmd)
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s: starting rbee-hive: no pid in the answer %q", h.Alias, strings.TrimSpace(string(res.Stdout)))
	}
	s.narrate(j, "hive_start", h.Alias, "started pid %d; waiting for %s/health (up to %s)", pid, t.url, s.cfg.Lifecycle.StartTimeout.D())
	deadline := time.Now().Add(s.cfg.Lifecycle.StartTimeout.D())
	backoff := 100 * time.Millisecond
	lastCheck := time.Now()
	for {
		state, probe := s.probe(ctx, t.url)
		if ctx.Err() != nil {
			return jobs.ErrCancelled
		}
		if state == api.HiveOnline {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: started pid %d but %s/health did not answer within %s ([lifecycle] start_timeout; last probe: %s); see %s on %s",
				h.Alias, pid, t.url, s.cfg.Lifecycle.StartTimeout.D(), probe, remoteLogFile, h.Hostname)
		}
		// A hive that exits at once (port taken, bad flag) fails fast
		// instead of after start_timeout.
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			r, err := ss.run(ctx, "checking pid", fmt.Sprintf(`kill -0 %[1]d 2>/dev/null || exit 1; [ -r /proc/%[1]d/stat ] || exit 0; [ "$(sed 's/.*) //' /proc/%[1]d/stat | cut -c1)" != Z ] || exit 1`, pid), 1)
			if err != nil {
				return err
			}
			if r.ExitCode != 0 {
				tail, _ := ss.run(ctx, "reading the log", "tail -n 5 "+shellPath(remoteLogFile), 1)
				return fmt.Errorf("%s: rbee-hive (pid %d) exited during start: %s", h.Alias, pid, strings.TrimSpace(string(tail.Stdout)))
			}
		}
		select {
		case <-ctx.Done():
			return jobs.ErrCancelled
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	s.narrate(j, "hive_start", h.Alias, "%s is healthy at %s", h.Alias, t.url)
	return s.startedResult(ctx, j, t, pid)
}

// deliverSecret puts the cluster secret on the hive machine (mode 0600 in a
// 0700 directory, uploaded over SFTP, never on a command line), so the
// hive it starts can sign heartbeats, check the queen's calls and derive
// its workers' token.
func (s *Server) deliverSecret(ctx context.Context, j *jobs.Job, ss *sshSession, h config.Hive) error {
	dir := remoteDir(remoteSecretFile)
	if _, err := ss.run(ctx, "preparing "+dir, "mkdir -p "+shellPath(dir)+" && chmod 0700 "+shellPath(dir)); err != nil {
		return err
	}
	s.narrate(j, "hive_start", h.Alias, "uploading the cluster secret to %s:%s (mode 0600)", h.Hostname, remoteSecretFile)
	if err := ss.c.Upload(ctx, bytes.NewReader(s.key.Encode()), remoteSecretFile, 0o600); err != nil {
		if ctx.Err() != nil {
			return jobs.ErrCancelled
		}
		return fmt.Errorf("%s: uploading the cluster secret: %v", h.Alias, err)
	}
	return nil
}

func (s *Server) startedResult(ctx context.Context, j *jobs.Job, t hiveTarget, pid int) error {
	s.reg.MarkHiveSeen(t.alias)
	caps, err := s.fetchCapabilities(ctx, j, t)
	if err != nil {
		return err
	}
	j.Result(api.HiveStartResult{Alias: t.alias, URL: t.url, State: api.HiveOnline, Devices: caps.Devices, PID: pid})
	return nil
}

func (s *Server) hiveStop(ctx context.Context, j *jobs.Job, h config.Hive) error {
	if err := s.stopHive(ctx, j, h); err != nil {
		return err
	}
	j.Result(api.HiveStopResult{Alias: h.Alias, State: api.HiveOffline})
	return nil
}

// stopHive asks the hive to shut down over HTTP and waits for it to stop
// answering; if it does not, it signals the recorded PID over SSH (TERM,
// then KILL), never a process found by name.
func (s *Server) stopHive(ctx context.Context, j *jobs.Job, h config.Hive) error {
	t := hiveTarget{alias: h.Alias, url: s.hiveURL(h)}
	stopTimeout := s.cfg.Lifecycle.StopTimeout.D()
	sctx, cancel := context.WithTimeout(ctx, s.http.timeout)
	var resp *http.Response
	req, err := http.NewRequestWithContext(sctx, http.MethodPost, t.url+"/v1/shutdown", nil)
	if err == nil {
		resp, err = s.hhttp.probe.Do(req) // signed; no retries: shutdown is not idempotent enough to repeat blindly
	}
	cancel()
	if ctx.Err() != nil {
		return jobs.ErrCancelled
	}
	asked := err == nil && resp.StatusCode == http.StatusOK
	if resp != nil {
		resp.Body.Close()
	}
	switch {
	case asked:
		s.narrate(j, "hive_stop", h.Alias, "asked %s to shut down; waiting up to %s", h.Alias, stopTimeout)
		if s.waitDown(ctx, t.url, stopTimeout) {
			s.reg.MarkHiveOffline(h.Alias)
			s.narrate(j, "hive_stop", h.Alias, "%s stopped", h.Alias)
			s.removePidFile(ctx, j, h)
			return nil
		}
		if ctx.Err() != nil {
			return jobs.ErrCancelled
		}
		s.narrate(j, "hive_stop", h.Alias, "%s still answers after %s; signalling its recorded pid over SSH", h.Alias, stopTimeout)
	case err != nil:
		s.narrate(j, "hive_stop", h.Alias, "POST %s/v1/shutdown: %s; checking the recorded pid over SSH", t.url, describeErr(err, s.http.timeout))
	default:
		s.narrate(j, "hive_stop", h.Alias, "POST %s/v1/shutdown answered HTTP %d; signalling its recorded pid over SSH", t.url, resp.StatusCode)
	}
	return s.killRecorded(ctx, j, h, t)
}

func (s *Server) waitDown(ctx context.Context, url string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	backoff := 50 * time.Millisecond
	for {
		if state, _ := s.probe(ctx, url); state == api.HiveOffline {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func (s *Server) removePidFile(ctx context.Context, j *jobs.Job, h config.Hive) {
	ss, err := s.sshConnect(ctx, j, h)
	if err != nil {
		s.narrate(j, "hive_stop", h.Alias, "could not remove the pid file: %v", err)
		return
	}
	defer ss.Close()
	if _, err := ss.run(ctx, "removing the pid file", "rm -f "+shellPath(remotePidFile)); err != nil {
		s.narrate(j, "hive_stop", h.Alias, "could not remove the pid file: %v", err)
	}
}

// recordedHiveFn defines recorded_hive PIDFILE for the remote shell: it
// prints the recorded pid and returns 0 when that process is the rbee-hive
// we started, 1 when there is no (usable) pid file, 2 when the process is
// gone (or a zombie), 3 when the pid now belongs to something else: the
// checking shell itself, a process that started after the pid file was
// written (pids are reused, e.g. in a restarted container whose file
// system kept the old pid file), or one whose command line is not
// rbee-hive.
const recordedHiveFn = `recorded_hive() {
  rf=$1
  [ -f "$rf" ] || return 1
  p=$(tr -cd 0-9 < "$rf")
  [ -n "$p" ] || return 1
  echo "$p"
  [ "$p" != "$$" ] || return 3
  kill -0 "$p" 2>/dev/null || return 2
  [ -r /proc/"$p"/stat ] || return 0
  st=$(sed 's/.*) //' /proc/"$p"/stat)
  set -- $st
  [ "$1" != Z ] || return 2
  bt=$(sed -n 's/^btime //p' /proc/stat)
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  w=$(stat -c %Y "$rf")
  [ $((bt + ${20} / hz)) -le $((w + 1)) ] || return 3
  tr '\0' ' ' < /proc/"$p"/cmdline | grep -q rbee-hive || return 3
}`

// killScript signals the pid recorded in the pid file: TERM, wait the
// grace (killGrace seconds, up to one more since date counts whole
// seconds) by the remote clock, then KILL. The wait is a deadline, not a count of polls: on a loaded host each
// poll forks several processes and a count would stretch the grace many
// times over. It refuses a pid whose command line is not rbee-hive (the pid
// was reused), and always removes the pid file.
// Exit codes: 0 stopped, 3 no pid file, 4 pid not running, 5 not rbee-hive.
const killScript = `f=%[1]s
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r /proc/"$1"/stat ] || return 0
  [ "$(sed 's/.*) //' /proc/"$1"/stat | cut -c1)" != Z ] # an unreaped zombie has exited
}
pid=$(recorded_hive "$f")
case $? in
  1) rm -f "$f"; exit 3 ;;
  2) rm -f "$f"; echo "$pid"; exit 4 ;;
  3) rm -f "$f"; echo "$pid"; exit 5 ;;
esac
kill -TERM "$pid" 2>/dev/null
end=$(( $(date +%%s) + %[2]d ))
while alive "$pid" && [ "$(date +%%s)" -le "$end" ]; do sleep 0.1; done
sig=TERM
if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; sig=KILL; fi
rm -f "$f"
echo "$pid $sig"`

func (s *Server) killRecorded(ctx context.Context, j *jobs.Job, h config.Hive, t hiveTarget) error {
	ss, err := s.sshConnect(ctx, j, h)
	if err != nil {
		return err
	}
	defer ss.Close()
	res, err := ss.run(ctx, "signalling the recorded pid", recordedHiveFn+"\n"+fmt.Sprintf(killScript, shellPath(remotePidFile), killGrace(s.cfg.Lifecycle.StopTimeout.D())), 3, 4, 5)
	if err != nil {
		return err
	}
	out := strings.TrimSpace(string(res.Stdout))
	switch res.ExitCode {
	case 3, 4:
		if state, probe := s.probe(ctx, t.url); state == api.HiveOnline {
			return fmt.Errorf("%s: %s still answers /health but no running pid is recorded in %s (health probe: %s)", h.Alias, t.url, remotePidFile, probe)
		}
		s.narrate(j, "hive_stop", h.Alias, "%s is not running", h.Alias)
	case 5:
		return fmt.Errorf("%s: recorded pid %s is not rbee-hive (pid reused?); removed the stale pid file and killed nothing", h.Alias, out)
	default:
		s.narrate(j, "hive_stop", h.Alias, "stopped %s: pid and signal %s", h.Alias, out)
	}
	s.reg.MarkHiveOffline(h.Alias)
	return nil
}

// killGrace is how many whole seconds killScript waits between TERM and
// KILL: stop_timeout rounded up, at least 1 and at most 30.
func killGrace(stopTimeout time.Duration) int {
	return max(1, min(int((stopTimeout+time.Second-1)/time.Second), 30))
}

// uploadDirs holds one lock per remote directory that hive_install uploads
// into: uploads share it (read), the removal of stale temporaries takes it
// exclusively and is skipped while any upload runs.
type uploadDirs struct {
	mu    sync.Mutex
	locks map[string]*sync.RWMutex
}

func (u *uploadDirs) lock(key string) *sync.RWMutex {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.locks == nil {
		u.locks = map[string]*sync.RWMutex{}
	}
	l, ok := u.locks[key]
	if !ok {
		l = &sync.RWMutex{}
		u.locks[key] = l
	}
	return l
}
