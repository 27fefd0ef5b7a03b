package testrun

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sampleJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="6" failures="1" errors="0" time="12.5">
	<testsuite tests="4" failures="1" time="10.0" name="github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat" timestamp="">
		<testcase classname="x" name="TestRegistration" time="2.0"></testcase>
		<testcase classname="x" name="TestUpdates" time="3.0"><failure message="Failed" type="">boom</failure></testcase>
		<testcase classname="x" name="TestUpdates/sub" time="1.0"></testcase>
		<testcase classname="x" name="TestOther" time="0.0"><skipped message="x"></skipped></testcase>
	</testsuite>
	<testsuite tests="0" failures="1" errors="0" time="0.1" name="github.com/rbee-dev/rbee/xtask/tests/docker/e2e" timestamp="">
		<testcase classname="" name="TestMain" time="0.0"><failure message="Failed" type="">build failed</failure></testcase>
	</testsuite>
	<testsuite tests="0" failures="0" time="0" name="github.com/rbee-dev/rbee/cmd/queen-rbee"></testsuite>
</testsuites>`

func TestReadJUnitAndSummary(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x.xml")
	if err := os.WriteFile(f, []byte(sampleJUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadJUnit(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("rows %+v", rows)
	}
	hb := rows[0]
	if hb.Category != "heartbeat" || hb.Tests != 3 || hb.Passed != 1 || hb.Failed != 1 || hb.Skipped != 1 || hb.Duration != 10*time.Second {
		t.Fatalf("heartbeat row %+v", hb)
	}
	if rows[1].Category != "e2e" || rows[1].Failed != 1 {
		t.Fatalf("e2e row %+v", rows[1])
	}
	var b strings.Builder
	total := PrintSummary(&b, rows)
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != "total: 1 passed, 2 failed, 1 skipped" {
		t.Fatalf("closing line %q in\n%s", last, out)
	}
	if total.Tests != 4 || !strings.Contains(lines[0], "category") || !strings.Contains(out, "heartbeat") {
		t.Fatalf("table:\n%s", out)
	}
	if _, err := ReadJUnit(filepath.Join(t.TempDir(), "missing.xml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestCategoryOf(t *testing.T) {
	for pkg, want := range map[string]string{
		"github.com/rbee-dev/rbee/xtask/integration":            "harness",
		"github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat": "heartbeat",
		"github.com/rbee-dev/rbee/internal/queen":               "queen",
	} {
		if got := categoryOf(pkg); got != want {
			t.Errorf("categoryOf(%s) = %s, want %s", pkg, got, want)
		}
	}
}

func TestFindCategory(t *testing.T) {
	if c, err := FindCategory("e2e"); err != nil || c.Package != "./xtask/tests/docker/e2e/" {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := FindCategory("nope"); err == nil || !strings.Contains(err.Error(), "httpcomm") {
		t.Fatalf("err %v", err)
	}
}

func TestRunNeedsNameAndPackages(t *testing.T) {
	if err := Run(context.Background(), Options{Root: t.TempDir()}, Spec{}); err == nil {
		t.Fatal("empty spec accepted")
	}
}

// The proxy forwards both directions and half-closes like a hijacked
// Docker stream.
func TestEngineProxyForwards(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("echo " + line))
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := StartEngineProxy(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.HasPrefix(p.DockerHost(), "tcp://127.0.0.1:") {
		t.Fatalf("docker host %s", p.DockerHost())
	}
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping\n"))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "echo ping\n" {
		t.Fatalf("got %q %v", got, err)
	}
	if _, err := StartEngineProxy(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("missing socket accepted")
	}
}

func TestLocalSocket(t *testing.T) {
	t.Setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
	if _, err := LocalSocket(); err == nil || !strings.Contains(err.Error(), "not a local unix socket") {
		t.Fatalf("err %v", err)
	}
	t.Setenv("DOCKER_HOST", "unix:///run/x.sock")
	if s, err := LocalSocket(); err != nil || s != "/run/x.sock" {
		t.Fatalf("%s %v", s, err)
	}
}

// The run report names categories as the summary table does: a collapsed
// spec's name, a remote engine's label, else the package's category.
func TestRunReportCategories(t *testing.T) {
	o := Options{JUnitDir: t.TempDir()}
	unit := Spec{Name: "unit", Collapse: "unit (no Docker)"}
	docker := Spec{Name: "docker", Docker: true}
	remote := Spec{Name: "docker-remote", Docker: true, Env: map[string]string{"DOCKER_HOST": "tcp://127.0.0.1:1"}}
	cat := o.categories([]Spec{unit, docker, remote})
	for _, c := range []struct{ file, pkg, want string }{
		{o.JUnitPath(unit), "github.com/rbee-dev/rbee/internal/queen", "unit (no Docker)"},
		{o.JUnitPath(docker), "github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat", "heartbeat"},
		{o.JUnitPath(remote), "github.com/rbee-dev/rbee/xtask/tests/docker/sshcomm", "sshcomm (via tcp://127.0.0.1:1)"},
		{"elsewhere.xml", "github.com/rbee-dev/rbee/xtask/integration", categoryOf("github.com/rbee-dev/rbee/xtask/integration")},
	} {
		if got := cat(c.file, c.pkg); got != c.want {
			t.Errorf("category of %s in %s = %q, want %q", c.pkg, c.file, got, c.want)
		}
	}
}
