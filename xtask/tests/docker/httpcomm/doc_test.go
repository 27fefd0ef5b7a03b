//go:build docker

// Package httpcomm tests HTTP communication between queen, hive and worker
// across real Docker networks: health
// checks, capabilities discovery, job forwarding, SSE streaming with
// resumption, timeouts, refused connections and retries. Every test brings
// its own topology up with the DockerTestHarness (xtask/integration) and
// reads the system's state through its HTTP API.
//
// It needs a Docker engine and the images from `go run mage.go setup`:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/httpcomm/
package httpcomm
