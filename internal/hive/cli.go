package hive

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/internal/catalog"
	"github.com/rbee-dev/rbee/internal/config"
)

// ProgramName is the hive binary's name.
const ProgramName = "rbee-hive"

// Exit codes of Main.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// ParseFlags turns the command line (and the machine-local hive.toml, see
// config.HiveLocal) into a Config. Precedence, highest first: flags given
// on the command line, hive.toml, the environment (HF_ENDPOINT), built-in
// defaults. version reports --version.
func ParseFlags(args []string, stderr io.Writer) (cfg Config, version bool, err error) {
	fs := flag.NewFlagSet(ProgramName, flag.ContinueOnError)
	fs.SetOutput(stderr)
	hfDefault := os.Getenv("HF_ENDPOINT")
	if hfDefault == "" {
		hfDefault = catalog.DefaultEndpoint
	}
	var (
		port        = fs.Int("port", DefaultPort, "port to listen on")
		listenHost  = fs.String("listen-host", DefaultListenHost, "address to listen on")
		hiveID      = fs.String("hive-id", "", "this hive's id (default: the host name)")
		queenURL    = fs.String("queen-url", "", "queen base URL for hive heartbeats and workers' heartbeats (none: no heartbeats)")
		advertise   = fs.String("advertise-url", "", "URL others use to reach this hive (default http://<hostname>:<port>); workers get its host with their port")
		dataDir     = fs.String("data-dir", "", "catalog and worker logs (default $HOME/.local/share/rbee)")
		workerPorts = fs.String("worker-ports", fmt.Sprintf("%d-%d", DefaultWorkerPortMin, DefaultWorkerPortMax), "port range for workers, LO-HI")
		gpus        = fs.Int("gpus", 0, "number of simulated GPUs to report")
		hbInterval  = fs.Duration("heartbeat-interval", DefaultHeartbeatInterval, "hive heartbeat interval (also passed to workers)")
		workerBin   = fs.String("worker-binary", "", "llm-worker-rbee to start (default: next to rbee-hive, else $PATH)")
		hfEndpoint  = fs.String("hf-endpoint", hfDefault, "model hub base URL (default $HF_ENDPOINT, else https://huggingface.co)")
		spawnTO     = fs.Duration("spawn-timeout", DefaultSpawnTimeout, "how long a new worker may take to become healthy")
		secretFile  = fs.String("secret-file", "", "cluster secret, mode 0600 (default $HOME/.config/rbee/cluster.key, used if present)")
		configPath  = fs.String("config", "", "machine-local defaults (default $HOME/.config/rbee/hive.toml, read if present)")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		return Config{}, false, err
	}
	if *showVersion {
		return Config{}, true, nil
	}
	if fs.NArg() > 0 {
		return Config{}, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var local *config.HiveLocal
	if set["config"] {
		if local, err = config.LoadHiveLocal(*configPath); err != nil {
			return Config{}, false, err
		}
	} else if p, perr := config.DefaultHiveLocalPath(); perr == nil {
		if local, _, err = config.LoadHiveLocalIfExists(p); err != nil {
			return Config{}, false, err
		}
	}
	if local == nil {
		local = &config.HiveLocal{}
	}
	pickS := func(flagName string, flagV *string, fileV string) {
		if !set[flagName] && fileV != "" {
			*flagV = fileV
		}
	}
	pickS("hive-id", hiveID, local.HiveID)
	pickS("queen-url", queenURL, local.QueenURL)
	pickS("advertise-url", advertise, local.AdvertiseURL)
	pickS("data-dir", dataDir, local.DataDir)
	pickS("worker-ports", workerPorts, local.WorkerPorts)
	pickS("hf-endpoint", hfEndpoint, local.HFEndpoint)
	pickS("worker-binary", workerBin, local.WorkerBinary)
	pickS("secret-file", secretFile, local.SecretFile)
	if *secretFile == "" {
		if p, perr := DefaultSecretPath(); perr == nil {
			if _, serr := os.Stat(p); serr == nil {
				*secretFile = p
			}
		}
	}
	if !set["port"] && local.Port != 0 {
		*port = local.Port
	}
	if !set["gpus"] && local.GPUs != 0 {
		*gpus = local.GPUs
	}
	if !set["heartbeat-interval"] && local.HeartbeatInterval != 0 {
		*hbInterval = local.HeartbeatInterval.D()
	}

	if *port < 1 || *port > 65535 {
		return Config{}, false, fmt.Errorf("--port %d out of range 1..65535", *port)
	}
	if *gpus < 0 || *gpus > 64 {
		return Config{}, false, fmt.Errorf("--gpus %d out of range 0..64", *gpus)
	}
	if *hbInterval <= 0 {
		return Config{}, false, fmt.Errorf("--heartbeat-interval must be positive, got %s", *hbInterval)
	}
	if err := config.CheckMinDuration("--heartbeat-interval", *hbInterval, config.MinHeartbeatInterval); err != nil {
		return Config{}, false, err
	}
	if *spawnTO <= 0 {
		return Config{}, false, fmt.Errorf("--spawn-timeout must be positive, got %s", *spawnTO)
	}
	lo, hi, err := config.ParsePortRange(*workerPorts)
	if err != nil {
		return Config{}, false, fmt.Errorf("--worker-ports: %w", err)
	}
	if *hiveID == "" {
		h, herr := os.Hostname()
		if herr != nil || h == "" {
			return Config{}, false, errors.New("--hive-id is required (no host name to default to)")
		}
		*hiveID = h
	}
	if *dataDir == "" {
		home, herr := os.UserHomeDir()
		if herr != nil {
			return Config{}, false, errors.New("--data-dir is required ($HOME is not set)")
		}
		*dataDir = filepath.Join(home, ".local", "share", "rbee")
	}
	if *workerBin == "" {
		*workerBin = defaultWorkerBinary()
	}
	cfg = Config{
		HiveID:            *hiveID,
		Port:              *port,
		ListenHost:        *listenHost,
		QueenURL:          *queenURL,
		AdvertiseURL:      *advertise,
		DataDir:           *dataDir,
		WorkerPortMin:     lo,
		WorkerPortMax:     hi,
		GPUs:              *gpus,
		HeartbeatInterval: *hbInterval,
		HFEndpoint:        *hfEndpoint,
		WorkerBinary:      *workerBin,
		SpawnTimeout:      *spawnTO,
		SecretFile:        *secretFile,
	}
	// Validate now so a bad value is a usage error, not a runtime one.
	check := cfg
	check.Logf = func(string, ...any) {}
	if err := check.setDefaults(); err != nil {
		return Config{}, false, err
	}
	return cfg, false, nil
}

// DefaultSecretPath is $HOME/.config/rbee/cluster.key, where hive_start
// puts the cluster secret on an SSH-started hive.
func DefaultSecretPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".config", "rbee", "cluster.key"), nil
}

// defaultWorkerBinary is llm-worker-rbee next to this executable when it
// exists, else the bare name (looked up in $PATH at spawn time).
func defaultWorkerBinary() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), WorkerBinaryName)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return WorkerBinaryName
}

// Main is rbee-hive's main: it parses flags, serves until SIGTERM, SIGINT
// or POST /v1/shutdown, and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, version, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", ProgramName, err)
		return ExitUsage
	}
	if version {
		fmt.Fprintln(stdout, buildinfo.Line(ProgramName))
		return ExitOK
	}
	logger := log.New(stderr, ProgramName+" ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
	cfg.Logf = logger.Printf
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	start := time.Now()
	if err := Run(ctx, cfg); err != nil {
		logger.Printf("fatal: %v", err)
		return ExitError
	}
	logger.Printf("exiting after %s", time.Since(start).Round(time.Millisecond))
	return ExitOK
}
