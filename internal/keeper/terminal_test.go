package keeper

import (
	"io"
	"os"
	"strings"
	"testing"
)

// Escape sequences and other control characters never reach a terminal;
// newlines, tabs and ordinary text (including multi-byte runes split
// across writes) do.
func TestTerminalSafeStripsControls(t *testing.T) {
	var b strings.Builder
	w := TerminalSafe(&b)
	for _, s := range []string{
		"title\x1b]0;pwned\x07 ",      // OSC window title
		"clip\x1b]52;c;ZXZpbA==\x07 ", // OSC 52 clipboard write
		"\x1b[2J\x1b[Hclear ",         // screen clear
		"cr\rback\bdel\x7f ",          // carriage return, backspace, DEL
		"c1\u009b31m ",                // 8-bit CSI as UTF-8
		"bad\x9b ",                    // a raw C1 byte (invalid UTF-8)
		"tab\tnl\n",
		"h\xc3", "\xa9llo", // é split across two writes
	} {
		if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	got := b.String()
	for i := 0; i < len(got); i++ {
		if c := got[i]; (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("control byte %#x reached the terminal: %q", c, got)
		}
	}
	if strings.Contains(got, "\u009b") {
		t.Fatalf("C1 CSI reached the terminal: %q", got)
	}
	want := "title]0;pwned clip]52;c;ZXZpbA== [2J[Hclear crbackdel c131m bad\ufffd tab\tnl\nhéllo"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// ForTerminal wraps a terminal and leaves pipes and files alone.
func TestForTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if got := ForTerminal(w); got != io.Writer(w) {
		t.Fatalf("a pipe was wrapped: %T", got)
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if got := ForTerminal(null); got != io.Writer(null) {
		t.Fatalf("/dev/null was wrapped: %T", got)
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to test with: %v", err)
	}
	defer ptmx.Close()
	if _, ok := ForTerminal(ptmx).(*safeWriter); !ok {
		t.Fatal("a terminal was not wrapped")
	}
}
