package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const authBase = "public_url = \"http://queen:8500\"\nhives_conf = \"hives.conf\"\n"

func TestQueenAuthTable(t *testing.T) {
	q, err := ParseQueen([]byte(authBase+"[auth]\nsecret_file = \"keys/cluster.key\"\nlearn_hives = true\nstandalone_hive = \"standalone\"\n"), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if q.Auth.SecretFile != "keys/cluster.key" || !q.Auth.LearnHives || q.Auth.StandaloneHive != "standalone" || q.Auth.Insecure {
		t.Fatalf("auth = %+v", q.Auth)
	}
	// Defaults: nothing learned, no standalone workers, not insecure.
	q, err = ParseQueen([]byte(authBase), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if q.Auth != (QueenAuth{}) {
		t.Fatalf("default auth = %+v, want zero", q.Auth)
	}
}

func TestQueenAuthErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"[auth]\nsecret_file = \"k\"\ninsecure = true\n", "contradict"},
		{"[auth]\nlearn_hives = \"yes\"\n", "auth.learn_hives"},
		{"[auth]\nstandalone_hive = \"a b\"\n", "auth.standalone_hive"},
		{"[auth]\nsecret = \"k\"\n", "unknown key \"auth.secret\""},
		{"[auth]\nsecret_file = \"\"\n", "must not be empty"},
	} {
		_, err := ParseQueen([]byte(authBase+tc.body), "queen.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestQueenAuthSecretResolvedAgainstConfigDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "queen.toml")
	writeFile(t, p, authBase+"[auth]\nsecret_file = \"cluster.key\"\n")
	q, err := LoadQueen(p)
	if err != nil {
		t.Fatal(err)
	}
	if q.Auth.SecretFile != filepath.Join(dir, "cluster.key") {
		t.Fatalf("secret_file = %q", q.Auth.SecretFile)
	}
}

func TestHiveLocalSecretFile(t *testing.T) {
	h, err := ParseHiveLocal([]byte("secret_file = \"/home/rbee/.config/rbee/cluster.key\"\n"), "hive.toml")
	if err != nil || h.SecretFile != "/home/rbee/.config/rbee/cluster.key" {
		t.Fatalf("%+v, %v", h, err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
