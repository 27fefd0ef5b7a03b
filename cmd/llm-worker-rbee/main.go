// Command llm-worker-rbee serves one n-gram model over the rbee worker API
// (PROTOCOL.md §5). See internal/worker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/internal/worker"
)

const name = "llm-worker-rbee"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var cfg worker.Config
	fs.StringVar(&cfg.WorkerID, "worker-id", "", "worker id (required)")
	fs.StringVar(&cfg.ModelPath, "model", "", "path of the model file (required)")
	fs.StringVar(&cfg.ModelID, "model-id", "", "model id to report (default: metadata.json beside the model, else the name in the file)")
	fs.StringVar(&cfg.Device, "device", "cpu:0", "device: cpu:N or gpu:N")
	fs.IntVar(&cfg.Port, "port", 0, "port to listen on (0: any free port)")
	fs.StringVar(&cfg.ListenHost, "listen-host", worker.DefaultListenHost, "address to listen on")
	fs.StringVar(&cfg.QueenURL, "queen-url", "", "queen base URL for heartbeats (none: no heartbeats)")
	fs.StringVar(&cfg.HiveID, "hive-id", "", "id of the hive that started this worker")
	fs.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "URL the queen should use to reach this worker (default http://<hostname>:<port>)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", worker.DefaultHeartbeatInterval, "heartbeat interval")
	fs.DurationVar(&cfg.TokenDelay, "token-delay", worker.DefaultTokenDelay, "pause between generated tokens")
	secretFile := fs.String("secret-file", "", "cluster secret, mode 0600: signs heartbeats and derives the bearer token (unless $LLORCH_API_TOKEN is set)")
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
	logger := log.New(os.Stderr, name+" ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
	cfg.Logf = logger.Printf
	cfg.APIToken = os.Getenv(worker.TokenEnv)
	if *secretFile != "" {
		k, err := auth.LoadKey(*secretFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 2
		}
		cfg.Key = k
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := worker.Run(ctx, cfg); err != nil {
		logger.Printf("fatal: %v", err)
		return 1
	}
	return 0
}
