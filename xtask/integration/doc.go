// Package integration is the DockerTestHarness: it brings an rbee topology
// (tests/docker/docker-compose.*.yml, or MultiHiveN generated in code) up with
// the Compose SDK in-process, isolates it from every other run, breaks it in
// reproducible ways, and removes it without leftovers.
//
// A test:
//
//	h := integration.Start(t, integration.MultiHive,
//		integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": "200ms"}))
//	q := h.MustQueen(t)                       // typed client of the queen
//	h.MustInject(t, integration.Block("hive-1", "queen"))
//	// … assert the queen marks hive-1 offline …
//	h.MustRecover(t, integration.Block("hive-1", "queen"))
//
// Two layers: the core (New, Harness methods, Up/Down) takes a context and
// returns errors, so Mage targets use it too; Start and the Must… methods
// fail a testing.TB.
//
// Isolation: each harness has its own compose project (test name + random
// suffix), its own /24 in 172.28.0.0/14 picked from the free ones (retried
// when a parallel run takes it first), host ports published on 127.0.0.1
// only and chosen by Docker, and the labels dev.rbee.project=rbee-netest,
// dev.rbee.test, dev.rbee.run, dev.rbee.owner-pid/-host/-start and
// dev.rbee.started-at on every container, network and volume. On SIGINT or
// SIGTERM a process removes its stacks before the signal ends it
// (interrupt.go); New reaps the resources of runs whose owner process is
// gone (SIGKILLed test binaries).
//
// Faults (Block, Reject, Partition, Isolate, Loss, RateLimit, Latency) are
// values: Inject, Recover, RecoverAll. They are installed from a helper container
// sharing the target's network namespace, recorded, re-applied after
// Restart/StartService, written to a transcript, and dropped with the stack.
//
// The package's own tests: `go test ./xtask/integration/` (no Docker: argument
// checks, subnet choice, rule rendering) and, with images built by
// `go run mage.go setup`,
//
//	go test -tags docker -p 1 -v ./xtask/integration/
//	go test -tags docker -run '^$' -bench . -benchtime 3x ./xtask/integration/
package integration
