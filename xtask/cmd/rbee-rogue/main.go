// Command rbee-rogue is the attacker of the security suite: a listener
// with no rbee credentials that records every request it receives (so a
// test can prove that nothing was routed to it and no token reached it),
// and that sends requests of the test's choosing from inside the test
// network (so an attack comes from a container on that network, not from
// the test host).
//
//	rbee-rogue --listen :9100
//
// Control endpoints (never recorded): GET /_rogue/requests returns the
// record as JSON; POST /_rogue/reset empties it; POST /_rogue/send {"method","url","header","body"} sends
// one request and answers {"status","body"} (status 0 and "error" when it
// could not be sent). Every other request is recorded and answered like a
// worker that accepts anything: /health says ready, POST /v1/inference
// returns a job whose stream yields one token "pwned" and [DONE].
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Request is one recorded request.
type Request struct {
	At            time.Time   `json:"at"`
	Remote        string      `json:"remote"`
	Method        string      `json:"method"`
	Path          string      `json:"path"`
	Authorization string      `json:"authorization"`
	Header        http.Header `json:"header"`
	Body          string      `json:"body"` // at most 64 KiB
}

// Send is the body of POST /_rogue/send.
type Send struct {
	Method string      `json:"method"`
	URL    string      `json:"url"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
}

// Answer is what /_rogue/send returns.
type Answer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   string      `json:"body"`
	Error  string      `json:"error,omitempty"`
}

type rogue struct {
	mu   sync.Mutex
	reqs []Request
	hc   *http.Client
}

func (g *rogue) record(r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	g.mu.Lock()
	g.reqs = append(g.reqs, Request{At: time.Now().UTC(), Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.RequestURI(),
		Authorization: r.Header.Get("Authorization"), Header: r.Header.Clone(), Body: string(body)})
	g.mu.Unlock()
	log.Printf("recorded %s %s from %s (authorization %t)", r.Method, r.URL.Path, r.RemoteAddr, r.Header.Get("Authorization") != "")
}

func (g *rogue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/_rogue/requests":
		g.mu.Lock()
		out := append([]Request{}, g.reqs...)
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
		return
	case r.Method == http.MethodPost && r.URL.Path == "/_rogue/reset":
		g.mu.Lock()
		g.reqs = nil
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, []Request{})
		return
	case r.Method == http.MethodPost && r.URL.Path == "/_rogue/send":
		g.send(w, r)
		return
	}
	g.record(r)
	switch {
	case r.URL.Path == "/health":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "worker_id": "rogue", "model": "any", "device": "cpu:0"})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/inference":
		writeJSON(w, http.StatusOK, map[string]string{"job_id": "job-rogue", "sse_url": "/v1/inference/job-rogue/stream"})
	case strings.HasSuffix(r.URL.Path, "/stream"):
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\nevent: token\ndata: {\"t\":\"pwned\",\"i\":0}\n\nid: 2\ndata: [DONE]\n\n")
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

func (g *rogue) send(w http.ResponseWriter, r *http.Request) {
	var s Send
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&s); err != nil {
		writeJSON(w, http.StatusBadRequest, Answer{Error: "bad send request: " + err.Error()})
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), s.Method, s.URL, bytes.NewReader([]byte(s.Body)))
	if err != nil {
		writeJSON(w, http.StatusOK, Answer{Error: err.Error()})
		return
	}
	for k, vs := range s.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		writeJSON(w, http.StatusOK, Answer{Error: err.Error()})
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	log.Printf("sent %s %s: %d", s.Method, s.URL, resp.StatusCode)
	writeJSON(w, http.StatusOK, Answer{Status: resp.StatusCode, Header: resp.Header, Body: string(b)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	listen := flag.String("listen", ":9100", "address to listen on")
	flag.Parse()
	log.SetPrefix("rbee-rogue ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	g := &rogue{hc: &http.Client{Timeout: 10 * time.Second}}
	srv := &http.Server{Addr: *listen, Handler: g, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("listening on %s", *listen)
	if err := srv.ListenAndServe(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}
