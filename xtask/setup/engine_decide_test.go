package setup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recordingEngine is the real machine's engine check (the docker CLI's
// client, as setup uses it) with every command it would run recorded
// instead of run.
func recordingEngine(t *testing.T) (Engine, *[]string) {
	t.Helper()
	var ran []string
	e := SystemEngine(t.Logf)
	e.Run = func(_ context.Context, name string, args ...string) error {
		ran = append(ran, strings.Join(append([]string{name}, args...), " "))
		return nil
	}
	e.IsRoot = true
	e.Wait, e.Poll = 50*time.Millisecond, time.Millisecond
	return e, &ran
}

// isolatedCLI gives the docker CLI an empty configuration (no current
// context) and no DOCKER_CONTEXT.
func isolatedCLI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("DOCKER_CONTEXT", "")
	return dir
}

// unixListener listens on a fresh socket path (short: sun_path is 108 bytes).
func unixListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "eng")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

// An explicit DOCKER_HOST that does not answer — no socket there, or a
// socket that is not an engine — is an error naming it, and nothing is
// installed or started; one that answers (a fake engine on a socket) is
// used as it is.
func TestEnsureEngineExplicitDockerHost(t *testing.T) {
	isolatedCLI(t)
	missing := filepath.Join(t.TempDir(), "none.sock")

	mute, mutePath := unixListener(t)
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			c.Close() // accepts, says nothing: not an engine
		}
	}()

	fake, fakePath := unixListener(t)
	pings := 0
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			pings++
			w.Header().Set("API-Version", "1.41")
			w.Header().Set("Ostype", "linux")
			_, _ = w.Write([]byte("OK"))
			return
		}
		http.NotFound(w, r)
	})}
	go srv.Serve(fake)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		name, host string
		ok         bool
	}{
		{"no socket", "unix://" + missing, false},
		{"not an engine", "unix://" + mutePath, false},
		{"a fake engine", "unix://" + fakePath, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", tc.host)
			e, ran := recordingEngine(t)
			err := EnsureEngine(context.Background(), e)
			if tc.ok {
				if err != nil || pings == 0 {
					t.Fatalf("fake engine at %s: %v (pings %d)", tc.host, err, pings)
				}
			} else if err == nil || !strings.Contains(err.Error(), "DOCKER_HOST="+tc.host+" does not answer") || !strings.Contains(err.Error(), "unset DOCKER_HOST") {
				t.Fatalf("DOCKER_HOST=%s: error %v, want one naming it", tc.host, err)
			}
			if len(*ran) != 0 {
				t.Fatalf("ran %q for DOCKER_HOST=%s", *ran, tc.host)
			}
		})
	}
}

// A current context in the CLI's config.json names an engine as much as
// DOCKER_CONTEXT does: when it does not answer, that is an error naming
// the context and the file, not a reason to start a local dockerd.
func TestEnsureEngineCurrentContextIsExplicit(t *testing.T) {
	dir := isolatedCLI(t)
	t.Setenv("DOCKER_HOST", "")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"currentContext":"ci-remote"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if name, file := cliCurrentContext(); name != "ci-remote" || file != filepath.Join(dir, "config.json") {
		t.Fatalf("cliCurrentContext = %q, %q", name, file)
	}
	// The context's engine does not answer (the CLI's own client would
	// fall back to the local engine for a context it has no metadata for).
	e, ran := recordingEngine(t)
	e.Answers = func(context.Context) error { return errors.New("dial tcp 10.9.9.9:2376: i/o timeout") }
	err := EnsureEngine(context.Background(), e)
	if err == nil || !strings.Contains(err.Error(), `docker context "ci-remote"`) || !strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
		t.Fatalf("error %v, want one naming context ci-remote and its file", err)
	}
	if len(*ran) != 0 {
		t.Fatalf("ran %q for a context that is not ours", *ran)
	}

	// "default" is the local engine: not answering, it is started.
	m := &fakeMachine{root: true, upAfter: 0, have: map[string]bool{"dockerd": true, "debootstrap": true}}
	fe := m.engine()
	fe.CurrentContext = func() (string, string) { return "default", "/x/config.json" }
	if err := EnsureEngine(context.Background(), fe); err != nil || len(m.ran) != 1 || !strings.Contains(m.ran[0], "dockerd") {
		t.Fatalf("default context: %v, ran %q; want dockerd started", err, m.ran)
	}
}

// A socket this user may not use means an engine runs: starting another
// would fail; the error says what to do instead.
func TestEnsureEngineRefusedSocketStartsNothing(t *testing.T) {
	for _, answer := range []error{
		errors.New("permission denied while trying to connect to the docker API at unix:///var/run/docker.sock"),
		fmt.Errorf("docker client: %w", fs.ErrPermission),
	} {
		m := &fakeMachine{root: true, have: map[string]bool{"dockerd": true, "debootstrap": true}}
		e := m.engine()
		e.Answers = func(context.Context) error { return answer }
		err := EnsureEngine(context.Background(), e)
		if err == nil || !strings.Contains(err.Error(), "may not use it") || !strings.Contains(err.Error(), "docker group") {
			t.Errorf("answer %q: error %v", answer, err)
		}
		if len(m.ran) != 0 {
			t.Errorf("answer %q: ran %q", answer, m.ran)
		}
	}
}
