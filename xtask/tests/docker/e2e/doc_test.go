//go:build docker

// Package e2e holds the end-to-end Docker suite (issue 6, "End-to-end"):
// whole workflows against real containers, driven through the queen's API
// and the rbee-keeper CLI as a user would drive them —
//
//   - a bare machine (sshd only) installed, started, given a model and a
//     worker by the queen, then answering `rbee-keeper infer` run on the
//     test host, reproducibly for a seed;
//   - 20 concurrent inferences spread over workers on two hives;
//   - a model fetched from the model hub with its checksum verified, then
//     served by a worker;
//   - a hive machine crashing while it serves: requests move to the other
//     hive, the queen starts the hive again over SSH, and it serves again.
//
// Every job a test submits is recorded in a checks.History and checked at
// the end (exactly one terminator, status agrees). It needs a Docker engine
// and the images from `go run mage.go setup`; TestMain builds rbee-keeper
// for the test host. Run it with:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/e2e/
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keeperBin is the rbee-keeper binary TestMain builds from this checkout.
var keeperBin string

// TestMain builds rbee-keeper for the test host (the suites run the CLI
// where a user would, outside the containers) and removes it afterwards.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rbee-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	keeperBin = filepath.Join(dir, "rbee-keeper")
	if err := buildKeeper(keeperBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building rbee-keeper: %v\n", err)
		return 1
	}
	return m.Run()
}

func buildKeeper(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(root))
	if mod == "" || mod == os.DevNull {
		return fmt.Errorf("not inside the rbee module (go env GOMOD = %q)", mod)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/rbee-keeper")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}
