package setup

import (
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/flags"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Connect returns a Docker client configured from the environment
// (DOCKER_HOST, DOCKER_CERT_PATH, …) with API version negotiation, after
// checking that an engine answers.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := cliClient()
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		host := cli.DaemonHost()
		cli.Close()
		return nil, fmt.Errorf("no Docker engine at %s: start dockerd or set DOCKER_HOST (%v)", host, err)
	}
	return cli, nil
}

// projectFilter selects objects that carry the project label.
func projectFilter() client.Filters {
	return make(client.Filters).Add("label", ProjectLabel+"="+ProjectValue)
}

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

// cliClient builds the engine client the way the docker CLI does, so that
// DOCKER_HOST, DOCKER_CONTEXT and the current context (with its TLS
// settings) are honoured exactly as by `docker` and by the harness.
func cliClient() (*client.Client, error) {
	dcli, err := command.NewDockerCli()
	if err == nil {
		err = dcli.Initialize(flags.NewClientOptions())
	}
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if c, ok := dcli.Client().(*client.Client); ok {
		return c, nil
	}
	c, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}
