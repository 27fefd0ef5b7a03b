package suite

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// KnownHosts is the repository's keys/known_hosts with each entry's line
// replaced by edit(name, keyType, key); an empty result drops the entry.
// Tests build a queen's known_hosts variant with it: another machine's key
// pinned for a hive, or no entry for it.
func KnownHosts(t testing.TB, edit func(name, keyType, key string) string) []byte {
	t.Helper()
	b, err := editKnownHosts(RepoFile(t, "keys/known_hosts"), edit)
	if err != nil {
		t.Fatalf("keys/known_hosts: %v", err)
	}
	return b
}

func editKnownHosts(b []byte, edit func(name, keyType, key string) string) ([]byte, error) {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			return nil, fmt.Errorf("line %q is not \"name keytype key\"", l)
		}
		if l := edit(f[0], f[1], f[2]); l != "" {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n") + "\n"), nil
}

// PutFile writes content to path in svc's running container (as root,
// creating the parent directory). Unlike integration.WithFile, whose
// mounts are read-only, the file can be replaced again later in the test,
// e.g. a known_hosts the queen reads anew for every connection.
func PutFile(t testing.TB, h *integration.Harness, svc, path string, content []byte) {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sh", "-c", `mkdir -p "$(dirname "$2")" && printf '%s' "$1" > "$2"`, "sh", string(content), path})
	if r.ExitCode != 0 {
		t.Fatalf("%s: writing %s: exit %d: %s", svc, path, r.ExitCode, r.Stderr)
	}
}
