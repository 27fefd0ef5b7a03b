package sse

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := []Event{
		{ID: 1, Name: "narration", Data: `{"message":"hi"}`},
		{ID: 2, Name: "token", Data: "multi\nline"},
		{ID: 3, Data: "[DONE]"},
	}
	for i, ev := range in {
		if i == 1 {
			if err := WriteComment(&buf, "keepalive"); err != nil {
				t.Fatal(err)
			}
		}
		if err := Write(&buf, ev); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for i, want := range in {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			want.Data = "multi line" // newlines never reach the wire
		}
		if got != want {
			t.Fatalf("event %d = %+v, want %+v", i, got, want)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last event: %v, want EOF", err)
	}
	if r.Comments != 1 {
		t.Fatalf("comments = %d", r.Comments)
	}
	if !in[2].IsTerminator() || in[0].IsTerminator() {
		t.Fatal("IsTerminator wrong")
	}
}

func TestTerminator(t *testing.T) {
	cases := []struct {
		data string
		kind TermKind
		msg  string
	}{
		{"[DONE]", Done, ""},
		{"[CANCELLED]", Cancelled, ""},
		{"[ERROR] hive-1 (http://hive-1:9000): connection refused", Error, "hive-1 (http://hive-1:9000): connection refused"},
		{"[ERROR]", Error, ""},
		{"[DONE] extra", NotTerminator, ""},
		{`{"t":"[DONE]"}`, NotTerminator, ""},
	}
	for _, c := range cases {
		k, m := Terminator(c.data)
		if k != c.kind || m != c.msg {
			t.Errorf("Terminator(%q) = %v %q, want %v %q", c.data, k, m, c.kind, c.msg)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	if _, err := NewReader(strings.NewReader("id: x\ndata: a\n\n")).Next(); err == nil || !strings.Contains(err.Error(), "bad id") {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := NewReader(strings.NewReader("id: 1\ndata: a")).Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut event: %v", err)
	}
	long := "data: " + strings.Repeat("x", MaxLineBytes+10) + "\n\n"
	if _, err := NewReader(strings.NewReader(long)).Next(); err != ErrLineTooLong {
		t.Fatalf("long line: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add("id: 1\nevent: token\ndata: {}\n\n: keepalive\n\ndata: [DONE]\n\n")
	f.Add("id: -3\n\n")
	f.Add("data\n\n\n")
	f.Add("retry: 10\nfoo: bar\n")
	f.Fuzz(func(t *testing.T, s string) {
		r := NewReader(strings.NewReader(s))
		for i := 0; i < 10000; i++ {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if ev.ID < 0 {
				t.Fatalf("negative id %d", ev.ID)
			}
		}
		t.Fatal("reader did not terminate")
	})
}
