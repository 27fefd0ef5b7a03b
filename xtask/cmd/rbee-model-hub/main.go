// Command rbee-model-hub serves generated n-gram models the way
// huggingface.co serves files (HF_ENDPOINT), for the full-stack Docker
// topology and manual tests. See xtask/modelhub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

const name = "rbee-model-hub"

func main() { os.Exit(run(context.Background(), os.Args[1:])) }

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	listen := fs.String("listen", "0.0.0.0:8080", "address to listen on")
	rate := fs.String("rate-bytes-per-sec", os.Getenv("HUB_RATE"), "limit each download to this many bytes per second, e.g. 262144 or 256k (default $HUB_RATE; empty or 0: unlimited)")
	cut := fs.String("cut-after-bytes", os.Getenv("HUB_CUT_AFTER"), "abort every download without a Range header after this many bytes (default $HUB_CUT_AFTER; empty or 0: never)")
	wrong := fs.String("wrong-sha256", os.Getenv("HUB_WRONG_SHA256"), "comma-separated model ids (org/repo:file) whose announced sha256 is deliberately not their file's, to test checksum verification (default $HUB_WRONG_SHA256)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println(buildinfo.Line(name))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return 2
	}
	rateN, err := modelhub.ParseBytes(*rate)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: --rate-bytes-per-sec: %v\n", name, err)
		return 2
	}
	cutN, err := modelhub.ParseBytes(*cut)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: --cut-after-bytes: %v\n", name, err)
		return 2
	}
	logger := log.New(os.Stderr, name+" ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
	var wrongIDs []string
	for _, id := range strings.Split(*wrong, ",") {
		if id = strings.TrimSpace(id); id != "" {
			wrongIDs = append(wrongIDs, id)
		}
	}
	hub, err := modelhub.NewHub(modelhub.Options{RateBytesPerSec: rateN, CutAfterBytes: cutN, WrongSHA256: wrongIDs, Logf: logger.Printf})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Printf("fatal: listen: %v", err)
		return 1
	}
	for _, f := range hub.Files() {
		logger.Printf("serving %s at %s (%d bytes, sha256 %s)", f.ID, f.Path, f.Size, f.SHA256)
		if a := hub.Announced(f); a != f.SHA256 {
			logger.Printf("announcing the wrong sha256 %s for %s", a, f.ID)
		}
	}
	logger.Printf("listening on %s (rate %d B/s, cut after %d B; 0 = off)", ln.Addr(), rateN, cutN)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{Handler: hub, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		logger.Printf("fatal: serve: %v", err)
		return 1
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Slow downloads still running: cut them, a graceful stop must not hang.
		srv.Close()
	}
	return 0
}
