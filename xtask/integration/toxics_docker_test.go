//go:build docker

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// Tests of the connection-level faults against real containers: each toxic
// is checked where the data arrives (inside the container that opened the
// connection, timed there, not through docker exec), with a control that
// the same transfer is unaffected without the toxic or in the other
// direction.

// peerPort is where servePeer's test server listens in the peer.
const peerPort = 7000

// servePeer runs a small TCP server in svc for the test's lifetime: a line
// "get N" is answered with N bytes, then the server closes; "put N" reads N
// bytes and answers "got N"; "sink" reads to EOF (the client's half-close)
// and answers "got N". It returns once the port accepts. The request line
// is read with sysread, byte by byte, like the data after it: Perl's
// buffered readline would swallow the data that arrived in the same
// segment as the line, where sysread never sees it, and "put" would wait
// forever for bytes it already had.
func servePeer(t *testing.T, h *Harness, svc string) {
	t.Helper()
	prog := fmt.Sprintf(`use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => %d, Listen => 16, ReuseAddr => 1) or die "listen: $!";
$SIG{CHLD} = 'IGNORE';
while (my $c = $s->accept) {
  next if fork;
  my $l = ''; while (sysread($c, my $ch, 1)) { $l .= $ch; last if $ch eq "\n" }
  if ($l =~ /^get (\d+)/) { my $n = $1; while ($n > 0) { my $k = $n > 65536 ? 65536 : $n; print $c ("x" x $k); $n -= $k } }
  elsif ($l =~ /^put (\d+)/) { my $n = 0; while ($n < $1) { my $r = sysread($c, my $b, 65536); last unless $r; $n += $r } print $c "got $n\n" }
  elsif ($l =~ /^sink/) { my $n = 0; while (my $r = sysread($c, my $b, 65536)) { $n += $r } print $c "got $n\n" }
  close $c; exit 0;
}`, peerPort)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _, _ = h.Exec(ctx, svc, []string{"timeout", "900", "perl", "-e", prog}) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := h.MustExec(t, svc, []string{"bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", peerPort)})
		if r.ExitCode == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("test server in %s never listened on %d", svc, peerPort)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// transfer is one exchange with servePeer's server, as the client saw it.
type transfer struct {
	bytes   int           // bytes received
	elapsed time.Duration // connect → end of the exchange, clocked in the container
	exit    int           // of the reading command: 0 EOF, 124 our timeout, else an error
	stderr  string
}

func (x transfer) String() string {
	return fmt.Sprintf("%d bytes in %v, exit %d %s", x.bytes, x.elapsed, x.exit, strings.TrimSpace(x.stderr))
}

// answerLen is the length of servePeer's answer to an upload of n bytes.
func answerLen(n int) int { return len(fmt.Sprintf("got %d\n", n)) }

// execMargin is what a docker exec may add to the command's own time limit
// on a loaded machine (creating and attaching the exec, starting bash).
const execMargin = 2 * time.Minute

// exchange runs in from: connect to to's test server, send "get n" (or
// "put n" and n bytes; or "sink", n bytes and a half-close), read until
// EOF or limit. The exec's own deadline is limit plus execMargin, so the
// reader's timeout always ends it first.
func exchange(t *testing.T, h *Harness, from, to, verb string, n int, limit time.Duration) transfer {
	t.Helper()
	ip, err := h.IP(to)
	if err != nil {
		t.Fatal(err)
	}
	secs := int((limit + time.Second - 1) / time.Second)
	var script string
	switch verb {
	case "sink":
		// bash cannot shutdown(SHUT_WR) a /dev/tcp socket; perl can.
		script = fmt.Sprintf(`o=$(mktemp); e=$(mktemp); s=$(date +%%s%%N)
timeout %d perl -MIO::Socket::INET -e '
my $c = IO::Socket::INET->new(PeerAddr => "%s", PeerPort => %d) or exit 90;
syswrite($c, "sink\n"); my $n = %d;
while ($n > 0) { my $k = $n > 65536 ? 65536 : $n; my $w = syswrite($c, "\0" x $k) or die "write: $!"; $n -= $w }
shutdown($c, 1) or die "shutdown: $!";
while (sysread($c, my $b, 65536)) { print $b }' >"$o" 2>"$e"; rc=$?
f=$(date +%%s%%N)
echo "$(wc -c <"$o") $(( (f - s) / 1000 )) $rc $(head -c 200 "$e")"`, secs, ip, peerPort, n)
	default:
		send := fmt.Sprintf(`echo "get %d" >&3`, n)
		if verb == "put" {
			send = fmt.Sprintf(`{ echo "put %d"; head -c %d /dev/zero; } >&3`, n, n)
		}
		script = fmt.Sprintf(`o=$(mktemp); e=$(mktemp); s=$(date +%%s%%N)
exec 3<>/dev/tcp/%s/%d || exit 90
%s
timeout %d cat <&3 >"$o" 2>"$e"; rc=$?
f=$(date +%%s%%N)
echo "$(wc -c <"$o") $(( (f - s) / 1000 )) $rc $(head -c 200 "$e")"`, ip, peerPort, send, secs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit+execMargin)
	defer cancel()
	r, err := h.Exec(ctx, from, []string{"bash", "-c", script})
	if err != nil {
		t.Fatalf("exchange %s→%s (%s %d, limit %v): %v", from, to, verb, n, limit, err)
	}
	f := strings.Fields(r.Stdout)
	if r.ExitCode != 0 || len(f) < 3 {
		t.Fatalf("exchange %s→%s: exit %d: %s %s", from, to, r.ExitCode, r.Stdout, r.Stderr)
	}
	b, _ := strconv.Atoi(f[0])
	us, _ := strconv.Atoi(f[1])
	rc, _ := strconv.Atoi(f[2])
	return transfer{bytes: b, elapsed: time.Duration(us) * time.Microsecond, exit: rc, stderr: strings.Join(f[3:], " ")}
}

// Latency slows from's new connections to to by at least the delay, not
// to's connections to from; recovered, the same exchange is fast again.
func TestToxicLatency(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	servePeer(t, h, "hive-localhost")
	servePeer(t, h, "queen")
	const d = 2 * time.Second
	h.MustInject(t, Latency("queen", "hive-localhost", d, 0))
	if x := exchange(t, h, "queen", "hive-localhost", "get", 10, 60*time.Second); x.bytes != 10 || x.elapsed < d {
		t.Fatalf("queen→hive with %v latency: %v, want 10 bytes after ≥ %v", d, x, d)
	}
	if x := exchange(t, h, "hive-localhost", "queen", "get", 10, 60*time.Second); x.bytes != 10 || x.elapsed >= d {
		t.Fatalf("hive→queen while queen→hive is slowed: %v, want well under %v", x, d)
	}
	if got := h.Faults(); len(got) != 1 || got[0] != "latency queen→hive-localhost 2s downstream" {
		t.Fatalf("Faults = %v", got)
	}
	h.MustRecover(t, Latency("queen", "hive-localhost", 0, 0))
	if x := exchange(t, h, "queen", "hive-localhost", "get", 10, 60*time.Second); x.bytes != 10 || x.elapsed >= d {
		t.Fatalf("queen→hive after recover: %v, want well under %v", x, d)
	}
	tr := strings.Join(h.Transcript(), "\n")
	for _, w := range []string{"inject latency queen→hive-localhost 2s downstream", "recover latency queen→hive-localhost"} {
		if !strings.Contains(tr, w) {
			t.Errorf("transcript lacks %q:\n%s", w, tr)
		}
	}
}

// The redirect catches new connections only: a keep-alive connection the
// queen opened before the fault keeps its speed, a new one is slowed.
func TestToxicSparesExistingConnections(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	const d = 3 * time.Second
	ip, err := h.IP("hive-localhost")
	if err != nil {
		t.Fatal(err)
	}
	// One GET /health on fd 3 (keep-alive), printing its time in ms.
	script := fmt.Sprintf(`set -e
get() {
  local s len=0 line body
  s=$(date +%%s%%N)
  printf 'GET /health HTTP/1.1\r\nHost: hive\r\n\r\n' >&3
  while IFS= read -r line <&3; do line=${line%%$'\r'}; [ -z "$line" ] && break
    case "${line,,}" in content-length:*) len=${line#*: };; esac; done
  [ "$len" -gt 0 ] && read -r -N "$len" body <&3
  echo $(( ($(date +%%s%%N) - s) / 1000000 ))
}
rm -f /tmp/ka-ready /tmp/ka-go
exec 3<>/dev/tcp/%[1]s/9000
a=$(get)
touch /tmp/ka-ready
for i in $(seq 6000); do [ -f /tmp/ka-go ] && break; sleep 0.05; done
[ -f /tmp/ka-go ]
b=$(get)
exec 3<>/dev/tcp/%[1]s/9000
c=$(get)
echo "$a $b $c"`, ip)
	type res struct {
		r   CommandResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := h.Exec(context.Background(), "queen", []string{"bash", "-c", script})
		done <- res{r, err}
	}()
	waitFile(t, h, "queen", "/tmp/ka-ready")
	h.MustInject(t, Latency("queen", "hive-localhost", d, 0))
	h.MustExec(t, "queen", []string{"touch", "/tmp/ka-go"})
	r := <-done
	if r.err != nil || r.r.ExitCode != 0 {
		t.Fatalf("keep-alive script: %v, exit %d: %s %s", r.err, r.r.ExitCode, r.r.Stdout, r.r.Stderr)
	}
	var before, old, fresh int
	if _, err := fmt.Sscan(r.r.Stdout, &before, &old, &fresh); err != nil {
		t.Fatalf("keep-alive script printed %q: %v", r.r.Stdout, err)
	}
	t.Logf("GET /health: %d ms before the fault, %d ms on the old connection, %d ms on a new one (latency %v)", before, old, fresh, d)
	if time.Duration(old)*time.Millisecond >= d {
		t.Errorf("the connection opened before the fault took %d ms: it was redirected", old)
	}
	if time.Duration(fresh)*time.Millisecond < d {
		t.Errorf("a connection opened after the fault took %d ms, want ≥ %v", fresh, d)
	}
}

// waitFile polls until path exists in svc (a deadline, not a fixed wait).
func waitFile(t *testing.T, h *Harness, svc, path string) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for h.MustExec(t, svc, []string{"test", "-f", path}).ExitCode != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared in %s", path, svc)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Bandwidth caps the chosen stream only: downstream, a download takes at
// least size/rate while an upload is not slowed; upstream, the reverse.
// Every exchange must be whole (all bytes down; the server's "got N" for
// all bytes up), and an upload that ends with the client's half-close gets
// its answer through the capped stream too. The readers' limit derives
// from the cap: ten times the capped transfer's time, and at least a
// minute.
func TestToxicBandwidth(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	servePeer(t, h, "hive-localhost")
	const size, rate = 200_000, 50 // bytes, KB/s: 4 s at the cap
	capped := time.Duration(size/rate) * time.Millisecond
	floor := capped * 3 / 4
	limit := max(10*capped, time.Minute)
	up := answerLen(size)
	h.MustInject(t, Bandwidth("queen", "hive-localhost", rate))
	if x := bwExchange(t, h, "down-capped get", "get", size, limit); x.bytes != size || x.elapsed < floor {
		t.Fatalf("download at %d KB/s: %v, want %d bytes after ≥ %v", rate, x, size, floor)
	}
	if x := bwExchange(t, h, "down-capped put", "put", size, limit); x.bytes != up || x.elapsed >= floor {
		t.Fatalf("upload with a downstream cap: %v, want the %d-byte answer well under %v", x, up, floor)
	}
	h.MustInject(t, Bandwidth("queen", "hive-localhost", rate).Upstream())
	h.MustRecover(t, Bandwidth("queen", "hive-localhost", rate))
	if x := bwExchange(t, h, "up-capped put", "put", size, limit); x.bytes != up || x.elapsed < floor {
		t.Fatalf("upload at %d KB/s upstream: %v, want the %d-byte answer after ≥ %v", rate, x, up, floor)
	}
	if x := bwExchange(t, h, "up-capped sink", "sink", size, limit); x.bytes != up || x.exit != 0 || x.elapsed < floor {
		t.Fatalf("half-closed upload at %d KB/s upstream: %v, want the %d-byte answer after ≥ %v", rate, x, up, floor)
	}
	if x := bwExchange(t, h, "up-capped get", "get", size, limit); x.bytes != size || x.elapsed >= floor {
		t.Fatalf("download with only an upstream cap: %v, want well under %v", x, floor)
	}
}

// bwExchange is exchange queen→hive-localhost, logged.
func bwExchange(t *testing.T, h *Harness, what, verb string, n int, limit time.Duration) transfer {
	t.Helper()
	x := exchange(t, h, "queen", "hive-localhost", verb, n, limit)
	t.Logf("%s: %v (limit %v)", what, x, limit)
	return x
}

// Hang keeps the connection open and delivers nothing (the reader's own
// timeout ends it, not an EOF); LimitData closes after exactly n bytes;
// ResetPeer resets; SlowClose holds the close back; Slice delivers every
// byte, slowly. Each is checked against the unfaulted exchange first.
func TestToxicKinds(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	servePeer(t, h, "hive-localhost")
	const size = 100_000
	get := func(limit time.Duration) transfer {
		return exchange(t, h, "queen", "hive-localhost", "get", size, limit)
	}
	// The control is whole and ends by EOF, faster than the least delay a
	// toxic below must add (slow-close's 3 s).
	const fast = 3 * time.Second
	if x := get(60 * time.Second); x.bytes != size || x.exit != 0 || x.elapsed >= fast {
		t.Fatalf("control exchange: %v, want all %d bytes and EOF in under %v", x, size, fast)
	}

	t.Run("hang", func(t *testing.T) {
		h.MustInject(t, Hang("queen", "hive-localhost"))
		defer h.MustRecover(t, Hang("queen", "hive-localhost"))
		if x := get(5 * time.Second); x.bytes != 0 || x.exit != 124 {
			t.Fatalf("hung exchange: %v, want 0 bytes and the reader's timeout (124), not EOF", x)
		}
	})
	t.Run("limit-data", func(t *testing.T) {
		h.MustInject(t, LimitData("queen", "hive-localhost", 1000))
		defer h.MustRecover(t, LimitData("queen", "hive-localhost", 1))
		if x := get(60 * time.Second); x.bytes != 1000 || x.exit != 0 {
			t.Fatalf("limited exchange: %v, want exactly 1000 bytes then EOF", x)
		}
	})
	t.Run("reset-peer", func(t *testing.T) {
		h.MustInject(t, ResetPeer("queen", "hive-localhost", 0))
		defer h.MustRecover(t, ResetPeer("queen", "hive-localhost", 0))
		x := get(60 * time.Second)
		if x.bytes == size || x.exit == 0 || !strings.Contains(x.stderr, "reset") {
			t.Fatalf("reset exchange: %v, want a read error 'Connection reset by peer' before all %d bytes", x, size)
		}
	})
	t.Run("slow-close", func(t *testing.T) {
		const d = fast
		h.MustInject(t, SlowClose("queen", "hive-localhost", d))
		defer h.MustRecover(t, SlowClose("queen", "hive-localhost", d))
		if x := get(60 * time.Second); x.bytes != size || x.elapsed < d {
			t.Fatalf("slow-close exchange: %v, want all bytes and EOF after ≥ %v", x, d)
		}
	})
	t.Run("slice", func(t *testing.T) {
		// 100 pieces of 1000 bytes, 40 ms apart: ≥ 99 × 40 ms.
		h.MustInject(t, Slice("queen", "hive-localhost", 1000, 0, 40*time.Millisecond))
		defer h.MustRecover(t, Slice("queen", "hive-localhost", 1000, 0, 0))
		if x := get(120 * time.Second); x.bytes != size || x.elapsed < 99*40*time.Millisecond {
			t.Fatalf("sliced exchange: %v, want all %d bytes after ≥ %v", x, size, 99*40*time.Millisecond)
		}
	})
	// Everything recovered: the exchange is whole and prompt again.
	if x := get(60 * time.Second); x.bytes != size || x.exit != 0 || x.elapsed >= fast {
		t.Fatalf("exchange after the toxics: %v, want all %d bytes and EOF in under %v", x, size, fast)
	}
	if got := h.Faults(); len(got) != 0 {
		t.Fatalf("faults left: %v", got)
	}
}

// A toxic stays in force across a restart of its target: the new helper
// gets the proxy and the redirect again.
func TestToxicSurvivesRestart(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	servePeer(t, h, "hive-localhost")
	h.MustInject(t, LimitData("queen", "hive-localhost", 10))
	h.MustRestart(t, "queen")
	h.MustWaitForHealthy(t, "queen", 60*time.Second)
	if x := exchange(t, h, "queen", "hive-localhost", "get", 1000, 60*time.Second); x.bytes != 10 {
		t.Fatalf("after the queen's restart: %v, want the 10-byte limit still in force", x)
	}
	h.MustRecoverAll(t)
	if x := exchange(t, h, "queen", "hive-localhost", "get", 1000, 60*time.Second); x.bytes != 1000 {
		t.Fatalf("after RecoverAll: %v", x)
	}
}

// Packet-level faults act on connections opened before them, unlike the
// toxics: a keep-alive connection the queen opened and used before Block
// gets no answer to its next request, though it answered twice before the
// fault (the control: the connection is reusable); after Recover a new one
// works.
func TestPacketFaultHitsExistingConnections(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	ip, err := h.IP("hive-localhost")
	if err != nil {
		t.Fatal(err)
	}
	// The status line of one GET /health on fd 3, then its rest drained.
	script := fmt.Sprintf(`get() {
  printf 'GET /health HTTP/1.1\r\nHost: hive\r\n\r\n' >&3
  if IFS= read -r -t 20 line <&3; then echo "${line%%$'\r'}"; else echo none; return; fi
  while IFS= read -r -t 1 line <&3; do :; done
}
rm -f /tmp/pk-ready /tmp/pk-go
exec 3<>/dev/tcp/%s/9000 || exit 90
a=$(get)
a2=$(get)
[ "$a2" = "$a" ] || a="reuse failed: $a2"
touch /tmp/pk-ready
for i in $(seq 6000); do [ -f /tmp/pk-go ] && break; sleep 0.05; done
[ -f /tmp/pk-go ] || exit 91
b=$(get)
echo "$a|$b"`, ip)
	type res struct {
		r   CommandResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := h.Exec(context.Background(), "queen", []string{"bash", "-c", script})
		done <- res{r, err}
	}()
	waitFile(t, h, "queen", "/tmp/pk-ready")
	h.MustInject(t, Block("queen", "hive-localhost"))
	h.MustExec(t, "queen", []string{"touch", "/tmp/pk-go"})
	r := <-done
	if r.err != nil || r.r.ExitCode != 0 {
		t.Fatalf("keep-alive script: %v, exit %d: %s %s", r.err, r.r.ExitCode, r.r.Stdout, r.r.Stderr)
	}
	before, after, _ := strings.Cut(strings.TrimSpace(r.r.Stdout), "|")
	t.Logf("status line before the block %q, on the same connection after it %q", before, after)
	if !strings.HasPrefix(before, "HTTP/1.1 200") {
		t.Fatalf("two GET /health on one connection before the fault answered %q, want 200 twice", before)
	}
	if after != "none" {
		t.Fatalf("the connection opened before Block still got an answer (%q): the block spared it", after)
	}
	h.MustRecover(t, Block("queen", "hive-localhost"))
	if x := h.MustExec(t, "queen", []string{"bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/9000 && printf 'GET /health HTTP/1.1\r\nHost: hive\r\n\r\n' >&3 && IFS= read -r -t 20 l <&3 && echo "$l"`, ip)}); !strings.HasPrefix(x.Stdout, "HTTP/1.1 200") {
		t.Fatalf("a new connection after Recover: exit %d %q %q", x.ExitCode, x.Stdout, x.Stderr)
	}
}

// The helper's admin endpoint listens on the target's address, so every
// peer on the network reaches it: a peer without the token gets 401 and
// its script does not run (the marker it would create stays absent in the
// helper), while the harness's own request with the token does run. And
// the endpoint survives the faults it installs: with every packet of the
// queen dropped (Loss 100 %), the recovery still arrives over the network
// and the queen talks again.
func TestToxicAdminEndpoint(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := h.PrepareToxics(ctx, "queen"); err != nil {
		t.Fatal(err)
	}
	h.faultMu.Lock()
	hp := h.helpers["queen"]
	h.faultMu.Unlock()
	if hp == nil || hp.admin == nil {
		if _, local := h.adminAddr("queen"); local {
			t.Fatal("the queen's helper has no admin endpoint though this host is on its bridge")
		}
		t.Skip("the engine's bridges are not on this host: fault scripts go through docker exec")
	}
	queenIP, err := h.IP("queen")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "/tmp/admin-test-marker"
	present := func() bool {
		r, err := execIn(ctx, h.docker, hp.id, []string{"test", "-e", marker})
		if err != nil {
			t.Fatal(err)
		}
		return r.ExitCode == 0
	}
	for _, auth := range []string{"", "Authorization: Bearer wrong-token-of-the-peer\r\n", "Authorization: Bearer " + hp.admin.token[:len(hp.admin.token)-1] + "\r\n"} {
		body := "touch " + marker + "\n"
		req := fmt.Sprintf("POST /script HTTP/1.1\r\nHost: queen\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", auth, len(body), body)
		r := h.MustExec(t, "hive-localhost", []string{"bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/39723 || exit 90; printf '%%s' "$1" >&3; timeout 30 head -c 100 <&3`, queenIP), "_", req})
		if !strings.Contains(r.Stdout, " 401 ") {
			t.Fatalf("a peer's request (%q) got %q (exit %d %s), want 401", auth, r.Stdout, r.ExitCode, r.Stderr)
		}
	}
	if present() {
		t.Fatal("a peer without the token ran a script in the fault helper")
	}
	if r, err := hp.admin.run(ctx, "touch "+marker); err != nil || r.ExitCode != 0 {
		t.Fatalf("the harness's own script: %+v, %v", r, err)
	}
	if !present() {
		t.Fatal("the harness's script with the token did not run (the control of the check above)")
	}

	hiveIP, err := h.IP("hive-localhost")
	if err != nil {
		t.Fatal(err)
	}
	reach := fmt.Sprintf("timeout 5 bash -c 'exec 3<>/dev/tcp/%s/9000'", hiveIP)
	if r := h.MustExec(t, "queen", []string{"bash", "-c", reach}); r.ExitCode != 0 {
		t.Fatalf("before the loss the queen cannot reach the hive: %+v", r)
	}
	h.MustInject(t, Loss("queen", 100))
	if r := h.MustExec(t, "queen", []string{"bash", "-c", reach}); r.ExitCode == 0 {
		t.Fatal("with 100% loss the queen still reached the hive")
	}
	h.MustRecover(t, Loss("queen", 100))
	if r := h.MustExec(t, "queen", []string{"bash", "-c", reach}); r.ExitCode != 0 {
		t.Fatalf("after recovering the loss the queen cannot reach the hive: %+v", r)
	}
}

// With WithExecFaults the helpers serve no admin endpoint (as with a
// remote engine): packet faults and toxics go through docker exec and
// still take effect and lift, and nothing listens on the admin port.
func TestExecFaultPath(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost, WithExecFaults())
	servePeer(t, h, "hive-localhost")
	servePeer(t, h, "queen")
	queen := "http://queen:8500/health"
	h.MustInject(t, Block("hive-localhost", "queen"))
	if ok, code := curl(t, h, "hive-localhost", queen); ok || code != 28 {
		t.Fatalf("hive→queen while blocked: ok=%v exit %d, want timeout (28)", ok, code)
	}
	h.MustRecover(t, Block("hive-localhost", "queen"))
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("hive→queen after recover: curl exit %d", code)
	}
	const d = 2 * time.Second
	h.MustInject(t, Latency("queen", "hive-localhost", d, 0))
	if x := exchange(t, h, "queen", "hive-localhost", "get", 10, 60*time.Second); x.bytes != 10 || x.elapsed < d {
		t.Fatalf("queen→hive with %v latency by exec: %v, want 10 bytes after ≥ %v", d, x, d)
	}
	h.MustRecover(t, Latency("queen", "hive-localhost", 0, 0))
	if x := exchange(t, h, "queen", "hive-localhost", "get", 10, 60*time.Second); x.bytes != 10 || x.elapsed >= d {
		t.Fatalf("queen→hive after recover: %v, want well under %v", x, d)
	}
	// Both targets have helpers, and neither serves the admin port: the
	// connection is refused (exit 7), where a default harness answers.
	for _, c := range []struct{ from, to string }{{"hive-localhost", "queen"}, {"queen", "hive-localhost"}} {
		url := fmt.Sprintf("http://%s:%d/ping", c.to, toxic.AdminPort)
		if ok, code := curl(t, h, c.from, url); ok || code != 7 {
			t.Fatalf("%s → %s: ok=%v exit %d, want refused (7): no admin endpoint with WithExecFaults", c.from, url, ok, code)
		}
	}
}

// A helper whose rbee-toxic exits at once (a stand-in that prints a line
// and exits 3) is given up as soon as the harness sees it stopped, with its
// log read from the stopped container in the transcript, and the fault is
// installed by a helper that takes scripts by exec: the block is in force
// (the effect at the receiver) and lifts on recover.
//
// Serial: it sets RBEE_TOXIC_BIN for the process (t.Setenv).
func TestAdminDownFallsBackToExec(t *testing.T) {
	stub := filepath.Join(t.TempDir(), "rbee-toxic")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\necho 'rbee-toxic stand-in: exiting 3'\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ToxicBinEnv, stub)
	h := Start(t, Localhost)
	if _, local := h.adminAddr("hive-localhost"); !local {
		t.Skip("the engine's bridges are not on this host: helpers never serve the admin endpoint")
	}
	queen := "http://queen:8500/health"
	h.MustInject(t, Block("hive-localhost", "queen"))
	if ok, code := curl(t, h, "hive-localhost", queen); ok || code != 28 {
		t.Fatalf("hive→queen while blocked: ok=%v exit %d, want timeout (28)", ok, code)
	}
	h.faultMu.Lock()
	hp := h.helpers["hive-localhost"]
	h.faultMu.Unlock()
	if hp == nil || hp.admin != nil {
		t.Fatalf("helper %+v: want one that takes scripts by exec", hp)
	}
	tr := strings.Join(h.Transcript(), "\n")
	for _, want := range []string{"takes its scripts by docker exec", "no longer running", "exit code 3", "rbee-toxic stand-in: exiting 3"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
	h.MustRecover(t, Block("hive-localhost", "queen"))
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("hive→queen after recover: curl exit %d", code)
	}
}
