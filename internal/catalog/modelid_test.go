package catalog

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseModelID(t *testing.T) {
	good := []struct{ in, dir string }{
		{"rbee/tiny:model.bin", "rbee--tiny--model.bin"},
		{"TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "TheBloke--TinyLlama-1.1B-Chat-v1.0-GGUF--tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"},
		{"a/b:c", "a--b--c"},
	}
	for _, tc := range good {
		m, err := ParseModelID(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if m.String() != tc.in || m.DirName() != tc.dir {
			t.Errorf("%q: got %q / %q", tc.in, m.String(), m.DirName())
		}
	}
	bad := []struct{ in, want string }{
		{"", "empty"},
		{"rbee/tiny", "missing \":file\""},
		{"rbee:tiny", "missing \"/\""},
		{"rbee/tiny/x:f", "more than one \"/\""},
		{"rbee/tiny:a:b", "more than one \":\""},
		{"/tiny:f", "org \"\" is empty"},
		{"rbee/:f", "repo \"\" is empty"},
		{"rbee/tiny:", "file \"\" is empty"},
		{"../x:f", "must start with a letter or digit"},
		{"a/..:f", "must start with a letter or digit"},
		{"a/b:..", "must start with a letter or digit"},
		{"a/b..c:f", "must not contain \"..\""},
		{"a/b--c:f", "must not contain \"--\""},
		{"a-/b:f", "must not end with '-' or '.'"},
		{"a/b.:f", "must not end with '-' or '.'"},
		{"a/b:.hidden", "must start with a letter or digit"},
		{"a b/c:f", "contains ' '"},
		{"a/b:f\x00", "byte 0x00"},
		{"a/b:f\\g", "contains '\\\\'"},
		{"a/b:f/g", "contains '/'"},
		{"a/b:" + strings.Repeat("x", 129), "longer than 128"},
		{strings.Repeat("o", 97) + "/b:f", "longer than 96"},
		{"a/b:ü", "must start with a letter or digit"},
		{"a/bü:f", "byte 0xc3"},
	}
	for _, tc := range bad {
		_, err := ParseModelID(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "invalid model id") {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseModelID(f *testing.F) {
	for _, s := range []string{"rbee/tiny:model.bin", "a/b:c", "../x:y", "a/b:../../etc/passwd", "a--b/c:d", "", ":", "/:", "a/b:c:d", "A.b/C_d:e-f.gguf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseModelID(s)
		if err != nil {
			return
		}
		if m.String() != s {
			t.Fatalf("round trip %q -> %q", s, m.String())
		}
		d := m.DirName()
		if d != filepath.Base(d) || d == "." || d == ".." || strings.HasPrefix(d, ".") || strings.ContainsAny(d, "/\\\x00") {
			t.Fatalf("unsafe dir name %q for %q", d, s)
		}
		if filepath.Join("/root", d) != "/root/"+d {
			t.Fatalf("dir name %q escapes", d)
		}
		parts := strings.Split(d, "--")
		if len(parts) != 3 {
			t.Fatalf("dir name %q not unambiguous", d)
		}
		back, err := ParseModelID(parts[0] + "/" + parts[1] + ":" + parts[2])
		if err != nil || back != m {
			t.Fatalf("dir name %q does not map back: %v", d, err)
		}
	})
}
