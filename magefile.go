//go:build mage

// Mage targets for the rbee Docker test environment; the logic is in xtask/setup. Run `go run mage.go <target>` (-v: verbose).
package main

import (
	"context"
	"fmt"

	"github.com/magefile/mage/mg"

	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/setup"
)

// Aliases lets `cleanup` mean `cleanup:all`.
var Aliases = map[string]any{
	"cleanup": Cleanup.All,
}

func cfg() (setup.Config, error) {
	root, err := setup.FindRoot(".")
	return setup.Config{Root: root, Verbose: mg.Verbose()}, err
}

// Setup prepares a test run: SSH keys, static binaries, base and service images (idempotent).
func Setup(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Setup(ctx, c)
}

// Keys generates keys/test_id_rsa, wrong_id_rsa, per-hive host keys and known_hosts (keeps existing keys).
func Keys(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Keys(ctx, c)
}

// Build compiles static linux/amd64 binaries of the rbee programs and the model hub into build/bin.
func Build(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Build(ctx, c)
}

// Image groups the image targets.
type Image mg.Namespace

// Base builds rbee-test/base:bookworm (from debian:bookworm-slim, else debootstrap from the host's mirror).
func (Image) Base(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.BaseImage(ctx, c)
}

// All builds the base image and the queen, hive, worker and hub images from build/bin (or RBEE_BIN_DIR).
func (Image) All(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Images(ctx, c)
}

// Cleanup groups the cleanup targets; `cleanup` alone is cleanup:all.
type Cleanup mg.Namespace

// All removes every container, network, volume and image labelled dev.rbee.project=rbee-netest.
func (Cleanup) All(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Cleanup(ctx, c, setup.CleanupOptions{Images: true})
}

// Stack removes the project's containers, networks and volumes but keeps its images.
func (Cleanup) Stack(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Cleanup(ctx, c, setup.CleanupOptions{Images: false})
}

// Env groups the targets that keep a topology running for poking at by hand.
type Env mg.Namespace

// Up brings a topology (localhost, multi-hive, full-stack) up as stack rbee-<topology>, waits until healthy, prints its URLs.
func (Env) Up(ctx context.Context, topology string) error {
	topo, err := integration.ParseTopology(topology)
	if err != nil {
		return err
	}
	desc, err := integration.Up(ctx, topo, "rbee-"+topology)
	if err != nil {
		return err
	}
	fmt.Println(desc)
	return nil
}

// Down removes a stack left by env:up or by a kept failed test, given its name (rbee-localhost, …).
func (Env) Down(ctx context.Context, name string) error {
	return integration.Down(ctx, name)
}
