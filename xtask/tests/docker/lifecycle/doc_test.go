//go:build docker

// Package lifecycle tests the hive lifecycle the queen drives over SSH,
// against real containers (real sshd and rbee-hive in the hive container):
// hive_start on an installed but stopped hive, hive_stop that signals only
// the recorded pid, restart, hive_status's online/offline/unreachable, and
// capabilities refresh after a restart with other simulated GPUs.
//
// Images come from `go run mage.go setup`. Run:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/lifecycle/
package lifecycle
