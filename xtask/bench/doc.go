// Package bench measures the Docker test system and the system under test,
// side by side on one machine, and writes docs/BENCHMARKS.md:
//
//   - topology bring-up and teardown: the harness (xtask/integration, the
//     Compose SDK in-process) against `docker compose up --wait` / `down -v`
//     run by the Compose CLI built from the same Compose module version,
//     interleaved;
//   - fault injection: how long after Inject(Block) / Recover(Block) returns
//     traffic really stops / flows again, seen from inside the container;
//   - the system under test on loopback (no Docker): heartbeat ingest of a
//     real queen-rbee process against a bare net/http handler (the ceiling),
//     job submit → first event latency, 1 000 concurrent stream readers;
//   - the whole Docker suite's wall time, and a soak loop (the suite N times,
//     flaky tests, leftover containers, networks and volumes).
//
// Run it through Mage from the repository root (images built by
// `go run mage.go setup`, which both targets run first):
//
//	go run mage.go bench          # everything; RBEE_BENCH_SUITE=0 skips the suite run
//	go run mage.go soak 5         # the Docker suite five times
//
// The statistics, tables, machine description and report writer are plain
// code with unit tests (`go test ./xtask/bench`, no Docker). Everything that
// needs Docker or built binaries is reached only from Run and Soak.
package bench
