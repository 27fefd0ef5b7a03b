//go:build docker

package sshcomm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// The test host logs in to the hive's real sshd with the generated key and the pinned host key; a host key that is not the hive's is refused.
func TestConnectionEstablishment(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost, integration.WithServices(hive), bareHive)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	c := h.MustSSH(t, hive) // pins keys/hosts/hive-localhost/ssh_host_ed25519_key.pub
	code, out, errOut, err := sshRun(c, "id -un; hostname")
	if err != nil || code != 0 {
		t.Fatalf("id over SSH: exit %d, %v, stderr %q", code, err, errOut)
	}
	if got, want := string(out), "rbee\n"+hive+"\n"; got != want {
		t.Fatalf("logged in as/on %q; want %q", got, want)
	}

	key := filepath.Join(suite.RepoRoot(t), "keys", "test_id_rsa")

	// The project's known_hosts accepts the hive under its own name …
	kh, err := knownhosts.New(filepath.Join(suite.RepoRoot(t), "keys", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	as := func(name string) ssh.HostKeyCallback {
		return func(_ string, remote net.Addr, k ssh.PublicKey) error { return kh(name+":22", remote, k) }
	}
	good, err := h.SSHWithKey(ctx, hive, key, as(hive))
	if err != nil {
		t.Fatalf("known_hosts entry of %s: %v", hive, err)
	}
	good.Close()

	// … and refuses it under another hive's name, and so does a pin to
	// another hive's key: the server's key is checked, not just present.
	_, err = h.SSHWithKey(ctx, hive, key, as("hive-1"))
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		t.Fatalf("known_hosts entry of hive-1 for %s: err %v; want a host key mismatch", hive, err)
	}
	other := publicKey(t, "keys/hosts/hive-1/ssh_host_ed25519_key.pub")
	_, err = h.SSHWithKey(ctx, hive, key, ssh.FixedHostKey(other))
	if err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("pinned to hive-1's key: err %v; want host key mismatch", err)
	}
	t.Logf("wrong host key refused: %v", err)
}

// Exit code, stdout and stderr of a remote command come back separately and intact, also with 1 MiB on each stream at once.
func TestCommandExecution(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost, integration.WithServices(hive), bareHive)
	c := h.MustSSH(t, hive)

	code, out, errOut, err := sshRun(c, "echo to-stdout; echo to-stderr >&2; exit 7")
	if err != nil {
		t.Fatal(err)
	}
	if code != 7 || string(out) != "to-stdout\n" || string(errOut) != "to-stderr\n" {
		t.Fatalf("got exit %d, stdout %q, stderr %q; want 7, \"to-stdout\\n\", \"to-stderr\\n\"", code, out, errOut)
	}

	// Random data, so a lost or repeated chunk cannot go unnoticed; the
	// hive hashes what it sends.
	const size = 1 << 20
	code, out, errOut, err = sshRun(c, fmt.Sprintf("head -c %d /dev/urandom > /tmp/o && head -c %d /dev/urandom > /tmp/e && sha256sum /tmp/o /tmp/e", size, size))
	if err != nil || code != 0 {
		t.Fatalf("preparing data: exit %d, %v, %s", code, err, errOut)
	}
	sums := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("sha256sum line %q", l)
		}
		sums[f[1]] = f[0]
	}
	code, out, errOut, err = sshRun(c, "cat /tmp/o & cat /tmp/e >&2; wait; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Errorf("exit code %d; want 3", code)
	}
	for _, s := range []struct {
		name, file string
		got        []byte
	}{{"stdout", "/tmp/o", out}, {"stderr", "/tmp/e", errOut}} {
		sum := sha256.Sum256(s.got)
		if len(s.got) != size || hex.EncodeToString(sum[:]) != sums[s.file] {
			t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %s", s.name, len(s.got), sum, size, sums[s.file])
		}
	}
}

// The queen's hive_install puts the queen's hive binary onto a bare hive (0755, same sha256, runs); it refuses to overwrite without force and replaces it atomically with force.
func TestBinaryInstallation(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost, bareHive)
	q := h.MustQueen(t)
	var hist checks.History
	if r := h.MustExec(t, hive, []string{"test", "-e", binaryPath}); r.ExitCode == 0 {
		t.Fatalf("%s exists on a bare hive", binaryPath)
	}
	wantSum := strings.Fields(suite.Sh(t, h, "queen", "sha256sum "+queenHive))[0]
	wantVersion := strings.TrimSpace(suite.Sh(t, h, "queen", queenHive+" --version"))
	wantSize, _ := strconv.ParseInt(strings.TrimSpace(suite.Sh(t, h, "queen", "stat -c %s "+queenHive)), 10, 64)

	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	suite.MustDone(t, o)
	res, err := checks.Result[api.HiveInstallResult](o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Alias != hive || res.Version != wantVersion || res.Size != wantSize {
		t.Errorf("result %+v; want alias %s, version %q, size %d", res, hive, wantVersion, wantSize)
	}
	first := installed(t, h)
	if first.mode != "755" || first.owner != "rbee" || first.sum != wantSum {
		t.Fatalf("installed file: mode %s owner %s sha256 %s; want 755 rbee %s", first.mode, first.owner, first.sum, wantSum)
	}
	if got := strings.TrimSpace(suite.Sh(t, h, hive, "~/.local/bin/rbee-hive --version", integration.AsUser("rbee"))); got != wantVersion {
		t.Errorf("installed --version prints %q; want %q", got, wantVersion)
	}

	o = suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	suite.MustError(t, o, hive, "already installed", "force")
	if again := installed(t, h); again != first {
		t.Fatalf("a refused install changed the file: %+v → %+v", first, again)
	}

	// Watch the final path while the forced install replaces it: every
	// read must see the whole binary (same bytes as before and after), never
	// a missing, empty or half-written file.
	const watchLog = "/tmp/rbee-install-watch.log"
	watch := fmt.Sprintf(`f=%s; i=0
while [ ! -e /tmp/rbee-watch-stop ] && [ $i -lt 3000 ]; do
  i=$((i+1))
  if [ -e "$f" ]; then echo "$(stat -c %%i "$f") $(sha256sum < "$f" | cut -d' ' -f1)"; else echo "missing"; fi
done >> %s`, binaryPath, watchLog)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		_, _ = h.Exec(ctx, hive, []string{"sh", "-c", watch})
	}()
	defer wg.Wait()
	stopWatch := sync.OnceFunc(func() { h.MustExec(t, hive, []string{"touch", "/tmp/rbee-watch-stop"}) })
	defer stopWatch()
	awaitLog(t, h, watchLog, first.inode)

	o = suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive, Force: true})
	suite.MustDone(t, o)
	second := installed(t, h)
	if second.inode == first.inode {
		t.Errorf("forced install kept inode %s: the file was rewritten in place, not renamed into place", first.inode)
	}
	if second.mode != "755" || second.owner != "rbee" || second.sum != wantSum {
		t.Errorf("replaced file: mode %s owner %s sha256 %s; want 755 rbee %s", second.mode, second.owner, second.sum, wantSum)
	}
	awaitLog(t, h, watchLog, second.inode)
	stopWatch()
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(suite.Sh(t, h, hive, "cat "+watchLog)), "\n")
	for _, l := range lines {
		if f := strings.Fields(l); len(f) != 2 || f[1] != wantSum {
			t.Fatalf("the watcher saw %q at %s during the forced install; want the whole binary (sha256 %s) at every read", l, binaryPath, wantSum)
		}
	}
	t.Logf("watcher read the binary %d times during the forced install; all complete", len(lines))
	if left := strings.TrimSpace(suite.Sh(t, h, hive, "ls -A "+filepath.Dir(binaryPath))); left != "rbee-hive" {
		t.Errorf("%s holds %q after the installs; want only rbee-hive (no temporary files)", filepath.Dir(binaryPath), left)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// The queen holding a key the hive does not accept gets a clear [ERROR] naming user, host and "authentication failed"; the harness client with that key is refused too.
func TestAuthenticationFailures(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost, bareHive,
		// 0600: the queen refuses an identity file others can read, as OpenSSH does.
		integration.WithWritableFile("queen", queenKey, suite.RepoFile(t, "keys/wrong_id_rsa")))
	q := h.MustQueen(t)
	var hist checks.History

	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	suite.MustError(t, o, hive, "rbee@"+hive, "authentication failed")
	if r := h.MustExec(t, hive, []string{"test", "-e", binaryPath}); r.ExitCode == 0 {
		t.Errorf("%s was installed although authentication failed", binaryPath)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := h.SSHWithKey(ctx, hive, filepath.Join(suite.RepoRoot(t), "keys", "wrong_id_rsa"), nil)
	if err == nil {
		c.Close()
		t.Fatal("the harness client logged in with keys/wrong_id_rsa")
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("harness client with the wrong key: %v; want an authentication failure", err)
	}
	t.Logf("harness client with the wrong key: %v", err)
	// The same sshd accepts the right key: the refusals are about the key.
	h.MustSSH(t, hive)
	suite.NothingLost(t, time.Minute, q, &hist)
}

// With port 22 blackholed the queen's SSH connect fails within connect_timeout; a remote command that outlives command_timeout is killed on the hive and reported.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	// Neither is short: every SSH step of hive_install on a loaded machine
	// (connecting, test, mkdir, the upload of a small stand-in) must fit in
	// them with room to spare, so only the step made to hang can time out.
	const connectTimeout, commandTimeout = 5 * time.Second, 10 * time.Second
	// started is written on the hive by the stand-in when its --version
	// begins: the hive's clock (the test host's kernel clock too) says
	// when the command that must time out started.
	const started = "/tmp/rbee-standin.started"
	// A stand-in hive binary whose --version hangs: hive_install runs it
	// over SSH after the upload. The sleep is a child of the script, so only
	// killing the session's whole process group stops it.
	standin := "#!/bin/sh\n# rbee-hive stand-in for the SSH timeout test: --version never answers.\ndate +%s.%N > " + started + "\nsleep 3607\necho stand-in\n"
	h := integration.Start(t, integration.Localhost, bareHive,
		integration.WithFile("queen", probePath, []byte(standin)),
		integration.WithFile("queen", queenToml, suite.QueenConfig(t, "localhost", map[string]string{
			"hive_binary":         strconv.Quote(probePath),
			"ssh.connect_timeout": strconv.Quote(connectTimeout.String()),
			"ssh.command_timeout": strconv.Quote(commandTimeout.String()),
		})))
	q := h.MustQueen(t)
	var hist checks.History
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()

	// Connect: the block drops the queen's SYNs to the hive, so only the
	// timeout can end the attempt. The lower bound (from submitting) proves
	// it was the timeout; the upper bound is taken from the queen's
	// "connecting" narration, so job start-up on a loaded machine does not
	// count against it, and a queen that waited for its 10 s default
	// instead of connect_timeout would exceed it.
	h.MustInject(t, integration.Block("queen", hive))
	var connecting time.Time
	t0 := time.Now()
	acc, err := hist.Submit(ctx, q, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	if err != nil {
		t.Fatal(err)
	}
	o, err := hist.Adopt(ctx, q, api.OpHiveInstall, acc.JobID, func(ev sse.Event) error {
		if n, ok, _ := client.Narration(ev); connecting.IsZero() && ok && strings.Contains(n.Message, "over SSH") {
			connecting = time.Now()
		}
		return nil
	})
	end := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	suite.MustError(t, o, hive, "rbee@"+hive, "connect timed out after "+connectTimeout.String())
	if connecting.IsZero() {
		t.Fatalf("no \"connecting … over SSH\" narration before the error")
	}
	t.Logf("hive_install with port 22 blackholed: %s after %v (%v after the connecting narration)", o.Terminator(), end.Sub(t0).Round(time.Millisecond), end.Sub(connecting).Round(time.Millisecond))
	if d := end.Sub(t0); d < connectTimeout {
		t.Errorf("hive_install with port 22 blackholed ended %v after submitting; want at least connect_timeout %v", d, connectTimeout)
	}
	if d := end.Sub(connecting); d > connectTimeout+4*time.Second {
		t.Errorf("hive_install with port 22 blackholed ended %v after it began connecting; want connect_timeout %v (+4s margin)", d, connectTimeout)
	}
	h.MustRecover(t, integration.Block("queen", hive))

	// Command: the upload works, the stand-in's --version hangs. The lower
	// bound is from submitting (the command cannot start earlier), the
	// upper one from the moment the stand-in started on the hive.
	t0 = time.Now()
	o, err = hist.Run(ctx, q, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	end = time.Now()
	if err != nil {
		t.Fatal(err)
	}
	suite.MustError(t, o, hive, "command timed out after "+commandTimeout.String(), "--version")
	stamp := strings.TrimSpace(suite.Sh(t, h, hive, "cat "+started))
	sec, err := strconv.ParseFloat(stamp, 64)
	if err != nil {
		t.Fatalf("%s on the hive holds %q", started, stamp)
	}
	began := time.Unix(0, int64(sec*1e9))
	t.Logf("hive_install with a hanging --version: %s after %v (%v after the command started on the hive)", o.Terminator(), end.Sub(t0).Round(time.Millisecond), end.Sub(began).Round(time.Millisecond))
	if d := end.Sub(t0); d < commandTimeout {
		t.Errorf("the hanging command was reported %v after submitting; want at least command_timeout %v", d, commandTimeout)
	}
	if d := end.Sub(began); d > commandTimeout+10*time.Second {
		t.Errorf("the hanging command was reported %v after it started on the hive; want command_timeout %v (+10s margin)", d, commandTimeout)
	}
	// The stand-in ran its sleep (it wrote the stamp just before), and the
	// timeout must have killed it.
	if err := checks.Await(ctx, 30*time.Second, "the timed-out command gone from the hive", func(ctx context.Context) (bool, string, error) {
		r, err := h.Exec(ctx, hive, []string{"pgrep", "-u", "rbee", "-f", "^sleep 3607"})
		if err != nil {
			return false, "", err
		}
		pids := strings.TrimSpace(r.Stdout)
		return pids == "", "still running: pid " + pids, nil
	}); err != nil {
		t.Fatal(err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// Ten SSH sessions run at the same time and all succeed; concurrent queen operations on one hive hold at most max_sessions_per_host connections at once.
func TestConcurrentConnections(t *testing.T) {
	t.Parallel()
	const maxSessions, ops = 2, 6
	// A stand-in hive binary whose --version records how many copies of it
	// run at once (hive_install runs it over each operation's connection).
	// It first waits until max_sessions_per_host copies run (or, for the
	// last operation, until all others have finished; or 20 s at most,
	// within command_timeout), so that a working limit is reached by
	// construction, not by the luck of two operations' earlier steps taking
	// about as long; then it lingers 2 s, in which a copy beyond the limit
	// would be counted.
	standin := fmt.Sprintf(`#!/bin/sh
# rbee-hive stand-in for the session-limit test: --version records overlap.
d=/tmp/rbee-overlap
mkdir -p $d
touch $d/$$
end=$(( $(date +%%s) + 20 ))
while [ "$(ls $d | wc -l)" -lt %[1]d ] && [ "$(cat /tmp/rbee-overlap.finished 2>/dev/null | wc -l)" -lt %[2]d ] && [ "$(date +%%s)" -lt $end ]; do sleep 0.05; done
ls $d | wc -l >> /tmp/rbee-overlap.log
sleep 2
ls $d | wc -l >> /tmp/rbee-overlap.log
rm -f $d/$$
echo $$ >> /tmp/rbee-overlap.finished
echo stand-in
`, maxSessions, ops-1)
	h := integration.Start(t, integration.Localhost, bareHive,
		integration.WithFile("queen", probePath, []byte(standin)),
		integration.WithFile("queen", queenToml, suite.QueenConfig(t, "localhost", map[string]string{
			"hive_binary":               strconv.Quote(probePath),
			"ssh.max_sessions_per_host": strconv.Itoa(maxSessions),
		})))
	q := h.MustQueen(t)
	var hist checks.History

	// Ten connections, each waiting until all ten have arrived: a session
	// only exits 0 if the ten were running at the same moment.
	const n = 10
	// The give-up is by the clock (60 s), not by a count of polls that a
	// loaded machine stretches.
	barrier := fmt.Sprintf(`d=/tmp/rbee-barrier; mkdir -p $d; touch $d/$$; end=$(( $(date +%%s) + 60 ))
while [ "$(ls $d | wc -l)" -lt %d ]; do [ "$(date +%%s)" -lt $end ] || exit 9; sleep 0.05; done; echo arrived`, n)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := h.SSH(ctx, hive)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			code, out, errOut, err := sshRun(c, barrier)
			if err == nil && (code != 0 || string(out) != "arrived\n") {
				err = fmt.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("session %d of %d: %v", i, n, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	outcomes := make([]client.Outcome, ops)
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := hist.Run(ctx, q, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive, Force: true})
			if err != nil {
				o.Error = err.Error()
			}
			outcomes[i] = o
		}()
	}
	wg.Wait()
	for i, o := range outcomes {
		if o.Kind.String() != api.TermDone {
			t.Errorf("concurrent hive_install %d ended %s", i, o.Terminator())
		}
	}
	counts := strings.Fields(suite.Sh(t, h, hive, "cat /tmp/rbee-overlap.log"))
	peak := 0
	for _, c := range counts {
		v, err := strconv.Atoi(c)
		if err != nil {
			t.Fatalf("overlap log: %q", c)
		}
		peak = max(peak, v)
	}
	t.Logf("%d concurrent hive_install jobs, max_sessions_per_host %d: at most %d ran on the hive at once (%d samples)", ops, maxSessions, peak, len(counts))
	if len(counts) != 2*ops {
		t.Errorf("the stand-in ran %d times; want %d", len(counts)/2, ops)
	}
	if peak != maxSessions {
		t.Errorf("at most %d operations ran on the hive at once; want exactly max_sessions_per_host = %d (more breaks the limit, fewer means they did not run concurrently)", peak, maxSessions)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// installedFile is what the hive's filesystem says about the installed binary.
type installedFile struct{ mode, owner, inode, sum string }

func installed(t testing.TB, h *integration.Harness) installedFile {
	t.Helper()
	f := strings.Fields(suite.Sh(t, h, hive, fmt.Sprintf("stat -c '%%a %%U %%i' %s && sha256sum %s", binaryPath, binaryPath)))
	if len(f) != 5 {
		t.Fatalf("stat/sha256sum of %s: %q", binaryPath, f)
	}
	return installedFile{mode: f[0], owner: f[1], inode: f[2], sum: f[3]}
}

// awaitLog waits until the watcher has logged a read of inode.
func awaitLog(t testing.TB, h *integration.Harness, log, inode string) {
	t.Helper()
	err := checks.Await(t.Context(), 30*time.Second, "watcher read inode "+inode, func(ctx context.Context) (bool, string, error) {
		r, err := h.Exec(ctx, hive, []string{"sh", "-c", "tail -n 1 " + log})
		if err != nil {
			return false, "", err
		}
		return strings.HasPrefix(r.Stdout, inode+" "), "last line " + strings.TrimSpace(r.Stdout), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
