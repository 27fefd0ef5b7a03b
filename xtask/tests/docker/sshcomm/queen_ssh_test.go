//go:build docker

package sshcomm

// SSH through the queen: every test here drives the queen's own SSH client
// with a job on its API and checks the effect on the hive machine itself.
// The queen reads its known_hosts and identity file anew for every
// connection, so each test first runs an operation with a bad file (which
// must be refused with nothing done on the hive) and then, on the same
// queen and hive, with the right one (which must work): the refusal is
// about that one file.

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const (
	// queenSSHDir is a writable directory in the queen container that the
	// queen.toml variant of these tests points known_hosts and
	// identity_file into, so a test can swap either between operations.
	queenSSHDir        = "/tmp/rbee-ssh"
	queenKnownHostsVar = queenSSHDir + "/known_hosts"
	queenIdentityVar   = queenSSHDir + "/id"
	// sessionLog gets one line per SSH session the hive's sshd starts for
	// rbee (from ~rbee/.ssh/rc, which sshd runs before every session's
	// command): the receiver's own count of what was executed.
	sessionLog  = "/tmp/rbee-ssh-sessions.log"
	hivePidFile = "/home/rbee/.local/state/rbee/rbee-hive.pid"
)

// stoppedHive is a hive machine with rbee-hive installed but not running:
// an accepted hive_start would start it and an accepted forced
// hive_install would replace it, both visible on the hive.
var stoppedHive = integration.WithEnv(map[string]string{"RBEE_HIVE_PREINSTALLED": "1", "RBEE_HIVE_AUTOSTART": "0"})

// startQueenSSH starts the localhost topology with a stopped hive and a
// queen whose known_hosts and identity file are knownHosts and identity,
// written to queenSSHDir, and counts the hive's SSH sessions.
func startQueenSSH(t *testing.T, knownHosts, identity []byte) (*integration.Harness, *client.Client) {
	t.Helper()
	// The queen checks its key files at start-up and reads them again for
	// every connection: they exist from the start, writable, so the test
	// can swap in the right one later (suite.PutFile).
	h := integration.Start(t, integration.Localhost, stoppedHive,
		integration.WithFile("queen", queenToml, suite.QueenConfig(t, "localhost", map[string]string{
			"known_hosts":   strconv.Quote(queenKnownHostsVar),
			"identity_file": strconv.Quote(queenIdentityVar),
		})),
		integration.WithWritableFile("queen", queenKnownHostsVar, knownHosts),
		integration.WithWritableFile("queen", queenIdentityVar, identity))
	q := h.MustQueen(t)
	// The rc file must print nothing: its stdout would be part of every
	// command's output (hive_start reads the pid from it).
	suite.Sh(t, h, hive, fmt.Sprintf(`printf '%%s\n' 'echo "$SSH_CONNECTION" >> %[1]s' > /home/rbee/.ssh/rc
chown rbee:rbee /home/rbee/.ssh/rc; : > %[1]s; chmod 0666 %[1]s`, sessionLog))
	return h, q
}

// hiveMachine is what the hive's own system says about rbee-hive and SSH.
type hiveMachine struct {
	binary   string // "inode mtime sha256" of the installed binary, or "absent"
	temps    int    // upload temporaries beside it
	procs    string // pids of running rbee-hive processes, comma-separated
	pidFile  string // content of the pid file, or "absent"
	sessions int    // SSH sessions sshd started so far
}

func inspectHive(t testing.TB, h *integration.Harness) hiveMachine {
	t.Helper()
	script := fmt.Sprintf(`b=%[1]s
if [ -e "$b" ]; then echo "$(stat -c '%%i %%Y' "$b") $(sha256sum < "$b" | cut -c1-64)"; else echo absent; fi
ls -A "$(dirname "$b")" | grep -c '^\.rbee-hive\.tmp-' || true
pgrep -u rbee -x rbee-hive | tr '\n' , ; echo
if [ -e %[2]s ]; then tr -d '\n' < %[2]s; echo; else echo absent; fi
wc -l < %[3]s`, binaryPath, hivePidFile, sessionLog)
	lines := strings.Split(strings.TrimRight(suite.Sh(t, h, hive, script), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("inspecting the hive: %q", lines)
	}
	temps, err1 := strconv.Atoi(strings.TrimSpace(lines[1]))
	sessions, err2 := strconv.Atoi(strings.TrimSpace(lines[4]))
	if err1 != nil || err2 != nil {
		t.Fatalf("inspecting the hive: %q", lines)
	}
	return hiveMachine{binary: lines[0], temps: temps, procs: strings.TrimSuffix(lines[2], ","), pidFile: lines[3], sessions: sessions}
}

// mustBeUntouched fails unless the hive is as before and the queen's
// refused connections started no SSH session on it.
func mustBeUntouched(t testing.TB, before, after hiveMachine) {
	t.Helper()
	if after.binary != before.binary {
		t.Errorf("installed binary changed from %q to %q although the connection was refused", before.binary, after.binary)
	}
	if after.temps != 0 {
		t.Errorf("%d upload temporaries beside %s although the connection was refused", after.temps, binaryPath)
	}
	if after.procs != "" {
		t.Errorf("rbee-hive runs on the hive (pids %s) although the connection was refused", after.procs)
	}
	if after.pidFile != "absent" {
		t.Errorf("%s holds %q although the connection was refused", hivePidFile, after.pidFile)
	}
	if after.sessions != before.sessions {
		t.Errorf("the hive's sshd started %d sessions for the refused operations; want none", after.sessions-before.sessions)
	}
}

// refusedThenAccepted runs a forced hive_install and a hive_start with the
// queen's current (bad) SSH setup, wants both to end [ERROR] naming
// every one of want with nothing done on the hive, then writes good to the
// queen's path and wants the same operations to install and start the hive.
func refusedThenAccepted(t *testing.T, h *integration.Harness, q *client.Client, hist *checks.History, path string, good []byte, want ...string) {
	t.Helper()
	before := inspectHive(t, h)
	if before.binary == "absent" || before.procs != "" || before.pidFile != "absent" || before.sessions != 0 {
		t.Fatalf("precondition: want an installed, stopped hive with no SSH session yet; have %+v", before)
	}
	for _, req := range []api.JobRequest{
		{Operation: api.OpHiveInstall, Alias: hive, Force: true},
		{Operation: api.OpHiveStart, Alias: hive},
	} {
		o := suite.Try(t, opTimeout, q, hist, req)
		suite.MustError(t, o, append([]string{hive}, want...)...)
		t.Logf("%s refused: %s", req.Operation, o.Error)
	}
	mustBeUntouched(t, before, inspectHive(t, h))
	if t.Failed() {
		t.FailNow()
	}

	// Negative control: the same operations with the right file.
	suite.PutFile(t, h, "queen", path, good)
	o := suite.Try(t, opTimeout, q, hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive, Force: true})
	suite.MustDone(t, o)
	installedNow := inspectHive(t, h)
	if installedNow.binary == before.binary || installedNow.temps != 0 || installedNow.sessions == 0 {
		t.Fatalf("accepted hive_install: hive shows %+v (before %+v); want a new binary, no temporaries, SSH sessions", installedNow, before)
	}
	o = suite.Try(t, opTimeout, q, hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	suite.MustDone(t, o)
	res, err := checks.Result[api.HiveStartResult](o)
	if err != nil {
		t.Fatal(err)
	}
	started := inspectHive(t, h)
	if res.PID <= 0 || started.pidFile != strconv.Itoa(res.PID) || started.procs != strconv.Itoa(res.PID) {
		t.Fatalf("accepted hive_start: result pid %d, hive shows pid file %q, rbee-hive pids %q; want the same pid in all three", res.PID, started.pidFile, started.procs)
	}
	t.Logf("with the right %s: installed, started pid %d, %d SSH sessions on the hive", path, res.PID, started.sessions)
}

// fingerprint is the SHA256 fingerprint of a repository public key file.
func fingerprint(t testing.TB, rel string) string {
	t.Helper()
	return ssh.FingerprintSHA256(publicKey(t, rel))
}

// A queen whose known_hosts pins another machine's key for the hive refuses to connect: hive_install and hive_start end [ERROR] "host key mismatch" naming the server's key, and nothing is installed, started or run on the hive; with the right known_hosts both work.
func TestQueenRefusesMismatchedHostKey(t *testing.T) {
	t.Parallel()
	// hive-localhost and hive-1 swap keys: the hive's real key is still in
	// the file, under another name, so a queen that accepted any key it
	// knows, or looked the hive up under the wrong name, would connect.
	keyOf := map[string]string{}
	suite.KnownHosts(t, func(name, typ, key string) string { keyOf[name] = typ + " " + key; return "" })
	if keyOf[hive] == "" || keyOf["hive-1"] == "" || keyOf[hive] == keyOf["hive-1"] {
		t.Fatalf("keys/known_hosts: want distinct entries for %s and hive-1; have %q", hive, keyOf)
	}
	swapped := suite.KnownHosts(t, func(name, typ, key string) string {
		switch name {
		case hive:
			return name + " " + keyOf["hive-1"]
		case "hive-1":
			return name + " " + keyOf[hive]
		}
		return name + " " + typ + " " + key
	})
	h, q := startQueenSSH(t, swapped, suite.RepoFile(t, "keys/test_id_rsa"))
	var hist checks.History
	refusedThenAccepted(t, h, q, &hist, queenKnownHostsVar, suite.RepoFile(t, "keys/known_hosts"),
		"host key mismatch", `"`+hive+`"`, fingerprint(t, "keys/hosts/"+hive+"/ssh_host_ed25519_key.pub"))
	suite.NothingLost(t, time.Minute, q, &hist)
}

// A queen whose known_hosts has no entry for the hive refuses it as unknown (no trust on first use): [ERROR] from hive_install and hive_start, nothing done on the hive; with the entry both work.
func TestQueenRefusesUnknownHost(t *testing.T) {
	t.Parallel()
	// The hive's key stays in the file under a name the queen never dials:
	// what counts is the entry for the hive's own name.
	unknown := suite.KnownHosts(t, func(name, typ, key string) string {
		if name == hive {
			name = "elsewhere.invalid"
		}
		return name + " " + typ + " " + key
	})
	h, q := startQueenSSH(t, unknown, suite.RepoFile(t, "keys/test_id_rsa"))
	var hist checks.History
	refusedThenAccepted(t, h, q, &hist, queenKnownHostsVar, suite.RepoFile(t, "keys/known_hosts"),
		"host key for", "is unknown", "no entry in "+queenKnownHostsVar, fingerprint(t, "keys/hosts/"+hive+"/ssh_host_ed25519_key.pub"))
	suite.NothingLost(t, time.Minute, q, &hist)
}

// A queen holding a client key the hive does not authorize gets [ERROR] "authentication failed" naming that key from hive_install and hive_start, and no session runs on the hive; with the authorized key both work.
func TestQueenWrongClientKeyRunsNothing(t *testing.T) {
	t.Parallel()
	h, q := startQueenSSH(t, suite.RepoFile(t, "keys/known_hosts"), suite.RepoFile(t, "keys/wrong_id_rsa"))
	var hist checks.History
	refusedThenAccepted(t, h, q, &hist, queenIdentityVar, suite.RepoFile(t, "keys/test_id_rsa"),
		"rbee@"+hive, "authentication failed", fingerprint(t, "keys/wrong_id_rsa.pub"))
	suite.NothingLost(t, time.Minute, q, &hist)
}

// A remote command that fails reaches the client with its exit code and its stderr: hive_install's `--version` check exiting 42 and hive_start's remote start script failing at mkdir both end [ERROR] "(exit N): <stderr>", and the failed start runs nothing on the hive.
func TestQueenReportsRemoteExitCodeAndStderr(t *testing.T) {
	t.Parallel()
	const (
		calls = "/tmp/rbee-standin-calls.log" // on the hive: one line of arguments per run of the stand-in
		token = "stand-in-refuses-7f3a"       // appears only on the stand-in's stderr
	)
	// A stand-in hive binary whose --version fails with a distinctive code,
	// puts a distinctive message on stderr and something else on stdout (a
	// queen that reported stdout or dropped stderr would lose the token).
	standin := fmt.Sprintf("#!/bin/sh\n# rbee-hive stand-in: --version fails.\necho \"$*\" >> %s\necho stdout-noise\necho \"%s: $*\" >&2\nexit 42\n", calls, token)
	h := integration.Start(t, integration.Localhost, bareHive,
		integration.WithFile("queen", probePath, []byte(standin)),
		integration.WithFile("queen", queenToml, suite.QueenConfig(t, "localhost", map[string]string{
			"hive_binary": strconv.Quote(probePath),
		})))
	q := h.MustQueen(t)
	var hist checks.History

	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive})
	suite.MustError(t, o, hive, "checking the installed binary", "exit 42", token+": --version")
	if strings.Contains(o.Error, "stdout-noise") {
		t.Errorf("error %q reports stdout; want stderr when there is some", o.Error)
	}
	// The failure came from the hive: the command ran there, once.
	if got := strings.TrimSpace(suite.Sh(t, h, hive, "cat "+calls)); got != "--version" {
		t.Fatalf("the stand-in ran on the hive with %q; want exactly one --version", got)
	}

	// hive_start: the binary is there now (the upload put it in place before
	// --version ran), but its state directory is a regular file, so the
	// start script's `mkdir -p` fails before anything is started.
	suite.Sh(t, h, hive, "rm -rf /home/rbee/.local/state/rbee && touch /home/rbee/.local/state/rbee && chown rbee:rbee /home/rbee/.local/state/rbee")
	o = suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	suite.MustError(t, o, hive, "starting rbee-hive failed on rbee@"+hive, "(exit 1)", "mkdir", "/home/rbee/.local/state/rbee")
	if got := strings.TrimSpace(suite.Sh(t, h, hive, "cat "+calls)); got != "--version" {
		t.Errorf("after the failed hive_start the stand-in has run with %q; want only the earlier --version", got)
	}
	if r := h.MustExec(t, hive, []string{"pgrep", "-u", "rbee", "-x", "rbee-hive"}); r.ExitCode == 0 {
		t.Errorf("rbee-hive runs on the hive after the failed start: pids %s", strings.TrimSpace(r.Stdout))
	}
	t.Logf("remote failures reported: %s", o.Error)
	suite.NothingLost(t, time.Minute, q, &hist)
}
