package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// The admin endpoint runs the harness's fault scripts (iptables, tc,
// `rbee-toxic apply`) in the helper, which saves the docker exec round trip
// each fault change would cost otherwise. It listens on the target's
// address, so every peer on the network can reach it: each request must
// carry the bearer token (compared in constant time) and is refused before
// its body is read otherwise; one script runs at a time, for at most the
// time limit, with its output capped.
type admin struct {
	token   []byte
	timeout time.Duration
	maxOut  int
	run     sync.Mutex
}

func newAdmin(token string, timeout time.Duration, maxOut int) (*admin, error) {
	if len(token) < toxic.MinToken {
		return nil, fmt.Errorf("admin token (%s) must be at least %d bytes, got %d", toxic.TokenEnv, toxic.MinToken, len(token))
	}
	return &admin{token: []byte(token), timeout: timeout, maxOut: maxOut}, nil
}

func (a *admin) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), a.token) == 1
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /script", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, toxic.MaxScript+1))
		if err != nil {
			http.Error(w, "read script: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > toxic.MaxScript {
			http.Error(w, fmt.Sprintf("script longer than %d bytes", toxic.MaxScript), http.StatusRequestEntityTooLarge)
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			http.Error(w, "empty script", http.StatusBadRequest)
			return
		}
		res := a.script(r.Context(), string(body))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Set("Connection", "close")
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// script runs `sh -c s`, one at a time: two fault changes of one namespace
// must not interleave their iptables commands.
func (a *admin) script(ctx context.Context, s string) toxic.ScriptResult {
	a.run.Lock()
	defer a.run.Unlock()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	stdout, stderr := &capped{max: a.maxOut}, &capped{max: a.maxOut}
	cmd := exec.CommandContext(ctx, "sh", "-c", s)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	res := toxic.ScriptResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		res.Exit = -1
		res.Stderr += fmt.Sprintf("\nrbee-toxic: script stopped: %v (limit %v)\n", ctx.Err(), a.timeout)
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode()
	default:
		res.Exit = -1
		res.Stderr += "\nrbee-toxic: " + err.Error() + "\n"
	}
	return res
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	max     int
	buf     bytes.Buffer
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.buf.Write(p[:max(room, 0)])
		c.dropped += len(p) - max(room, 0)
		return len(p), nil
	}
	return c.buf.Write(p)
}

func (c *capped) String() string {
	if c.dropped > 0 {
		return c.buf.String() + fmt.Sprintf("\n[rbee-toxic: %d more bytes dropped]\n", c.dropped)
	}
	return c.buf.String()
}
