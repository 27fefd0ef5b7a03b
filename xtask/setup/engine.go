package setup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// Engine describes how EnsureEngine looks at and changes the machine. Zero
// fields take the real machine (SystemEngine fills them); tests inject fakes.
type Engine struct {
	// Answers reports whether a Docker engine answers at the configured
	// endpoint (nil: it does).
	Answers func(ctx context.Context) error
	// Getenv reads DOCKER_HOST and DOCKER_CONTEXT.
	Getenv func(string) string
	// CurrentContext is the docker CLI configuration's current context
	// and the file that names it ("" when none is set).
	CurrentContext func() (name, file string)
	// LookPath finds dockerd, debootstrap, iptables and sudo.
	LookPath func(string) (string, error)
	// Run runs a command to completion, its output shown to the user.
	Run func(ctx context.Context, name string, args ...string) error
	// IsRoot: no sudo needed.
	IsRoot bool
	// Log is where dockerd's output goes (default /var/log/dockerd.log).
	Log string
	// Wait is how long dockerd may take to answer (default 60 s), checked
	// every Poll (default 1 s).
	Wait, Poll time.Duration
	// Tail returns the last lines of the dockerd log for an error message.
	Tail func(path string) string
	// Bootstrap also installs a missing debootstrap when an engine answers
	// (the explicit `mage engine`, CI's first step); the check Setup runs
	// first leaves a machine with a working engine alone.
	Bootstrap bool
	// Logf says what EnsureEngine is doing.
	Logf func(format string, args ...any)
}

// SystemEngine is the real machine: the engine the docker CLI would use,
// the real PATH, apt-get and dockerd.
func SystemEngine(logf func(string, ...any)) Engine {
	return Engine{
		Answers: func(ctx context.Context) error {
			c, err := dockerx.Connect(ctx)
			if err == nil {
				c.Close()
			}
			return err
		},
		Getenv:         os.Getenv,
		CurrentContext: cliCurrentContext,
		LookPath:       exec.LookPath,
		Run: func(ctx context.Context, name string, args ...string) error {
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			return cmd.Run()
		},
		IsRoot: os.Geteuid() == 0,
		Tail: func(path string) string {
			b, err := os.ReadFile(path)
			if err != nil {
				return err.Error()
			}
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			return strings.Join(lines, "\n")
		},
		Logf: logf,
	}
}

// EnsureEngine makes sure a Docker engine answers, the way CI does it on a
// fresh machine: if one answers, nothing happens. If none answers and
// DOCKER_HOST, DOCKER_CONTEXT or the CLI's current context names an engine,
// that is an error — a remote or chosen engine is not ours to start — and so
// is a local socket this user may not use. Otherwise it installs
// Debian's docker.io and iptables when dockerd is missing, and debootstrap
// when it is missing (the base image falls back to it), with apt-get (as
// root, or through sudo), starts dockerd in the background with its output
// in /var/log/dockerd.log, and waits until it answers.
func EnsureEngine(ctx context.Context, e Engine) error {
	e.fill()
	err := e.Answers(ctx)
	if err == nil {
		if _, lerr := e.LookPath("debootstrap"); lerr != nil && e.Bootstrap {
			sudo, serr := e.sudo()
			if serr != nil {
				return serr
			}
			return e.aptInstall(ctx, sudo, []string{"debootstrap"})
		}
		return nil
	}
	// An engine someone chose is not ours to start: DOCKER_HOST,
	// DOCKER_CONTEXT, or a current context in the CLI's configuration.
	for _, v := range []string{"DOCKER_HOST", "DOCKER_CONTEXT"} {
		if val := e.Getenv(v); val != "" {
			return fmt.Errorf("%s=%s does not answer (%v); start that engine or unset %s", v, val, err, v)
		}
	}
	if name, file := e.CurrentContext(); name != "" && name != "default" {
		return fmt.Errorf("docker context %q (current in %s) does not answer (%v); start that engine or run `docker context use default`", name, file, err)
	}
	// A local engine that runs but refuses this user: starting a second
	// dockerd would not help.
	if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
		return fmt.Errorf("a Docker engine's socket is there but this user may not use it (%v); run as root or join the docker group", err)
	}
	e.Logf("engine: no Docker engine answers (%v); installing and starting one as CI does", err)
	sudo, err := e.sudo()
	if err != nil {
		return err
	}
	var missing []string
	if _, err := e.LookPath("dockerd"); err != nil {
		missing = append(missing, "docker.io", "iptables")
	}
	if _, err := e.LookPath("debootstrap"); err != nil {
		missing = append(missing, "debootstrap")
	}
	if len(missing) > 0 {
		if err := e.aptInstall(ctx, sudo, missing); err != nil {
			return err
		}
	}
	e.Logf("engine: starting dockerd in the background (log: %s)", e.Log)
	start := "nohup dockerd > " + shellQuote(e.Log) + " 2>&1 < /dev/null &"
	if err := e.Run(ctx, sudo[0], append(slices.Clone(sudo[1:]), "sh", "-c", start)...); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	deadline := time.Now().Add(e.Wait)
	for {
		err := e.Answers(ctx)
		if err == nil {
			e.Logf("engine: dockerd answers")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within %v (%v); last lines of %s:\n%s", e.Wait, err, e.Log, e.Tail(e.Log))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.Poll):
		}
	}
}

func (e Engine) aptInstall(ctx context.Context, sudo, pkgs []string) error {
	e.Logf("engine: apt-get install %s", strings.Join(pkgs, " "))
	if err := e.Run(ctx, sudo[0], append(slices.Clone(sudo[1:]), "apt-get", "update", "-q")...); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	install := append(slices.Clone(sudo[1:]), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends")
	if err := e.Run(ctx, sudo[0], append(install, pkgs...)...); err != nil {
		return fmt.Errorf("apt-get install %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// sudo returns the command prefix that runs as root: none for root, sudo
// otherwise (as .ci/run did; a person may be asked for a password).
func (e Engine) sudo() ([]string, error) {
	if e.IsRoot {
		return []string{"env"}, nil
	}
	if _, err := e.LookPath("sudo"); err != nil {
		return nil, errors.New("no Docker engine answers, and installing or starting one needs root: run as root, install sudo, or start dockerd yourself")
	}
	return []string{"sudo"}, nil
}

func (e *Engine) fill() {
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.LookPath == nil {
		e.LookPath = exec.LookPath
	}
	if e.CurrentContext == nil {
		e.CurrentContext = func() (string, string) { return "", "" }
	}
	if e.Log == "" {
		e.Log = "/var/log/dockerd.log"
	}
	if e.Wait <= 0 {
		e.Wait = 60 * time.Second
	}
	if e.Poll <= 0 {
		e.Poll = time.Second
	}
	if e.Tail == nil {
		e.Tail = func(string) string { return "(log not read)" }
	}
	if e.Logf == nil {
		e.Logf = func(string, ...any) {}
	}
}

// cliCurrentContext reads currentContext from the docker CLI's
// config.json ($DOCKER_CONFIG, else ~/.docker), as the CLI does.
func cliCurrentContext() (string, string) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", ""
		}
		dir = filepath.Join(home, ".docker")
	}
	file := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return "", ""
	}
	var c struct {
		CurrentContext string `json:"currentContext"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "", ""
	}
	return c.CurrentContext, file
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
