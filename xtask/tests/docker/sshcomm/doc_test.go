//go:build docker

// Package sshcomm tests SSH communication between the queen and the hives
// against real containers: the hive containers' real OpenSSH sshd, the
// queen's SSH client (through its hive_install operation) and the harness's
// own client from the test host. It covers connection establishment with
// pinned host keys, command execution with intact output, binary
// installation, authentication failures, connect and command timeouts, and
// concurrent sessions within max_sessions_per_host.
//
// Images come from `go run mage.go setup`. Run:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/sshcomm/
package sshcomm
