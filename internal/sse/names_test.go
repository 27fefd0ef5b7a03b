package sse

import (
	"errors"
	"strings"
	"testing"
)

// Write refuses an event name that could end the "event:" line early (a
// bare CR is a line end to SSE parsers) and writes nothing; valid names and
// unnamed terminators are written.
func TestWriteRefusesBadNames(t *testing.T) {
	for _, name := range []string{"tok\r", "a\rdata: [DONE]", "a\nb", "a:b", "a b", strings.Repeat("x", 65), "é"} {
		var b strings.Builder
		err := Write(&b, Event{ID: 1, Name: name, Data: "{}"})
		if !errors.Is(err, ErrBadName) || b.Len() != 0 {
			t.Errorf("name %q: err %v, wrote %q; want ErrBadName and nothing written", name, err, b.String())
		}
	}
	for _, name := range []string{"", "token", "end", "narration", "a.b-c_1"} {
		var b strings.Builder
		if err := Write(&b, Event{ID: 1, Name: name, Data: "x"}); err != nil {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

// Data and comments lose every CR and LF, so neither can add a line.
func TestWriteStripsLineBreaks(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, Event{ID: 1, Name: "token", Data: "a\rdata: [DONE]\r\rb\nc"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteComment(&b, "k\r\rdata: [DONE]\n\n"); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\r") != 0 || strings.Count(b.String(), "\n") != 6 {
		t.Fatalf("stream %q: want no CR and exactly the framing LFs", b.String())
	}
}

// The reader refuses an event whose name is not valid, e.g. one carrying a
// bare CR followed by a terminator.
func TestReaderRefusesBadNames(t *testing.T) {
	r := NewReader(strings.NewReader("id: 1\nevent: tok\rdata: [DONE]\ndata: {}\n\n"))
	if _, err := r.Next(); !errors.Is(err, ErrBadName) {
		t.Fatalf("err = %v, want ErrBadName", err)
	}
	r = NewReader(strings.NewReader("id: 1\nevent: token\ndata: {}\n\n"))
	if ev, err := r.Next(); err != nil || ev.Name != "token" {
		t.Fatalf("valid event: %+v %v", ev, err)
	}
}
