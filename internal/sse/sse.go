// Package sse writes and reads Server-Sent Events as rbee uses them: numbered
// events with an optional name, one data line each, comment keepalives, and
// a terminator data line ([DONE], [ERROR] …, [CANCELLED]) that ends a job.
package sse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/rbee-dev/rbee/internal/api"
)

// Event is one server-sent event.
type Event struct {
	ID   int    // 0 when the event had no id line
	Name string // "" for unnamed events (terminators)
	Data string
}

// TermKind classifies a terminator.
type TermKind int

const (
	NotTerminator TermKind = iota
	Done
	Error
	Cancelled
)

func (k TermKind) String() string {
	switch k {
	case Done:
		return api.TermDone
	case Error:
		return api.TermError
	case Cancelled:
		return api.TermCancelled
	}
	return "not a terminator"
}

// Terminator reports whether data is a stream terminator, which kind, and
// for [ERROR] the message after it.
func Terminator(data string) (TermKind, string) {
	switch {
	case data == api.TermDone:
		return Done, ""
	case data == api.TermCancelled:
		return Cancelled, ""
	case data == api.TermError:
		return Error, ""
	case strings.HasPrefix(data, api.TermError+" "):
		return Error, strings.TrimPrefix(data, api.TermError+" ")
	}
	return NotTerminator, ""
}

// IsTerminator reports whether the event ends a stream.
func (e Event) IsTerminator() bool {
	k, _ := Terminator(e.Data)
	return e.Name == "" && k != NotTerminator
}

// NameRule describes a valid event name, for error messages.
const NameRule = "1-64 letters, digits, '_', '-' or '.'"

// ValidName reports whether name is a valid event name: 1 to 64 ASCII
// letters, digits, '_', '-' or '.'. Anything else (CR, LF, ':', spaces,
// control characters) could end the "event:" line early and inject fields
// or a terminator into the stream, so it is refused on write and on read.
func ValidName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// ErrBadName is returned by Write and Reader.Next for an invalid event name.
var ErrBadName = errors.New("sse: invalid event name")

// lineBreaks replaces every SSE line terminator (CRLF, LF, and a bare CR,
// which the SSE spec also ends a line with) by a space.
var lineBreaks = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

// Write writes one event. Data must not contain newlines (rbee data is
// always one JSON document or one terminator line); line breaks (CR, LF)
// are replaced by spaces so a stream can never be corrupted. A name that
// is not ValidName is an error and nothing is written; "" writes no event
// line (terminators).
func Write(w io.Writer, e Event) error {
	if e.Name != "" && !ValidName(e.Name) {
		return fmt.Errorf("%w %q (want %s)", ErrBadName, e.Name, NameRule)
	}
	var b strings.Builder
	if e.ID > 0 {
		b.WriteString("id: ")
		b.WriteString(strconv.Itoa(e.ID))
		b.WriteByte('\n')
	}
	if e.Name != "" {
		b.WriteString("event: ")
		b.WriteString(e.Name)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.WriteString(lineBreaks.Replace(e.Data))
	b.WriteString("\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteComment writes a comment line such as ": keepalive".
func WriteComment(w io.Writer, text string) error {
	_, err := fmt.Fprintf(w, ": %s\n\n", lineBreaks.Replace(text))
	return err
}

// MaxLineBytes bounds one SSE line; longer lines are an error, not a hang.
const MaxLineBytes = 4 << 20

// ErrLineTooLong is returned by Reader.Next for a line over MaxLineBytes.
var ErrLineTooLong = errors.New("sse: line too long")

// Reader reads events from a stream.
type Reader struct {
	br *bufio.Reader
	// Comments counts comment lines seen (keepalives).
	Comments int
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10)}
}

func (r *Reader) readLine() (string, error) {
	var buf []byte
	for {
		chunk, isPrefix, err := r.br.ReadLine()
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				return string(buf), nil
			}
			return "", err
		}
		buf = append(buf, chunk...)
		if len(buf) > MaxLineBytes {
			return "", ErrLineTooLong
		}
		if !isPrefix {
			return string(buf), nil
		}
	}
}

// Next returns the next event. It returns io.EOF when the stream ends
// cleanly between events and io.ErrUnexpectedEOF when it ends inside one.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []string
	seen := false
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && seen {
				return ev, io.ErrUnexpectedEOF
			}
			return ev, err
		}
		if line == "" {
			if !seen {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			r.Comments++
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 {
				return ev, fmt.Errorf("sse: bad id %q", value)
			}
			ev.ID = n
			seen = true
		case "event":
			if !ValidName(value) {
				return ev, fmt.Errorf("%w %q (want %s)", ErrBadName, truncateName(value), NameRule)
			}
			ev.Name = value
			seen = true
		case "data":
			data = append(data, value)
			seen = true
		case "retry":
			// ignored
		default:
			// Unknown fields are ignored, as the SSE spec says.
		}
	}
}

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
