package dockerx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeContext stores a docker context named name whose engine is host,
// where the docker CLI keeps contexts: $DOCKER_CONFIG/contexts/meta/<sha256 of
// the name>/meta.json.
func writeContext(t *testing.T, configDir, name, host string) {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	dir := filepath.Join(configDir, "contexts", "meta", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(map[string]any{
		"Name":      name,
		"Metadata":  map[string]any{},
		"Endpoints": map[string]any{"docker": map[string]any{"Host": host, "SkipTLSVerify": false}},
	})
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pinged(f *fakeEngine) bool {
	return slices.Contains(f.called(), "GET /_ping") || slices.Contains(f.called(), "HEAD /_ping")
}

// Connect finds the engine as the docker CLI does: DOCKER_HOST first, then
// DOCKER_CONTEXT, then the current context of the CLI's config; the engine
// it names is the one asked (the other fake engine is not), and where
// nothing answers the error names the address.
func TestConnectLikeTheCLI(t *testing.T) {
	a, b := newFakeEngine(t), newFakeEngine(t)
	cfg := t.TempDir()
	writeContext(t, cfg, "fake-b", b.host)
	t.Setenv("DOCKER_CONFIG", cfg)
	t.Setenv("DOCKER_CONTEXT", "")
	t.Setenv("DOCKER_TLS_VERIFY", "")
	t.Setenv("DOCKER_CERT_PATH", "")
	ctx := context.Background()

	t.Setenv("DOCKER_HOST", a.host)
	d, err := Connect(ctx)
	if err != nil {
		t.Fatalf("DOCKER_HOST=%s: %v", a.host, err)
	}
	d.Close()
	if !pinged(a) || pinged(b) {
		t.Fatalf("DOCKER_HOST: engine A saw %v, engine B %v; want only A asked", a.called(), b.called())
	}

	t.Setenv("DOCKER_HOST", "")
	t.Setenv("DOCKER_CONTEXT", "fake-b")
	if d, err = Connect(ctx); err != nil {
		t.Fatalf("DOCKER_CONTEXT=fake-b: %v", err)
	}
	d.Close()
	if !pinged(b) {
		t.Fatalf("DOCKER_CONTEXT=fake-b: engine B saw %v; want a ping", b.called())
	}

	// The config's current context, as `docker context use` leaves it.
	c := newFakeEngine(t)
	writeContext(t, cfg, "fake-c", c.host)
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(`{"currentContext":"fake-c"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONTEXT", "")
	if d, err = Connect(ctx); err != nil {
		t.Fatalf("current context fake-c: %v", err)
	}
	d.Close()
	if !pinged(c) {
		t.Fatalf("current context fake-c: engine C saw %v; want a ping", c.called())
	}

	// DOCKER_HOST wins over the current context.
	before := len(c.called())
	t.Setenv("DOCKER_HOST", a.host)
	if d, err = Connect(ctx); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if len(c.called()) != before {
		t.Errorf("DOCKER_HOST set, yet the current context's engine was asked: %v", c.called()[before:])
	}

	// Nothing listening: an error naming the address, not a hang or a panic.
	gone := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	t.Setenv("DOCKER_HOST", gone)
	if _, err := Connect(ctx); err == nil || !strings.Contains(err.Error(), "no Docker engine at "+gone) {
		t.Errorf("DOCKER_HOST=%s (nothing listening): %v; want it to say no Docker engine at that address", gone, err)
	}
	// A malformed DOCKER_HOST and an unknown context are errors naming them
	// (the docker CLI's own client setup would exit the process instead).
	t.Setenv("DOCKER_HOST", "bogus://nowhere")
	if _, err := Connect(ctx); err == nil || !strings.Contains(err.Error(), "bogus://nowhere") {
		t.Errorf("DOCKER_HOST=bogus://nowhere: %v; want an error naming it", err)
	}
	t.Setenv("DOCKER_HOST", "")
	t.Setenv("DOCKER_CONTEXT", "no-such-context")
	if _, err := Connect(ctx); err == nil || !strings.Contains(err.Error(), "no-such-context") {
		t.Errorf("DOCKER_CONTEXT=no-such-context: %v; want an error naming it", err)
	}
}

// UsedSubnets returns every network's subnets, so a new one can avoid them.
func TestUsedSubnets(t *testing.T) {
	f := newFakeEngine(t)
	f.networks["n1"] = &fakeObject{id: "n1", name: "bridge", subnets: []string{"172.17.0.0/16"}}
	f.networks["n2"] = &fakeObject{id: "n2", name: "rbee-x", subnets: []string{"172.28.3.0/24", "fd00:1::/64"}}
	f.networks["n3"] = &fakeObject{id: "n3", name: "none"}
	t.Setenv("DOCKER_HOST", f.host)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	d, err := Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, err := UsedSubnets(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("172.28.3.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	slices.SortFunc(got, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	slices.SortFunc(want, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(got, want) {
		t.Errorf("UsedSubnets = %v, want %v", got, want)
	}
}
