package setup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeMachine records what EnsureEngine runs; the engine starts answering
// once the runner has been asked to start dockerd (after upAfter polls).
type fakeMachine struct {
	have     map[string]bool // binaries on PATH
	env      map[string]string
	root     bool
	started  bool
	upAfter  int // answers this many polls after the start (-1: never)
	polls    int
	ran      []string
	failRun  string // a command starting with this fails
	answered bool   // the engine answers from the beginning
}

// wait: an engine that answers after a few polls gets a minute, so that no
// scheduling delay can reach the deadline; one that never answers, 50 ms.
func (m *fakeMachine) wait() time.Duration {
	if m.upAfter < 0 {
		return 50 * time.Millisecond
	}
	return time.Minute
}

func (m *fakeMachine) engine() Engine {
	return Engine{
		Answers: func(context.Context) error {
			if m.answered {
				return nil
			}
			if m.started {
				m.polls++
				if m.upAfter >= 0 && m.polls > m.upAfter {
					return nil
				}
			}
			return errors.New("dial unix /var/run/docker.sock: connect: no such file or directory")
		},
		Getenv: func(k string) string { return m.env[k] },
		LookPath: func(n string) (string, error) {
			if m.have[n] {
				return "/usr/bin/" + n, nil
			}
			return "", fmt.Errorf("%s: not found", n)
		},
		Run: func(_ context.Context, name string, args ...string) error {
			line := strings.Join(append([]string{name}, args...), " ")
			m.ran = append(m.ran, line)
			if m.failRun != "" && strings.Contains(line, m.failRun) {
				return errors.New("exit status 100")
			}
			if strings.Contains(line, "dockerd") {
				m.started = true
			}
			return nil
		},
		IsRoot: m.root,
		Wait:   m.wait(),
		Poll:   time.Millisecond,
		Tail:   func(string) string { return "level=fatal msg=\"no iptables\"" },
	}
}

func TestEnsureEngineLeavesAnAnsweringEngineAlone(t *testing.T) {
	m := &fakeMachine{answered: true, root: true}
	if err := EnsureEngine(context.Background(), m.engine()); err != nil {
		t.Fatal(err)
	}
	if len(m.ran) != 0 {
		t.Fatalf("ran %q with an engine answering", m.ran)
	}
	// The explicit bootstrap installs a missing debootstrap, and only that.
	e := m.engine()
	e.Bootstrap = true
	if err := EnsureEngine(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.ran, "\n"); !strings.HasSuffix(got, "--no-install-recommends debootstrap") || strings.Contains(got, "dockerd") {
		t.Fatalf("bootstrap with an engine ran:\n%s", got)
	}
}

func TestEnsureEngineInstallsAndStartsWhereNothingAnswers(t *testing.T) {
	m := &fakeMachine{root: true, upAfter: 3}
	var said []string
	e := m.engine()
	e.Logf = func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }
	if err := EnsureEngine(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"env apt-get update -q",
		"env env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io iptables debootstrap",
		"env sh -c nohup dockerd > '/var/log/dockerd.log' 2>&1 < /dev/null &",
	}
	if got := strings.Join(m.ran, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if m.polls != 4 {
		t.Fatalf("polled %d times after the start, want 4 (answers on the 4th)", m.polls)
	}
	msg := strings.Join(said, "\n")
	for _, w := range []string{"no Docker engine answers", "apt-get install docker.io iptables debootstrap", "starting dockerd", "dockerd answers"} {
		if !strings.Contains(msg, w) {
			t.Errorf("progress lacks %q:\n%s", w, msg)
		}
	}
}

func TestEnsureEngineUsesSudoAndSkipsWhatIsInstalled(t *testing.T) {
	m := &fakeMachine{have: map[string]bool{"dockerd": true, "debootstrap": true, "sudo": true}}
	if err := EnsureEngine(context.Background(), m.engine()); err != nil {
		t.Fatal(err)
	}
	if len(m.ran) != 1 || m.ran[0] != "sudo sh -c nohup dockerd > '/var/log/dockerd.log' 2>&1 < /dev/null &" {
		t.Fatalf("ran %q, want only dockerd's start through sudo", m.ran)
	}
}

func TestEnsureEngineRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *fakeMachine
		want []string
	}{
		{"unreachable DOCKER_HOST", &fakeMachine{root: true, env: map[string]string{"DOCKER_HOST": "tcp://10.9.9.9:2375"}},
			[]string{"DOCKER_HOST=tcp://10.9.9.9:2375 does not answer", "no such file"}},
		{"unreachable context", &fakeMachine{root: true, env: map[string]string{"DOCKER_CONTEXT": "remote"}},
			[]string{"DOCKER_CONTEXT=remote does not answer"}},
		{"no root, no sudo", &fakeMachine{have: map[string]bool{"dockerd": true}},
			[]string{"needs root", "sudo"}},
		{"install fails", &fakeMachine{root: true, failRun: "apt-get install"},
			[]string{"apt-get install docker.io iptables debootstrap", "exit status 100"}},
		{"dockerd never answers", &fakeMachine{root: true, upAfter: -1, have: map[string]bool{"dockerd": true, "debootstrap": true}},
			[]string{"dockerd did not answer within 50ms", "/var/log/dockerd.log", "no iptables"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := EnsureEngine(context.Background(), tc.m.engine())
			if err == nil {
				t.Fatal("succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.HasPrefix(tc.name, "unreachable") && len(tc.m.ran) != 0 {
				t.Fatalf("ran %q for an engine that is not ours", tc.m.ran)
			}
		})
	}
}
