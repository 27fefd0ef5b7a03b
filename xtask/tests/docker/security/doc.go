//go:build docker

// Package security is the Docker suite that attacks a live topology from a
// rogue container on its network: a plain base-image service with no rbee
// credentials (integration.Harness.AddRogue) that records every request it
// receives and sends the attacks from inside the network. Each attack asserts
// that the attack is refused with the documented status, that the state at
// the receiver is unchanged (the queen's registry, hives and workers still
// serving), that an infer afterwards is served by the real worker, and that
// nothing was routed to the rogue and no token reached it. Signed requests
// the test needs (the negative controls, the captured requests it replays)
// are signed with the test cluster's secret, keys/cluster.key: the test is
// trusted. See docs/SECURITY.md for the threat model.
//
//	go test -tags docker -count=1 ./xtask/tests/docker/security/
package security
