// Command queen-rbee is the rbee orchestrator (PROTOCOL.md §3).
//
//	queen-rbee --config /etc/rbee/queen.toml
//	queen-rbee --version
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/queen"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("queen-rbee", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/rbee/queen.toml", "path to queen.toml")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Println(buildinfo.Line("queen-rbee"))
		return 0
	}
	logger := log.New(os.Stderr, "queen-rbee ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
	cfg, err := config.LoadQueen(*cfgPath)
	if err != nil {
		logger.Printf("config: %v", err)
		return 1
	}
	switch {
	case cfg.Auth.SecretFile == "" && !cfg.Auth.Insecure:
		logger.Printf("config: %s: [auth] secret_file is required (the cluster secret heartbeats and admin calls are signed with; `insecure = true` runs without authentication)", *cfgPath)
		return 1
	case cfg.Auth.Insecure:
		logger.Printf("WARNING: [auth] insecure = true: heartbeats and shutdown requests are not authenticated")
	}
	hives, err := config.LoadHives(cfg.HivesConf)
	if err != nil {
		logger.Printf("hives: %v", err)
		return 1
	}
	srv, err := queen.New(cfg, hives, queen.Options{Logf: logger.Printf})
	if err != nil {
		logger.Printf("%v", err)
		return 1
	}
	logger.Printf("%s starting", buildinfo.Line("queen-rbee"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		logger.Printf("%v", err)
		return 1
	}
	return 0
}
