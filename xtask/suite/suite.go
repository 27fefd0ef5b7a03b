// Package suite is what the Docker suites under xtask/tests/docker share
// besides the harness and the observers in xtask/checks: reading the
// repository's files, configuration variants of the queen, and the
// testing.TB layer over running a job and asserting how it ended.
//
// Like xtask/checks it knows the system only through its wire types and
// client, so the suites stay black-box tests.
package suite

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/setup"
)

// RepoRoot is the repository root (where go.mod, configs/ and keys/ are),
// found by walking up from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := setup.FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// RepoFile reads a file of the repository, rel to its root.
func RepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v (keys come from `go run mage.go keys`)", rel, err)
	}
	return b
}

// QueenConfig is the registered topology's queen.toml (in its configs
// directory) with the given keys set to raw TOML values. A key may be
// written "section.key"; the key must occur in the file exactly once, so a
// typo fails here, not in the queen.
func QueenConfig(t testing.TB, topology string, set map[string]string) []byte {
	t.Helper()
	topo, err := integration.ParseTopology(topology)
	if err != nil {
		t.Fatalf("queen.toml variant: %v", err)
	}
	file := path.Join(topo.Configs(), "queen.toml")
	b := RepoFile(t, filepath.FromSlash(file))
	for k, v := range set {
		key := k[strings.LastIndex(k, ".")+1:]
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `\s*=.*$`)
		if n := len(re.FindAll(b, -1)); n != 1 {
			t.Fatalf("queen.toml variant: key %q is in %s %d times, want once", k, file, n)
		}
		b = re.ReplaceAll(b, []byte(key+" = "+v))
	}
	return b
}

// MustDone fails the test unless o ended [DONE]; the failure quotes the
// job's narration.
func MustDone(t testing.TB, o client.Outcome) {
	t.Helper()
	if o.Kind != sse.Done {
		t.Fatalf("job %s ended %s; want %s%s", o.JobID, o.Terminator(), api.TermDone, NarrationText(o))
	}
}

// NarrationText renders o's narration for a failure message, one
// "[hive/actor] action: message" line each.
func NarrationText(o client.Outcome) string {
	ns, err := client.Narrations(o)
	var b strings.Builder
	for _, n := range ns {
		fmt.Fprintf(&b, "\n  [%s/%s] %s: %s", n.Hive, n.Actor, n.Action, n.Message)
	}
	if err != nil {
		fmt.Fprintf(&b, "\n  (%v)", err)
	}
	return b.String()
}

// MustError fails the test unless o ended [ERROR] with every one of parts
// in its message.
func MustError(t testing.TB, o client.Outcome, parts ...string) {
	t.Helper()
	if o.Kind != sse.Error {
		t.Fatalf("job %s ended %s; want %s", o.JobID, o.Terminator(), api.TermError)
	}
	for _, p := range parts {
		if !strings.Contains(o.Error, p) {
			t.Errorf("job %s: error %q does not name %q", o.JobID, o.Error, p)
		}
	}
}

// Try submits req through hist (so CheckNothingLost covers it) and follows
// it for at most timeout; only a client-side failure is fatal, however the
// job ended.
func Try(t testing.TB, timeout time.Duration, q *client.Client, hist *checks.History, req api.JobRequest) client.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	t0 := time.Now()
	out, err := hist.Run(ctx, q, req)
	if err != nil {
		t.Fatalf("%s: %v", describe(req), err)
	}
	t.Logf("%s: job %s ended %s in %v", describe(req), out.JobID, out.Terminator(), time.Since(t0).Round(time.Millisecond))
	return out
}

// describe names a job request by its operation and target, for failure
// messages.
func describe(req api.JobRequest) string {
	s := req.Operation
	for _, kv := range [][2]string{{"alias", req.Alias}, {"hive_id", req.HiveID}, {"model", req.Model}} {
		if kv[1] != "" {
			s += " " + kv[0] + "=" + kv[1]
		}
	}
	return s
}

// Run is Try for a job that must end [DONE].
func Run(t testing.TB, timeout time.Duration, q *client.Client, hist *checks.History, req api.JobRequest) client.Outcome {
	t.Helper()
	out := Try(t, timeout, q, hist, req)
	if out.Kind != sse.Done {
		t.Fatalf("%s %s: ended %s; want %s%s", describe(req), out.JobID, out.Terminator(), api.TermDone, NarrationText(out))
	}
	return out
}

// Result runs req to [DONE] and decodes its single result event.
func Result[T any](t testing.TB, timeout time.Duration, q *client.Client, hist *checks.History, req api.JobRequest) T {
	t.Helper()
	v, err := checks.Result[T](Run(t, timeout, q, hist, req))
	if err != nil {
		t.Fatalf("%s: %v", req.Operation, err)
	}
	return v
}

// ResultOf decodes the single result event of o, a job that ended [DONE];
// anything else fails the test.
func ResultOf[T any](t testing.TB, o client.Outcome) T {
	t.Helper()
	if o.Kind != sse.Done {
		t.Fatalf("job %s ended %s; want %s%s", o.JobID, o.Terminator(), api.TermDone, NarrationText(o))
	}
	v, err := checks.Result[T](o)
	if err != nil {
		t.Fatalf("job %s: %v", o.JobID, err)
	}
	return v
}

// Context bounds a test's calls so that nothing can hang past d; it is
// cancelled when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// Sh runs a shell script in svc's container (as root unless opts say
// otherwise) and returns its stdout; a non-zero exit fails the test.
func Sh(t testing.TB, h *integration.Harness, svc, script string, opts ...integration.ExecOption) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sh", "-c", script}, opts...)
	if r.ExitCode != 0 {
		t.Fatalf("%s: `%s` exited %d: %s%s", svc, script, r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// NothingLost fails the test unless every job recorded in hist reached
// exactly one terminator that its status on q agrees with
// (checks.History.CheckNothingLost), checked within timeout.
func NothingLost(t testing.TB, timeout time.Duration, q *client.Client, hist *checks.History) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := hist.CheckNothingLost(ctx, q); err != nil {
		t.Fatal(err)
	}
	t.Logf("nothing lost: %d jobs recorded, each with exactly one terminator that its status agrees with", len(hist.Entries()))
}
