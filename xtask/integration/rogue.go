package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// RogueImage is the image a rogue runs in: the plain base image, with no
// rbee program and no rbee credential in it.
const RogueImage = "rbee-test/base:bookworm"

// RoguePort is the port the rogue listens on inside the network.
const RoguePort = 9100

// Rogue is an attacker on the topology network: a base-image container
// running build/bin/rbee-rogue (bind-mounted), which records every request
// it receives and sends requests from inside the network on the test's
// behalf. It has no rbee credentials: no key file is mounted into it.
type Rogue struct {
	h       *Harness
	Name    string // service name, also its host name on the network
	URL     string // how the topology reaches it: http://<name>:9100
	hostURL string // how the test reaches it: http://127.0.0.1:<ephemeral>
}

// RogueRequest is one request the rogue received.
type RogueRequest struct {
	At            time.Time   `json:"at"`
	Remote        string      `json:"remote"`
	Method        string      `json:"method"`
	Path          string      `json:"path"`
	Authorization string      `json:"authorization"`
	Header        http.Header `json:"header"`
	Body          string      `json:"body"`
}

// RogueAnswer is the answer to a request the rogue sent.
type RogueAnswer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   string      `json:"body"`
	Error  string      `json:"error,omitempty"`
}

// AddRogue starts a rogue named name on the running stack's networks (with
// this run's labels, so Close removes it) and returns once it answers, with
// its record empty.
func (h *Harness) AddRogue(ctx context.Context, name string, timeout time.Duration) (*Rogue, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("add rogue %s: timeout %v must be positive", name, timeout)
	}
	if sanitize(name) != name || name == "" {
		return nil, fmt.Errorf("add rogue %q: a service name is lower-case letters, digits and '-'", name)
	}
	if _, err := h.service(name); err == nil {
		return nil, fmt.Errorf("add rogue %s: service %s already exists", name, name)
	}
	bin := filepath.Join(h.repoDir, "build", "bin", "rbee-rogue")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("add rogue %s: %w (run `go run mage.go build`)", name, err)
	}
	ref, err := h.service("queen")
	if err != nil {
		return nil, fmt.Errorf("add rogue %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := h.docker.ContainerInspect(ctx, ref.id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("add rogue %s: inspect queen: %w", name, err)
	}
	q := res.Container
	if q.Config == nil || q.NetworkSettings == nil {
		return nil, fmt.Errorf("add rogue %s: incomplete inspect data of the queen", name)
	}
	labels := maps.Clone(q.Config.Labels)
	labels[api.ServiceLabel] = name
	labels[api.ContainerNumberLabel] = "1"
	port := network.MustParsePort(fmt.Sprintf("%d/tcp", RoguePort))
	cfg := &container.Config{
		Image:        RogueImage,
		Hostname:     name,
		Cmd:          []string{"/usr/local/bin/rbee-rogue", "--listen", fmt.Sprintf(":%d", RoguePort)},
		Labels:       labels,
		ExposedPorts: network.PortSet{port: {}},
	}
	hc := &container.HostConfig{
		Binds:        []string{bin + ":/usr/local/bin/rbee-rogue:ro"},
		PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
	}
	eps := map[string]*network.EndpointSettings{}
	for net, ep := range q.NetworkSettings.Networks {
		if ep != nil {
			eps[net] = &network.EndpointSettings{NetworkID: ep.NetworkID, Aliases: []string{name}}
		}
	}
	created, err := h.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: cfg, HostConfig: hc, NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: eps},
		Name: h.name + "-" + name + "-1",
	})
	if err != nil {
		return nil, fmt.Errorf("add rogue %s: create: %w", name, err)
	}
	h.mu.Lock()
	h.services[name] = &service{name: name, id: created.ID}
	h.mu.Unlock()
	if _, err := h.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return nil, fmt.Errorf("add rogue %s: start: %w", name, err)
	}
	h.record("add rogue %s (%s, no credentials)", name, RogueImage)
	if err := h.awaitReady(ctx, name); err != nil {
		return nil, fmt.Errorf("add rogue %s: %w", name, err)
	}
	u, err := h.URL(name, RoguePort)
	if err != nil {
		return nil, fmt.Errorf("add rogue %s: %w", name, err)
	}
	r := &Rogue{h: h, Name: name, URL: fmt.Sprintf("http://%s:%d", name, RoguePort), hostURL: u}
	// The readiness probe above reached the listener; the test's record
	// starts empty.
	var none []RogueRequest
	if err := r.call(ctx, http.MethodPost, "/_rogue/reset", nil, &none); err != nil {
		return nil, fmt.Errorf("add rogue %s: reset its record: %w", name, err)
	}
	return r, nil
}

// MustAddRogue is AddRogue that fails the test on error (within 60 s).
func (h *Harness) MustAddRogue(t testing.TB, name string) *Rogue {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	r, err := h.AddRogue(ctx, name, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Requests returns every request the rogue has received so far.
func (r *Rogue) Requests(ctx context.Context) ([]RogueRequest, error) {
	var out []RogueRequest
	if err := r.call(ctx, http.MethodGet, "/_rogue/requests", nil, &out); err != nil {
		return nil, fmt.Errorf("rogue %s: requests: %w", r.Name, err)
	}
	return out, nil
}

// MustRequests is Requests that fails the test on error.
func (r *Rogue) MustRequests(t testing.TB) []RogueRequest {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	out, err := r.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Send makes the rogue send one request from inside the network (url as
// the rogue sees it, e.g. http://queen:8500/v1/shutdown). A request that
// could not be sent at all is an error.
func (r *Rogue) Send(ctx context.Context, method, url string, header http.Header, body []byte) (RogueAnswer, error) {
	var a RogueAnswer
	in := map[string]any{"method": method, "url": url, "header": header, "body": string(body)}
	if err := r.call(ctx, http.MethodPost, "/_rogue/send", in, &a); err != nil {
		return a, fmt.Errorf("rogue %s: send %s %s: %w", r.Name, method, url, err)
	}
	if a.Error != "" {
		return a, fmt.Errorf("rogue %s: send %s %s: %s", r.Name, method, url, a.Error)
	}
	return a, nil
}

// MustSend is Send that fails the test on error (within 30 s).
func (r *Rogue) MustSend(t testing.TB, method, url string, header http.Header, body []byte) RogueAnswer {
	t.Helper()
	mctx, mcancel := mustCtx(t)
	defer mcancel()
	ctx, cancel := context.WithTimeout(mctx, 30*time.Second)
	defer cancel()
	a, err := r.Send(ctx, method, url, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (r *Rogue) call(ctx context.Context, method, path string, in, out any) error {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.hostURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}
