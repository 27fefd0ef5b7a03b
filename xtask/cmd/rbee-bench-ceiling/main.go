// Command rbee-bench-ceiling is the ceiling of xtask/bench's heartbeat ingest
// benchmark: a bare net/http server that does what queen-rbee's
// POST /v1/worker-heartbeat does on the wire (read at most 1 MiB, decode the
// same JSON strictly, answer the same 200 {"status":"ok"}) and nothing else
// (no validation, no registry). It runs as its own process, like the queen,
// so both are measured the same way.
//
//	rbee-bench-ceiling --listen 127.0.0.1:0   # prints "listening on 127.0.0.1:PORT"
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"

	"github.com/rbee-dev/rbee/internal/api"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("POST /v1/worker-heartbeat", heartbeat)
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// heartbeat mirrors the queen's wire work: Content-Type check, bounded
// read, strict decode, JSON-encoded answer.
func heartbeat(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var hb api.WorkerHeartbeat
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(api.StatusOK{Status: "ok"})
}
