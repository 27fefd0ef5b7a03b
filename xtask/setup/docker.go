package setup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// jsonMessage is one line of the engine's build/import/pull stream.
type jsonMessage struct {
	Stream      string `json:"stream"`
	Status      string `json:"status"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Aux json.RawMessage `json:"aux"`
}

// readStream consumes an engine JSON stream. With verbose it echoes the text
// to w; either way it keeps the last lines so a failure can show them. It
// returns the last aux ID seen (the built image) and the stream's error.
func readStream(r io.Reader, w io.Writer, verbose bool) (string, error) {
	dec := json.NewDecoder(r)
	var tail []string
	var id string
	keep := func(s string) {
		for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			tail = append(tail, l)
			if len(tail) > 25 {
				tail = tail[1:]
			}
		}
	}
	for {
		var m jsonMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return id, nil
			}
			return id, fmt.Errorf("reading engine stream: %w", err)
		}
		if len(m.Aux) > 0 {
			var aux struct{ ID string }
			if json.Unmarshal(m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
		text := m.Stream
		if text == "" && m.Status != "" {
			text = m.Status + "\n"
		}
		if text != "" {
			keep(text)
			if verbose {
				io.WriteString(w, text)
			}
		}
		if m.Error != "" {
			msg := m.Error
			if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
				msg = m.ErrorDetail.Message
			}
			return id, fmt.Errorf("%s\n--- last output ---\n%s", msg, strings.Join(tail, "\n"))
		}
	}
}
