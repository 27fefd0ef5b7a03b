package setup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestAptMirror(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // relative to etc/apt
		want    string
		wantErr bool
	}{
		{
			name:  "one-line list",
			files: map[string]string{"sources.list": "# comment\ndeb http://mirror.example/debian/ bookworm main contrib\n"},
			want:  "http://mirror.example/debian",
		},
		{
			name:  "one-line with options",
			files: map[string]string{"sources.list": "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"},
			want:  "http://m.example/debian",
		},
		{
			name: "deb822 sources, security suite skipped",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb
URIs: http://sec.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
# snapshot comment
URIs: http://deb.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`},
			want: "http://deb.example/debian",
		},
		{
			name: "disabled stanza and deb-src only are ignored",
			files: map[string]string{"sources.list.d/a.sources": `Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://on.example/debian
Suites: bookworm
Components: main
`},
			want: "http://on.example/debian",
		},
		{
			name:  "continuation lines",
			files: map[string]string{"sources.list.d/a.sources": "Types: deb\nURIs:\n http://cont.example/debian\nSuites: bookworm\nComponents: contrib\n main\n"},
			want:  "http://cont.example/debian",
		},
		{
			name:    "disabled-by-farm files are not sources",
			files:   map[string]string{"sources.list.d/x.list.disabled": "deb http://no.example/debian bookworm main\n"},
			wantErr: true,
		},
		{
			name:    "no bookworm main",
			files:   map[string]string{"sources.list": "deb http://m.example/debian trixie main\ndeb http://m.example/debian bookworm contrib\n"},
			wantErr: true,
		},
		{name: "no files", files: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(MirrorEnv, "")
			etc := t.TempDir()
			if err := os.MkdirAll(filepath.Join(etc, "apt", "sources.list.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(etc, "apt", name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := AptMirror(etc)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("AptMirror = %q, want an error", got)
				}
				if !strings.Contains(err.Error(), MirrorEnv) {
					t.Errorf("error %q does not say how to fix it (%s)", err, MirrorEnv)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("AptMirror = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestAptMirrorEnvWins(t *testing.T) {
	t.Setenv(MirrorEnv, "http://override.example/debian/")
	got, err := AptMirror(t.TempDir())
	if err != nil || got != "http://override.example/debian" {
		t.Fatalf("AptMirror = %q, %v", got, err)
	}
}

func TestKeysGenerateAndKeep(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Root: root, Out: io.Discard}
	if err := Keys(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "keys")
	snapshot := map[string][]byte{}
	paths := []string{ClientKeyFile, WrongKeyFile}
	for _, h := range HiveNames {
		paths = append(paths, filepath.Join("hosts", h, HostKeyFile))
	}
	for _, p := range paths {
		full := filepath.Join(dir, p)
		st, err := os.Stat(full)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
		data, _ := os.ReadFile(full)
		if !bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
			t.Errorf("%s is not in OpenSSH format", p)
		}
		signer, err := ssh.ParsePrivateKey(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		pub, _ := os.ReadFile(full + ".pub")
		pk, _, _, _, err := ssh.ParseAuthorizedKey(pub)
		if err != nil || !bytes.Equal(pk.Marshal(), signer.PublicKey().Marshal()) {
			t.Errorf("%s.pub does not match the private key (%v)", p, err)
		}
		snapshot[p] = data
	}
	client, _ := ssh.ParsePrivateKey(snapshot[ClientKeyFile])
	if client.PublicKey().Type() != ssh.KeyAlgoRSA {
		t.Errorf("client key type %s, want RSA", client.PublicKey().Type())
	}
	if wrong, _ := ssh.ParsePrivateKey(snapshot[WrongKeyFile]); bytes.Equal(wrong.PublicKey().Marshal(), client.PublicKey().Marshal()) {
		t.Error("wrong_id_rsa equals test_id_rsa")
	}

	// known_hosts: one line per hive, matching that hive's host key.
	known, err := os.ReadFile(filepath.Join(dir, KnownHostsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(known)), "\n")
	if len(lines) != len(HiveNames) {
		t.Fatalf("known_hosts has %d lines, want %d", len(lines), len(HiveNames))
	}
	for i, h := range HiveNames {
		_, hosts, pk, _, _, err := ssh.ParseKnownHosts([]byte(lines[i]))
		if err != nil || len(hosts) != 1 || hosts[0] != h {
			t.Fatalf("known_hosts line %d = %q (%v), want host %s", i, lines[i], err, h)
		}
		signer, _ := ssh.ParsePrivateKey(snapshot[filepath.Join("hosts", h, HostKeyFile)])
		if !bytes.Equal(pk.Marshal(), signer.PublicKey().Marshal()) {
			t.Errorf("known_hosts key for %s does not match its host key", h)
		}
	}

	// Second run keeps every key and re-derives a deleted .pub.
	os.Remove(filepath.Join(dir, ClientKeyFile+".pub"))
	os.Chmod(filepath.Join(dir, ClientKeyFile), 0o644)
	if err := Keys(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	for p, want := range snapshot {
		got, _ := os.ReadFile(filepath.Join(dir, p))
		if !bytes.Equal(got, want) {
			t.Errorf("%s changed on the second run", p)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, ClientKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("mode not restored to 0600: %v", st.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, ClientKeyFile+".pub")); err != nil {
		t.Errorf(".pub not re-derived: %v", err)
	}
	known2, _ := os.ReadFile(filepath.Join(dir, KnownHostsFile))
	if !bytes.Equal(known, known2) {
		t.Error("known_hosts changed although no host key did")
	}
}

func TestKeysRefusesGarbage(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "keys", ClientKeyFile), []byte("not a key"), 0o600)
	err := Keys(context.Background(), Config{Root: root, Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "delete it to regenerate") {
		t.Fatalf("Keys over a corrupt key: %v", err)
	}
}

func TestContentHash(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o644)
		return p
	}
	a, b := write("a", "alpha"), write("b", "beta")
	base := imageSpec{
		Dockerfile: "Dockerfile",
		Files:      []ctxFile{{Name: "a", Src: a, Mode: 0o644}, {Name: "b", Src: b, Mode: 0o755}},
		Args:       map[string]string{"BASE": "x"},
		HostArgs:   map[string]string{"APT_MIRROR": "http://one"},
		Parent:     "sha256:1",
	}
	h0, err := contentHash(base)
	if err != nil {
		t.Fatal(err)
	}
	same := []func(s *imageSpec){
		func(s *imageSpec) { s.Files = []ctxFile{s.Files[1], s.Files[0]} },
		func(s *imageSpec) { s.HostArgs = map[string]string{"APT_MIRROR": "http://two"} },
	}
	for i, mut := range same {
		s := base
		s.Files = append([]ctxFile(nil), base.Files...)
		mut(&s)
		if h, _ := contentHash(s); h != h0 {
			t.Errorf("same-content change %d altered the hash", i)
		}
	}
	differs := map[string]func(s *imageSpec){
		"mode":   func(s *imageSpec) { s.Files[0].Mode = 0o755 },
		"name":   func(s *imageSpec) { s.Files[0].Name = "c" },
		"arg":    func(s *imageSpec) { s.Args = map[string]string{"BASE": "y"} },
		"parent": func(s *imageSpec) { s.Parent = "sha256:2" },
		"content": func(s *imageSpec) {
			s.Files[1].Src = write("b2", "beta2")
		},
	}
	for name, mut := range differs {
		s := base
		s.Files = append([]ctxFile(nil), base.Files...)
		mut(&s)
		if h, _ := contentHash(s); h == h0 {
			t.Errorf("changing %s did not change the hash", name)
		}
	}
	s := base
	s.Files = []ctxFile{{Name: "gone", Src: filepath.Join(dir, "missing")}}
	if _, err := contentHash(s); err == nil {
		t.Error("hash of a missing file: no error")
	}
}

func TestWriteContext(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bin")
	os.WriteFile(p, []byte("#!/bin/true\n"), 0o600)
	var buf bytes.Buffer
	if err := writeContext(&buf, []ctxFile{{Name: "build/bin/x", Src: p, Mode: 0o755}}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Name != "build/bin/x" || hdr.Mode != 0o755 || hdr.Uid != 0 || hdr.ModTime.Unix() != 0 {
		t.Errorf("header %+v", hdr)
	}
	data, _ := io.ReadAll(tr)
	if string(data) != "#!/bin/true\n" {
		t.Errorf("content %q", data)
	}
}

// The repository's own build inputs: every Dockerfile a spec names exists,
// and Dockerfile.base installs exactly BasePackages.
func TestRepositoryImageInputs(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range serviceSpecs(root) {
		for _, f := range spec.Files {
			if strings.HasPrefix(f.Name, "build/bin/") {
				continue // produced by `mage build`
			}
			if _, err := os.Stat(f.Src); err != nil {
				t.Errorf("%s: %v", spec.Tag, err)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "docker", "Dockerfile.base"))
	if err != nil {
		t.Fatal(err)
	}
	want := `pkgs="` + strings.Join(BasePackages, " ") + `"`
	if !strings.Contains(string(data), want) {
		t.Errorf("Dockerfile.base does not install %s", want)
	}
}

func TestOnlyMissing(t *testing.T) {
	miss := &MissingError{Pkgs: []string{"./cmd/x"}}
	if !onlyMissing(miss) {
		t.Error("a MissingError alone should count as only-missing")
	}
	if onlyMissing(io.EOF) {
		t.Error("io.EOF is not a missing program")
	}
	if !onlyMissing(errors.Join(miss)) {
		t.Error("joined MissingError should count as only-missing")
	}
	if onlyMissing(errors.Join(io.EOF, miss)) {
		t.Error("a compile error joined with MissingError is not only-missing")
	}
}

func TestCheckImageTag(t *testing.T) {
	for _, ok := range []string{"", "latest", "mut-01", "a.b_c", "X9"} {
		if err := CheckImageTag(ok); err != nil {
			t.Errorf("CheckImageTag(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"-x", ".x", "a/b", "a:b", "a b", strings.Repeat("a", 129)} {
		if err := CheckImageTag(bad); err == nil || !strings.Contains(err.Error(), "RBEE_IMAGE_TAG") {
			t.Errorf("CheckImageTag(%q) = %v, want an error naming RBEE_IMAGE_TAG", bad, err)
		}
	}
}
