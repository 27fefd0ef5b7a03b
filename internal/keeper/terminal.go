package keeper

import (
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/term"
)

// ForTerminal returns f wrapped by TerminalSafe when f is a terminal, and
// f itself otherwise (a pipe or file gets the bytes unchanged, so scripts
// and --json consumers see exactly what the queen sent).
func ForTerminal(f *os.File) io.Writer {
	if term.IsTerminal(int(f.Fd())) {
		return TerminalSafe(f)
	}
	return f
}

// TerminalSafe returns a writer that drops control characters (C0 except
// newline and tab, DEL, and C1) and replaces invalid UTF-8 with U+FFFD
// before writing to w. Tokens, narration and results come from workers
// and hives the keeper does not control: an escape sequence among them
// could retitle the window, write the clipboard (OSC 52) or clear the
// screen. A rune split across writes is held until its end arrives.
func TerminalSafe(w io.Writer) io.Writer { return &safeWriter{w: w} }

type safeWriter struct {
	w       io.Writer
	pending []byte // the start of a rune whose end has not been written yet
}

func (s *safeWriter) Write(p []byte) (int, error) {
	in := p
	if len(s.pending) > 0 {
		in = append(append([]byte(nil), s.pending...), p...)
		s.pending = nil
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); {
		if !utf8.FullRune(in[i:]) && len(in)-i < utf8.UTFMax {
			s.pending = append(s.pending, in[i:]...)
			break
		}
		r, size := utf8.DecodeRune(in[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = utf8.AppendRune(out, utf8.RuneError)
		case r == '\n' || r == '\t':
			out = append(out, byte(r))
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			// dropped
		default:
			out = append(out, in[i:i+size]...)
		}
		i += size
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
