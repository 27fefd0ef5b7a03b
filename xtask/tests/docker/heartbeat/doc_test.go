//go:build docker

// Package heartbeat tests the heartbeat protocol across real Docker
// networks: a spawned worker registers with the
// queen, last_seen advances and never goes backwards, a killed worker turns
// stale and is no longer scheduled, the queen's registry is rebuilt after a
// restart without restarting any worker, and many workers are tracked
// individually. Every test brings its own topology up with the
// DockerTestHarness (xtask/integration); state is read from the queen's API.
//
// It needs a Docker engine and the images from `go run mage.go setup`:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/heartbeat/
package heartbeat
