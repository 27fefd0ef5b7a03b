package model

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gen(t *testing.T, m *Model, prompt string, n int, temp float64, seed uint64, stop []string) (string, int, string) {
	t.Helper()
	var b strings.Builder
	next := 0
	out, reason, err := m.Generate(context.Background(), prompt, n, temp, seed, stop, func(tok string, i int) error {
		if i != next {
			t.Fatalf("token index %d, want %d", i, next)
		}
		next++
		b.WriteString(tok)
		return nil
	})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if out != next {
		t.Fatalf("tokensOut %d but %d tokens emitted", out, next)
	}
	return b.String(), out, reason
}

func TestTrainCorpus(t *testing.T) {
	if len(Corpus) < 4000 {
		t.Fatalf("bundled corpus is only %d bytes", len(Corpus))
	}
	m := Train(Corpus, 3)
	if m.Order() != 3 || m.Contexts() < 1000 {
		t.Fatalf("order %d contexts %d", m.Order(), m.Contexts())
	}
	if got := Train("x", 0).Order(); got != 1 {
		t.Fatalf("order 0 clamped to %d, want 1", got)
	}
	if got := Train("x", 99).Order(); got != MaxOrder {
		t.Fatalf("order 99 clamped to %d, want %d", got, MaxOrder)
	}
}

// Same model, prompt, seed and temperature → same tokens; also after a
// write/read round trip.
func TestDeterminism(t *testing.T) {
	m := Train(Corpus, 4)
	a, _, _ := gen(t, m, "Alice was ", 200, 0.8, 42, nil)
	b, _, _ := gen(t, m, "Alice was ", 200, 0.8, 42, nil)
	if a != b {
		t.Fatalf("same seed gave different text:\n%q\n%q", a, b)
	}
	raw, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := gen(t, m2, "Alice was ", 200, 0.8, 42, nil)
	if a != c {
		t.Fatalf("round-tripped model differs:\n%q\n%q", a, c)
	}
	raw2, _ := m2.MarshalBinary()
	if !bytes.Equal(raw, raw2) {
		t.Fatal("re-encoding a read model gives different bytes")
	}
}

func TestSeedsDiffer(t *testing.T) {
	m := Train(Corpus, 3)
	a, _, _ := gen(t, m, "The ", 200, 1.0, 1, nil)
	b, _, _ := gen(t, m, "The ", 200, 1.0, 2, nil)
	if a == b {
		t.Fatalf("seeds 1 and 2 gave the same 200 characters: %q", a)
	}
}

func TestTemperatureZeroIsArgmax(t *testing.T) {
	m := Train("abababababac", 2)
	a, n, reason := gen(t, m, "a", 6, 0, 1, nil)
	b, _, _ := gen(t, m, "a", 6, 0, 999, nil)
	if a != b || a != "bababa" || n != 6 || reason != StopMaxTokens {
		t.Fatalf("argmax: %q %q n=%d reason=%s", a, b, n, reason)
	}
}

// Unseen prompt characters back off to shorter contexts down to order 0.
func TestBackoff(t *testing.T) {
	m := Train(Corpus, 4)
	s, n, reason := gen(t, m, "ZQXJ\u2603", 20, 0.5, 7, nil)
	if n != 20 || reason != StopMaxTokens || len([]rune(s)) != 20 {
		t.Fatalf("got %q n=%d %s", s, n, reason)
	}
}

func TestStopSequences(t *testing.T) {
	m := Train("hello world. hello world. hello world.", 4)
	cases := []struct {
		name   string
		stop   []string
		want   string
		reason string
	}{
		{"no stop", nil, "world. hello", StopMaxTokens},
		{"stop on dot, not emitted", []string{"."}, "world", StopSequence},
		{"multi-char stop", []string{"ld."}, "wor", StopSequence},
		{"stop never seen flushes all", []string{"xyz"}, "world. hello", StopMaxTokens},
		{"prefix held then released", []string{"wox"}, "world. hello", StopMaxTokens},
		{"first of several", []string{"zzz", " h"}, "world.", StopSequence},
		{"empty stop ignored", []string{""}, "world. hello", StopMaxTokens},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, n, reason := gen(t, m, "hello ", 12, 0, 0, tc.stop)
			if got != tc.want || reason != tc.reason || n != len([]rune(tc.want)) {
				t.Fatalf("got %q (%d, %s), want %q (%s)", got, n, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestGenerateBadArgs(t *testing.T) {
	m := Train(Corpus, 2)
	for _, tc := range []struct {
		name string
		n    int
		temp float64
	}{{"zero tokens", 0, 0}, {"negative temperature", 5, -1}} {
		if _, _, err := m.Generate(context.Background(), "", tc.n, tc.temp, 0, nil, func(string, int) error { return nil }); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	var empty Model
	_, n, reason := gen(t, &empty, "abc", 5, 0, 0, nil)
	if n != 0 || reason != StopNoContinuation {
		t.Fatalf("empty model: n=%d reason=%s", n, reason)
	}
}

func TestGenerateCancel(t *testing.T) {
	m := Train(Corpus, 3)
	ctx, cancel := context.WithCancel(context.Background())
	n, reason, err := m.Generate(ctx, "a", 1000, 1, 1, nil, func(tok string, i int) error {
		if i == 9 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || reason != StopCancelled || n != 10 {
		t.Fatalf("n=%d reason=%s err=%v", n, reason, err)
	}
	boom := errors.New("boom")
	_, reason, err = m.Generate(context.Background(), "a", 10, 1, 1, nil, func(string, int) error { return boom })
	if !errors.Is(err, boom) || reason != StopError {
		t.Fatalf("emit error: reason=%s err=%v", reason, err)
	}
}

func TestPaddingRoundTrip(t *testing.T) {
	m := Train("abc", 2)
	m.Name, m.Source, m.Padding = "rbee/x:model.bin", "test", 1001
	raw, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Name != m.Name || m2.Source != m.Source || m2.Padding != 1001 || m2.Order() != 2 {
		t.Fatalf("got %+v", m2)
	}
}

func TestReadCorrupt(t *testing.T) {
	good, err := Train(Corpus[:500], 3).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"json", []byte(`{"model":1}`), ErrNotModel},
		{"half magic", []byte("RBEE"), ErrTruncated},
		{"header only", good[:headerLen], ErrTruncated},
		{"cut in payload", good[:len(good)/2], ErrTruncated},
		{"missing checksum byte", good[:len(good)-1], ErrTruncated},
		{"bad version", mut(func(b []byte) []byte { b[8] = 9; return b }), ErrVersion},
		{"flags set", mut(func(b []byte) []byte { b[10] = 1; return b }), ErrCorrupt},
		{"huge length", mut(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[12:], 1<<40); return b }), ErrCorrupt},
		{"flipped payload byte", mut(func(b []byte) []byte { b[headerLen+40] ^= 0x55; return b }), ErrCorrupt},
		{"flipped checksum", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.data))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A payload whose checksum is right but whose structure is wrong is still
// reported as corrupt, not accepted or panicking.
func TestReadBadPayload(t *testing.T) {
	wrap := func(payload []byte) []byte {
		var b bytes.Buffer
		hdr := make([]byte, headerLen)
		copy(hdr, Magic)
		binary.LittleEndian.PutUint16(hdr[8:], Version)
		binary.LittleEndian.PutUint64(hdr[12:], uint64(len(payload)))
		b.Write(hdr)
		b.Write(payload)
		b.Write(binary.LittleEndian.AppendUint32(nil, crcOf(payload)))
		return b.Bytes()
	}
	cases := map[string][]byte{
		"order zero":        {0, 0, 0, 0, 0},
		"order too big":     {MaxOrder + 1, 0, 0, 0, 0},
		"name past end":     {2, 50},
		"too many contexts": {2, 0, 0, 100, 0},
		"zero next":         {2, 0, 0, 1, 0, 0, 0},
		"zero count":        {2, 0, 0, 1, 0, 1, 'a', 0, 0},
		"trailing bytes":    {2, 0, 0, 0, 0, 1, 2, 3},
		"bad rune":          {2, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0x7f, 1, 0},
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Read(bytes.NewReader(wrap(p))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.bin")
	if err := Train(Corpus, 3).Save(path); err != nil {
		t.Fatal(err)
	}
	if m, err := Load(path); err != nil || m.Order() != 3 {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("x"))
	f.Close()
	_, err := Load(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("trailing data: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	good, _ := Train("the cat sat on the mat", 3).MarshalBinary()
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte(Magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Anything Read accepts must generate without panicking and
		// re-encode to the same bytes it came from.
		_, _, _ = m.Generate(context.Background(), "th", 5, 0.7, 1, []string{"a"}, func(string, int) error { return nil })
		raw, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Read(bytes.NewReader(raw))
		if err != nil || m2.Contexts() != m.Contexts() {
			t.Fatalf("re-read: %v", err)
		}
	})
}

func BenchmarkGenerate(b *testing.B) {
	m := Train(Corpus, 4)
	for b.Loop() {
		_, _, _ = m.Generate(context.Background(), "Alice", 256, 0.8, 1, nil, func(string, int) error { return nil })
	}
}
