package dockerx

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// fakeEngine is just enough of the Engine API, on a unix socket, for the
// calls this package makes: ping, list/kill/unpause/wait/remove containers,
// list/remove networks and volumes. It applies label filters the way
// dockerd does (every label must match) and records each call, so a test
// sees what reached the engine and in which order.
type fakeEngine struct {
	host string // unix:///…/docker.sock

	mu         sync.Mutex
	calls      []string // "POST /containers/c1/kill", in order
	containers map[string]*fakeObject
	networks   map[string]*fakeObject
	volumes    map[string]*fakeObject
	failRemove map[string]int // id → HTTP status its removal answers
}

type fakeObject struct {
	id, name string
	labels   map[string]string
	state    string // containers: running, paused, exited
	subnets  []string
}

var versioned = regexp.MustCompile(`^/v[0-9.]+(/.*)$`)

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	// A short directory: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "dockerx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeEngine{host: "unix://" + sock, containers: map[string]*fakeObject{}, networks: map[string]*fakeObject{},
		volumes: map[string]*fakeObject{}, failRemove: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(f.serve)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeEngine) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// matches applies a filters query parameter ({"label":{"k=v":true}}).
func matches(r *http.Request, labels map[string]string) bool {
	var filters map[string]map[string]bool
	if q := r.URL.Query().Get("filters"); q != "" {
		if err := json.Unmarshal([]byte(q), &filters); err != nil {
			return false
		}
	}
	for l := range filters["label"] {
		k, v, hasValue := strings.Cut(l, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if m := versioned.FindStringSubmatch(path); m != nil {
		path = m[1]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+path)
	w.Header().Set("Api-Version", "1.41")
	w.Header().Set("Ostype", "linux")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if v != nil {
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	notFound := func(what string) { reply(http.StatusNotFound, map[string]string{"message": "No such " + what}) }
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/_ping":
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("OK"))
	case r.Method == http.MethodGet && path == "/containers/json":
		all := r.URL.Query().Get("all") == "1" || r.URL.Query().Get("all") == "true"
		out := []map[string]any{}
		for _, c := range f.containers {
			if matches(r, c.labels) && (all || c.state != "exited") {
				out = append(out, map[string]any{"Id": c.id, "Names": []string{"/" + c.name}, "Labels": c.labels, "State": c.state})
			}
		}
		reply(http.StatusOK, out)
	case len(parts) == 3 && parts[0] == "containers" && r.Method == http.MethodPost:
		c := f.containers[parts[1]]
		if c == nil {
			notFound("container")
			return
		}
		switch parts[2] {
		case "kill":
			if c.state != "running" {
				reply(http.StatusConflict, map[string]string{"message": "container " + c.id + " is not running"})
				return
			}
			c.state = "exited"
			w.WriteHeader(http.StatusNoContent)
		case "unpause":
			c.state = "running"
			w.WriteHeader(http.StatusNoContent)
		case "wait":
			reply(http.StatusOK, map[string]any{"StatusCode": 137})
		default:
			notFound("endpoint")
		}
	case len(parts) == 2 && parts[0] == "containers" && r.Method == http.MethodDelete:
		c := f.containers[parts[1]]
		if code := f.failRemove[parts[1]]; code != 0 {
			if code == http.StatusNotFound {
				delete(f.containers, parts[1]) // someone else removed it first
			}
			reply(code, map[string]string{"message": "removal refused"})
			return
		}
		if c == nil {
			notFound("container")
			return
		}
		if c.state == "running" && r.URL.Query().Get("force") != "1" {
			reply(http.StatusConflict, map[string]string{"message": "container is running"})
			return
		}
		delete(f.containers, c.id)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && path == "/networks":
		out := []map[string]any{}
		for _, n := range f.networks {
			if matches(r, n.labels) {
				var cfg []map[string]string
				for _, s := range n.subnets {
					cfg = append(cfg, map[string]string{"Subnet": s})
				}
				out = append(out, map[string]any{"Id": n.id, "Name": n.name, "Labels": n.labels, "IPAM": map[string]any{"Config": cfg}})
			}
		}
		reply(http.StatusOK, out)
	case len(parts) == 2 && parts[0] == "networks" && r.Method == http.MethodDelete:
		if f.networks[parts[1]] == nil {
			notFound("network")
			return
		}
		delete(f.networks, parts[1])
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && path == "/volumes":
		out := []map[string]any{}
		for _, v := range f.volumes {
			if matches(r, v.labels) {
				out = append(out, map[string]any{"Name": v.id, "Labels": v.labels})
			}
		}
		reply(http.StatusOK, map[string]any{"Volumes": out})
	case len(parts) == 2 && parts[0] == "volumes" && r.Method == http.MethodDelete:
		if f.volumes[parts[1]] == nil {
			notFound("volume")
			return
		}
		delete(f.volumes, parts[1])
		w.WriteHeader(http.StatusNoContent)
	default:
		notFound(fmt.Sprintf("endpoint %s %s", r.Method, path))
	}
}
