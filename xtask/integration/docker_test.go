//go:build docker

package integration

// Tests of the harness against real containers. They need a Docker engine
// and the images from `go run mage.go setup`:
//
//	go test -tags docker -p 1 -v ./xtask/integration/

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// TestMain checks, after all tests, that nothing this process labelled is
// left on the engine: no container, network or volume.
func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv("RBEE_HARNESS_HELPER") == "" && code == 0 {
		if left := leftovers(context.Background(), os.Getpid()); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: labelled resources left after the package:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// leftovers lists containers, networks and volumes labelled as owned by pid.
func leftovers(ctx context.Context, pid int) []string {
	d, _, err := connect(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	f := make(client.Filters).Add("label", dockerx.LabelProject+"="+dockerx.ProjectValue).Add("label", dockerx.LabelOwnerPID+"="+strconv.Itoa(pid))
	var out []string
	if cs, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, c := range cs.Items {
			out = append(out, "container "+strings.Join(c.Names, ","))
		}
	}
	if ns, err := d.NetworkList(ctx, client.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range ns.Items {
			out = append(out, "network "+n.Name)
		}
	}
	if vs, err := d.VolumeList(ctx, client.VolumeListOptions{Filters: f}); err == nil {
		for _, v := range vs.Items {
			out = append(out, "volume "+v.Name)
		}
	}
	return out
}

// curl runs curl inside svc against url and reports whether it got an HTTP
// answer within 2 s (exit 0) and the exit code otherwise (7: refused,
// 28: timed out).
func curl(t *testing.T, h *Harness, svc, url string) (bool, int) {
	t.Helper()
	// 4 s: a request that should pass has room on a loaded machine; one that
	// should be dropped costs that much.
	r := h.MustExec(t, svc, []string{"curl", "-sS", "-o", "/dev/null", "-m", "4", "--connect-timeout", "4", url})
	return r.ExitCode == 0, r.ExitCode
}

// The localhost topology comes up isolated, labelled, and reachable through
// URL, Exec, Logs, SSH and the typed queen client.
func TestLocalhostBasics(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost, WithEnv(map[string]string{"RBEE_GPUS": "2"}))
	ctx := context.Background()

	q := h.MustQueen(t)
	if body, err := q.Health(ctx); err != nil {
		t.Fatalf("queen /health: %v (%q)", err, body)
	}
	hiveURL := h.MustURL(t, "hive-localhost", 9000)
	if !strings.HasPrefix(hiveURL, "http://127.0.0.1:") || strings.HasSuffix(hiveURL, ":9000") {
		t.Fatalf("hive URL %s is not an ephemeral 127.0.0.1 port", hiveURL)
	}
	resp, err := http.Get(hiveURL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("hive /health: %v %v", resp, err)
	}
	resp.Body.Close()

	r := h.MustExec(t, "hive-localhost", []string{"cat", "/etc/hostname"})
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "hive-localhost" {
		t.Fatalf("hostname: %+v", r)
	}
	if r := h.MustExec(t, "hive-localhost", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}); r.ExitCode != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Fatalf("exec streams/exit code: %+v", r)
	}
	if r := h.MustExec(t, "hive-localhost", []string{"printenv", "RBEE_GPUS"}); strings.TrimSpace(r.Stdout) != "2" {
		t.Fatalf("WithEnv did not reach the hive: RBEE_GPUS=%q", r.Stdout)
	}
	if r := h.MustExec(t, "hive-localhost", []string{"id", "-un"}, AsUser("rbee")); strings.TrimSpace(r.Stdout) != "rbee" {
		t.Fatalf("AsUser: %+v", r)
	}

	ip, err := h.IP("queen")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ip, "172.28.") && !strings.HasPrefix(ip, "172.29.") && !strings.HasPrefix(ip, "172.30.") && !strings.HasPrefix(ip, "172.31.") {
		t.Fatalf("queen IP %s is outside the harness pool", ip)
	}
	if !strings.HasSuffix(ip, ".10") {
		t.Fatalf("queen IP %s lost the compose file's host part .10", ip)
	}

	sc := h.MustSSH(t, "hive-localhost")
	sess, err := sc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("id -un")
	sess.Close()
	if err != nil || strings.TrimSpace(string(out)) != "rbee" {
		t.Fatalf("ssh id -un = %q, %v", out, err)
	}
	if _, err := h.SSHWithKey(ctx, "hive-localhost", h.cfg.keysDir+"/wrong_id_rsa", nil); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("ssh with the wrong key: %v", err)
	}

	if logs := h.MustLogs(t, "queen"); logs == "" {
		t.Fatal("queen logs are empty")
	}

	// Every container and the network carry the labels.
	for _, svc := range h.Services() {
		s, _ := h.service(svc)
		ins, err := h.docker.ContainerInspect(ctx, s.id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l := ins.Container.Config.Labels
		if l[dockerx.LabelProject] != dockerx.ProjectValue || l[dockerx.LabelTest] != t.Name() || l[dockerx.LabelOwnerPID] != strconv.Itoa(os.Getpid()) || l[dockerx.LabelStartedAt] == "" || l[api.ProjectLabel] != h.Name() {
			t.Errorf("%s labels: %v", svc, l)
		}
		if caps := ins.Container.HostConfig.CapAdd; len(caps) != 0 {
			t.Errorf("%s runs with extra capabilities %v", svc, caps)
		}
		if hc := ins.Container.Config.Healthcheck; hc == nil || len(hc.Test) == 0 || hc.Test[0] != "NONE" {
			t.Errorf("%s: Docker healthcheck not disabled: %+v", svc, hc)
		}
	}
	ns, err := h.docker.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", dockerx.LabelRun+"="+h.Name())})
	if err != nil || len(ns.Items) != 1 || ns.Items[0].Labels[dockerx.LabelTest] != t.Name() {
		t.Fatalf("network labels: %v %v", ns.Items, err)
	}
}

// A hive without its daemon (only sshd) is healthy by its healthcheck, which
// the harness runs itself, even though port 9000 never answers.
func TestHealthcheckDecidesWhenAPortIsSilent(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost, WithServices("hive-localhost"), WithEnv(map[string]string{"RBEE_HIVE_AUTOSTART": "0"}))
	resp, err := http.Get(h.MustURL(t, "hive-localhost", 9000) + "/health")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("hive port answered %s without an autostarted hive", resp.Status)
	}
	h.MustSSH(t, "hive-localhost")
}

// A block drops TCP that hive opens to queen, checked from inside hive, and
// not what queen opens to hive; restore restores.
func TestBlockIsDirected(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	queen, hive := "http://queen:8500/health", "http://hive-localhost:9000/health"
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("hive→queen before the block: curl exit %d", code)
	}
	t0 := time.Now()
	h.MustInject(t, Block("hive-localhost", "queen"))
	t.Logf("block in effect after %v", time.Since(t0))
	if ok, code := curl(t, h, "hive-localhost", queen); ok || code != 28 {
		t.Fatalf("hive→queen while blocked: ok=%v exit %d, want timeout (28)", ok, code)
	}
	if ok, code := curl(t, h, "queen", hive); !ok {
		t.Fatalf("queen→hive while hive→queen is blocked: curl exit %d", code)
	}
	if got := h.Faults(); len(got) != 1 || got[0] != "block hive-localhost→queen (drop)" {
		t.Fatalf("Faults = %v", got)
	}
	h.MustRecover(t, Block("hive-localhost", "queen"))
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("hive→queen after restore: curl exit %d", code)
	}
	if err := h.Recover(context.Background(), Block("hive-localhost", "queen")); err == nil {
		t.Fatal("restoring twice succeeded")
	}
}

// Reject refuses at once instead of timing out; Partition cuts both ways.
func TestRejectAndPartition(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	queen, hive := "http://queen:8500/health", "http://hive-localhost:9000/health"
	h.MustInject(t, Reject("queen", "hive-localhost"))
	// Exit 7 (could not connect) rather than 28 (timed out) is the proof
	// that the connection was refused, not dropped; curl's own time_total,
	// measured inside the container, must also stay under its connect
	// timeout (a dropped SYN would use all of it). Timing the whole docker
	// exec from here would measure the engine's load, not the rule.
	r := h.MustExec(t, "queen", []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", "-m", "4", "--connect-timeout", "4", hive})
	if r.ExitCode != 7 {
		t.Fatalf("queen→hive rejected: exit %d (%s), want refused (7)", r.ExitCode, r.Stderr)
	}
	if secs, err := strconv.ParseFloat(strings.TrimSpace(r.Stdout), 64); err != nil || secs >= 4 {
		t.Fatalf("reject: curl time_total %q (%v): want well under the 4 s connect timeout", r.Stdout, err)
	}
	h.MustRecover(t, Reject("queen", "hive-localhost"))

	h.MustInject(t, Partition("queen", "hive-localhost"))
	if ok, _ := curl(t, h, "queen", hive); ok {
		t.Fatal("queen→hive works across a partition")
	}
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("hive→queen works across a partition")
	}
	// Recover one direction only.
	h.MustRecover(t, Block("queen", "hive-localhost"))
	if ok, code := curl(t, h, "queen", hive); !ok {
		t.Fatalf("queen→hive after restoring that direction: exit %d", code)
	}
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("hive→queen healed with the other direction")
	}
	h.MustRecoverAll(t)
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("hive→queen after RecoverAll: exit %d", code)
	}
	if len(h.Faults()) != 0 {
		t.Fatalf("faults after RecoverAll: %v", h.Faults())
	}
}

// A block stays in force across a restart of the blocked service (its
// namespace, and the rules in it, are new) and of its peer.
func TestFaultSurvivesRestart(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	queen, hive := "http://queen:8500/health", "http://hive-localhost:9000/health"
	h.MustInject(t, Block("hive-localhost", "queen"))
	h.MustRestart(t, "hive-localhost")
	h.MustWaitForHealthy(t, "hive-localhost", 30*time.Second)
	if ok, code := curl(t, h, "hive-localhost", queen); ok || code != 28 {
		t.Fatalf("hive→queen after hive restart: ok=%v exit %d, want still blocked", ok, code)
	}
	if ok, code := curl(t, h, "queen", hive); !ok {
		t.Fatalf("queen→hive after hive restart: exit %d", code)
	}
	h.MustRestart(t, "queen")
	h.MustWaitForHealthy(t, "queen", 30*time.Second)
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("hive→queen after queen restart: block lost")
	}
	// Stop/Start re-applies too.
	h.MustStop(t, "hive-localhost")
	h.MustStartService(t, "hive-localhost")
	h.MustWaitForHealthy(t, "hive-localhost", 30*time.Second)
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("hive→queen after stop/start: block lost")
	}
	tr := strings.Join(h.Transcript(), "\n")
	if !strings.Contains(tr, "re-applied faults of hive-localhost") {
		t.Fatalf("transcript does not show the re-application:\n%s", tr)
	}
}

// Pause makes requests time out; Unpause recovers.
func TestPauseAndUnpause(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	url := h.MustURL(t, "queen", 8500) + "/health"
	hc := &http.Client{Timeout: time.Second}
	h.MustPause(t, "queen")
	t0 := time.Now()
	resp, err := hc.Get(url)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("paused queen answered %s", resp.Status)
	}
	if d := time.Since(t0); d < 900*time.Millisecond {
		t.Fatalf("request to a paused queen failed after %v with %v: want a timeout", d, err)
	}
	// Long enough for several complete checks however slow the engine
	// answers; a paused container never becomes healthy, so it always ends
	// with the paused state as the last thing seen.
	if err := h.WaitForHealthy(context.Background(), "queen", 5*time.Second); err == nil || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("WaitForHealthy on a paused queen: %v", err)
	}
	h.MustUnpause(t, "queen")
	h.MustWaitForHealthy(t, "queen", 10*time.Second)
	resp, err = hc.Get(url)
	if err != nil {
		t.Fatalf("after unpause: %v", err)
	}
	resp.Body.Close()
}

// WaitForHealthy on a killed service fails at once, with its last log lines.
func TestWaitForHealthyFailsFastOnExit(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	h.MustKill(t, "hive-localhost")
	t0 := time.Now()
	err := h.WaitForHealthy(context.Background(), "hive-localhost", 60*time.Second)
	if err == nil {
		t.Fatal("WaitForHealthy on a killed hive succeeded")
	}
	// At once means long before the deadline, not within a fixed budget a
	// loaded engine could overrun.
	if d := time.Since(t0); d > 30*time.Second {
		t.Fatalf("WaitForHealthy took %v of its 60 s on an exited container", d)
	}
	if !strings.Contains(err.Error(), "not running") || !strings.Contains(err.Error(), "last 30 log lines of hive-localhost") {
		t.Fatalf("error lacks state or logs: %v", err)
	}
	if _, err := h.URL("hive-localhost", 9000); err == nil {
		t.Fatal("URL of a dead container still answers a port")
	}
	h.MustStartService(t, "hive-localhost")
	h.MustWaitForHealthy(t, "hive-localhost", 30*time.Second)
	// Graceful stop through a signal: tini forwards SIGTERM.
	h.MustSignal(t, "queen", syscall.SIGTERM)
	code, err := h.WaitForExit(context.Background(), "queen", 15*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("queen after SIGTERM: exit %d, %v; want a graceful exit 0", code, err)
	}
	if err := h.WaitForHealthy(context.Background(), "queen", 15*time.Second); err == nil || !strings.Contains(err.Error(), "exit code 0") {
		t.Fatalf("WaitForHealthy on the stopped queen: %v", err)
	}
}

// Isolate cuts a service from its peers both ways but not from the test;
// 100 % loss drops everything; rate limits install; latency is supported or
// says it is not.
func TestIsolateLossRateLatency(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	ctx := context.Background()
	queen, hive := "http://queen:8500/health", "http://hive-localhost:9000/health"

	h.MustInject(t, Isolate("hive-localhost"))
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("isolated hive reached the queen")
	}
	if ok, _ := curl(t, h, "queen", hive); ok {
		t.Fatal("queen reached the isolated hive")
	}
	h.MustWaitForHealthy(t, "hive-localhost", 30*time.Second) // the host path stays open
	h.MustRecoverAll(t)

	h.MustInject(t, Loss("queen", 100))
	if ok, _ := curl(t, h, "hive-localhost", queen); ok {
		t.Fatal("100% loss let a request through")
	}
	h.MustRecoverAll(t)
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("after healing loss: exit %d", code)
	}

	h.MustInject(t, RateLimit("queen", "1mbit"))
	if ok, code := curl(t, h, "hive-localhost", queen); !ok {
		t.Fatalf("small request under a 1mbit limit: exit %d", code)
	}
	h.MustRecoverAll(t)

	err := h.Inject(ctx, PacketLatency("queen", 50*time.Millisecond, 0))
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		t.Logf("latency unsupported here, as expected without sch_netem: %v", err)
	case err != nil:
		t.Fatalf("latency: %v", err)
	default:
		h.MustRecoverAll(t)
	}
}

// Two harnesses in parallel get their own subnets and ports, and a fault in
// one does not touch the other.
func TestParallelHarnesses(t *testing.T) {
	t.Parallel()
	type up struct {
		h   *Harness
		sub string
	}
	results := make(chan up, 2)
	for i := range 2 {
		t.Run(fmt.Sprintf("h%d", i), func(t *testing.T) {
			t.Parallel()
			h := Start(t, Localhost)
			results <- up{h, h.subnets()}
			if i == 0 {
				h.MustInject(t, Block("hive-localhost", "queen"))
				if ok, _ := curl(t, h, "hive-localhost", "http://queen:8500/health"); ok {
					t.Fatal("block not in effect")
				}
			} else {
				for range 3 {
					if ok, code := curl(t, h, "hive-localhost", "http://queen:8500/health"); !ok {
						t.Fatalf("the other harness's block reached this one: exit %d", code)
					}
				}
			}
		})
	}
	t.Cleanup(func() {
		close(results)
		var subs []string
		for r := range results {
			subs = append(subs, r.sub)
		}
		if len(subs) == 2 && subs[0] == subs[1] {
			t.Errorf("parallel harnesses share subnet %s", subs[0])
		}
	})
}

// MultiHiveN generates hives with their own names, addresses and host keys,
// and a hives.conf listing them all.
func TestMultiHiveN(t *testing.T) {
	t.Parallel()
	h := Start(t, MultiHiveN(3))
	if got := strings.Join(h.Services(), ","); got != "hive-1,hive-2,hive-3,queen" {
		t.Fatalf("services = %s", got)
	}
	r := h.MustExec(t, "queen", []string{"grep", "-c", `^\[\[hive\]\]`, "/etc/rbee/hives.conf"})
	if strings.TrimSpace(r.Stdout) != "3" {
		t.Fatalf("hives.conf lists %q hives", r.Stdout)
	}
	sc := h.MustSSH(t, "hive-3") // pinned to keys/hosts/hive-3
	sess, err := sc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("hostname")
	sess.Close()
	if err != nil || strings.TrimSpace(string(out)) != "hive-3" {
		t.Fatalf("hive-3 hostname %q, %v", out, err)
	}
	if ok, code := curl(t, h, "queen", "http://hive-3:9000/health"); !ok {
		t.Fatalf("queen→hive-3: exit %d", code)
	}
}

// The full stack comes up: hub first, workers once it is healthy.
func TestFullStackUp(t *testing.T) {
	t.Parallel()
	h := Start(t, FullStack)
	for _, svc := range []string{"worker-1", "worker-2"} {
		resp, err := http.Get(h.MustURL(t, svc, 9100) + "/health")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s /health: %v %v", svc, resp, err)
		}
		resp.Body.Close()
	}
	if ok, code := curl(t, h, "hive-1", "http://hub:8080/"); !ok {
		t.Fatalf("hive-1→hub: exit %d", code)
	}
}

// CollectArtifacts writes logs, inspect output, transcript and the resolved
// project, and its summary starts with the directory.
func TestArtifacts(t *testing.T) {
	t.Parallel()
	h := Start(t, Localhost)
	h.MustInject(t, Block("hive-localhost", "queen"))
	dir := t.TempDir()
	sum, err := h.CollectArtifacts(context.Background(), dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sum, "artifacts: "+dir+"\n") {
		t.Fatalf("summary does not start with the directory:\n%s", sum)
	}
	for _, f := range []string{"queen.log", "hive-localhost.log", "queen.inspect.json", "hive-localhost.inspect.json", "faults.log", "compose.yaml"} {
		b, err := os.ReadFile(dir + "/" + f)
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v (%d bytes)", f, err, len(b))
		}
	}
	if b, _ := os.ReadFile(dir + "/faults.log"); !strings.Contains(string(b), "inject block(hive-localhost→queen)") {
		t.Errorf("faults.log:\n%s", b)
	}
}

// The helper side of TestReapAfterSIGKILL (RBEE_HARNESS_HELPER=1: bring a
// stack up, say so, hang) and of TestFailedRun (=fail: fail the test;
// =panic: panic).
//
// Serial: it runs only as a child process, alone in its test binary.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv("RBEE_HARNESS_HELPER") {
	case "fail":
		h := Start(t, Localhost, WithServices("queen"))
		h.MustInject(t, Block("queen", "nope")) // unknown service: fails the test
		return
	case "panic":
		Start(t, Localhost, WithServices("queen"))
		panic("deliberate panic with a stack up")
	case "1":
	default:
		t.Skip("helper process for TestReapAfterSIGKILL, TestInterruptRemovesStacks and TestFailedRun")
	}
	h, err := New(context.Background(), Localhost, WithName("TestReapAfterSIGKILL-victim"), WithServices("queen"))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("UP", h.Name())
	time.Sleep(5 * time.Minute) // killed long before
}

// A run killed with SIGKILL never cleans up; the next New reaps it.
//
// Serial: between the kill and its own Reap it must find the killed run's
// leftovers, which the reap of any other New in this process would remove.
func TestReapAfterSIGKILL(t *testing.T) {
	cmd, project, _ := startVictim(t, "RBEE_HARNESS_HELPER=1")
	pid := cmd.Process.Pid
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	ctx := context.Background()
	if left := leftovers(ctx, pid); len(left) == 0 {
		t.Fatal("the killed run left nothing behind: the test proves nothing")
	}
	n, err := Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := leftovers(ctx, pid); len(left) > 0 {
		t.Fatalf("after Reap (%d runs), %s still has %v", n, project, left)
	}
}

// startVictim runs TestHelperProcess (the mode in env) in a child process
// until it has printed that its stack is up; its further output goes to a
// channel nobody waits on. It returns the child, its stack's name and the
// child's stderr so far and later (read it after Wait).
func startVictim(t *testing.T, env ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(os.Stderr, stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var project string
	sc := bufio.NewScanner(stdout)
	lines := make(chan string)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(90 * time.Second)
	for project == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("helper exited without bringing a stack up")
			}
			if p, found := strings.CutPrefix(l, "UP "); found {
				project = p
			}
			if strings.HasPrefix(l, "ERR ") {
				t.Fatal(l)
			}
		case <-deadline:
			t.Fatal("helper did not come up in 90 s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return cmd, project, stderr
}

// syncBuffer is a bytes.Buffer safe for one writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An interrupted run (Ctrl-C, SIGTERM) removes its stacks before it ends,
// and still ends by the signal: no reaper needed. TestReapAfterSIGKILL is
// the control: the same helper killed without a chance to clean up leaves
// its stack behind.
func TestInterruptRemovesStacks(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			cmd, project, stderr := startVictim(t, "RBEE_HARNESS_HELPER=1", ShardEnv+"=")
			ctx := context.Background()
			pid := cmd.Process.Pid
			if left := leftovers(ctx, pid); len(left) == 0 {
				t.Fatalf("%s is up but has no labelled resources: the test proves nothing", project)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			// The removal is bounded by interruptGrace; the deadline is
			// well past it, so only a handler that hangs reaches it.
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case <-exited:
			case <-time.After(interruptGrace + 60*time.Second):
				t.Fatalf("the child did not end within %v of %v", interruptGrace+60*time.Second, sig)
			}
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("child ended with %v, want killed by %v", cmd.ProcessState, sig)
			}
			if left := leftovers(ctx, pid); len(left) > 0 {
				t.Fatalf("after %v, %s still has %v\nchild stderr:\n%s", sig, project, left, stderr)
			}
			if want := "removing 1 stacks of this process"; !strings.Contains(stderr.String(), want) {
				t.Errorf("child stderr lacks %q:\n%s", want, stderr)
			}
		})
	}
}

// runHelper runs TestHelperProcess in a child process in the given mode and
// returns its combined output and pid.
func runHelper(t *testing.T, mode string, env ...string) (string, int) {
	t.Helper()
	// The helper starts Localhost: outside its shard it would skip, not fail.
	if why, err := shardSkip(Localhost); err != nil {
		t.Fatal(err)
	} else if why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	// The helper's stack is Localhost whatever shard this run is: without
	// clearing RBEE_TOPOLOGY it would skip on the other shards, not fail.
	cmd.Env = append(append(os.Environ(), "RBEE_HARNESS_HELPER="+mode, ShardEnv+"="), env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helper %s passed; want a failed test:\n%s", mode, out)
	}
	return string(out), cmd.Process.Pid
}

// A failed test writes artifacts and, with RBEE_KEEP_FAILED=1, keeps its
// stack and says how to remove it; a panicking test leaves nothing behind.
func TestFailedRun(t *testing.T) {
	t.Parallel()
	art := t.TempDir()
	out, pid := runHelper(t, "fail", "RBEE_KEEP_FAILED=1", "RBEE_TEST_ARTIFACTS="+art)
	dir := art + "/TestHelperProcess"
	if !strings.Contains(out, "artifacts: "+dir+"\n") {
		t.Fatalf("output lacks the artifacts line:\n%s", out)
	}
	if !strings.Contains(out, "--- queen: last") {
		t.Fatalf("output lacks the queen's log tail:\n%s", out)
	}
	for _, f := range []string{"queen.log", "queen.inspect.json", "faults.log", "compose.yaml"} {
		if _, err := os.Stat(dir + "/" + f); err != nil {
			t.Errorf("artifact %s: %v", f, err)
		}
	}
	i := strings.Index(out, "kept stack ")
	if i < 0 {
		t.Fatalf("RBEE_KEEP_FAILED=1 did not keep the stack:\n%s", out)
	}
	name := strings.Fields(out[i+len("kept stack "):])[0]
	ctx := context.Background()
	if left := leftovers(ctx, pid); len(left) == 0 {
		t.Fatalf("kept stack %s is gone", name)
	}
	// The next run's reaper leaves a kept stack alone.
	if _, err := Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(ctx, pid); len(left) == 0 {
		t.Fatalf("the reaper removed kept stack %s", name)
	}
	if err := Down(ctx, name); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(ctx, pid); len(left) > 0 {
		t.Fatalf("Down(%s) left %v", name, left)
	}

	out, pid = runHelper(t, "panic")
	if !strings.Contains(out, "deliberate panic") {
		t.Fatalf("helper did not panic:\n%s", out)
	}
	if left := leftovers(ctx, pid); len(left) > 0 {
		t.Fatalf("a panicking test left %v\n%s", left, out)
	}
}

func TestWithFileReplacesAMount(t *testing.T) {
	t.Parallel()
	conf := []byte("# replaced by the test\n[[hive]]\nalias = \"hive-x\"\nhostname = \"hive-x\"\nssh_user = \"rbee\"\n")
	h := Start(t, Localhost, WithServices("queen"),
		WithFile("queen", "/etc/rbee/hives.conf", conf),
		WithFile("queen", "/etc/rbee/extra.txt", []byte("extra\n")))
	if got := h.MustExec(t, "queen", []string{"cat", "/etc/rbee/hives.conf"}).Stdout; got != string(conf) {
		t.Fatalf("hives.conf in the container:\n%s", got)
	}
	if got := h.MustExec(t, "queen", []string{"cat", "/etc/rbee/extra.txt"}).Stdout; got != "extra\n" {
		t.Fatalf("extra.txt: %q", got)
	}
	// The queen really runs with the replaced file.
	hs, err := h.MustQueen(t).Hives(context.Background())
	if err != nil || len(hs) != 1 || hs[0].Alias != "hive-x" {
		t.Fatalf("hives %+v %v", hs, err)
	}
}
