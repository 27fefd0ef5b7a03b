package suite

import (
	"strings"
	"testing"
)

func TestEditKnownHosts(t *testing.T) {
	in := []byte("hive-1 ssh-ed25519 AAAA1\nhive-2 ssh-ed25519 AAAA2\n")
	got, err := editKnownHosts(in, func(name, typ, key string) string {
		switch name {
		case "hive-1":
			return ""
		case "hive-2":
			return name + " " + typ + " SWAPPED"
		}
		return name + " " + typ + " " + key
	})
	if err != nil || string(got) != "hive-2 ssh-ed25519 SWAPPED\n" {
		t.Fatalf("edited: %q, %v", got, err)
	}
	if _, err := editKnownHosts([]byte("hive-1 ssh-ed25519\n"), func(n, ty, k string) string { return "" }); err == nil || !strings.Contains(err.Error(), `"hive-1 ssh-ed25519"`) {
		t.Fatalf("short line: %v", err)
	}
}
