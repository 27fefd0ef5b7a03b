// Command rbee-toxic is the transparent TCP proxy of the harness's
// connection-level faults. The harness copies it into a fault helper (a
// container sharing a target's network namespace, with NET_ADMIN) and runs
// `rbee-toxic serve`; iptables nat OUTPUT REDIRECT steers the target's new
// TCP connections to a chosen peer into its listener. For each connection
// it recovers the original destination (SO_ORIGINAL_DST), dials it with
// SO_MARK set (so the redirect, which skips marked connections, does not
// catch the proxy's own socket) and pipes both directions through
// toxiproxy's toxic chains, one chain per destination (address, or address
// and port).
//
// `rbee-toxic apply -state BASE64` sends the complete desired toxic state to
// the control listener and returns when every live connection has it.
package main

import (
	"bytes"

	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rbee-toxic serve [-listen A] [-control A] [-mark N] [-admin A] | apply -state BASE64 [-control A] [-wait D]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveCmd(os.Args[2:])
	case "apply":
		err = applyCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want serve or apply", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rbee-toxic:", err)
		os.Exit(1)
	}
}

func serveCmd(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", toxic.ListenAddr, "proxy listener (the REDIRECT target)")
	control := fs.String("control", toxic.ControlAddr, "control listener (HTTP)")
	mark := fs.Int("mark", toxic.Mark, "SO_MARK of the proxy's outbound sockets")
	adminAddr := fs.String("admin", "", "admin endpoint (HTTP, bearer token from $"+toxic.TokenEnv+") that runs fault scripts; empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	if *adminAddr != "" {
		a, err := newAdmin(os.Getenv(toxic.TokenEnv), 90*time.Second, 1<<20)
		if err != nil {
			return err
		}
		al, err := net.Listen("tcp4", *adminAddr)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 8 << 10}
		go func() { _ = srv.Serve(al) }()
		fmt.Fprintf(os.Stderr, "rbee-toxic: admin on %s\n", al.Addr())
	}
	s := newServer(originalDst, markedDialer(*mark))
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		return err
	}
	cl, err := net.Listen("tcp4", *control)
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(cl, s.handler()) }()
	fmt.Fprintf(os.Stderr, "rbee-toxic: proxy on %s, control on %s, mark %#x\n", ln.Addr(), cl.Addr(), *mark)
	return s.serve(ln)
}

func applyCmd(args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	control := fs.String("control", toxic.ControlAddr, "control listener of the proxy")
	state := fs.String("state", "", "the desired state, base64 of its JSON")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the proxy to come up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, err := base64.StdEncoding.DecodeString(*state)
	if err != nil {
		return fmt.Errorf("-state: %w", err)
	}
	var st toxic.State
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("-state: %w", err)
	}
	if err := st.Validate(); err != nil {
		return err
	}
	deadline := time.Now().Add(*wait)
	hc := &http.Client{Timeout: *wait}
	for {
		req, _ := http.NewRequest(http.MethodPut, "http://"+*control+"/state", bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("proxy refused the state: %s: %s", resp.Status, strings.TrimSpace(string(b)))
			}
			fmt.Print(string(b))
			return nil
		}
		// Only "nothing listens yet" is worth retrying: the proxy was just
		// started and has not bound its control port.
		if !errors.Is(err, errConnRefused(err)) || time.Now().After(deadline) {
			return fmt.Errorf("proxy control %s: %w%s", *control, err, logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// errConnRefused returns err itself when it is a refused connection (so
// errors.Is matches), and a sentinel that never matches otherwise.
func errConnRefused(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && strings.Contains(op.Err.Error(), "connection refused") {
		return err
	}
	return errNever
}

var errNever = errors.New("never")

func logTail() string {
	b, err := os.ReadFile(toxic.LogPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "; proxy log " + toxic.LogPath + ":\n" + string(b)
}
