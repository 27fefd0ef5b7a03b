// Package nemesis runs random fault schedules under real job traffic and
// checks the client-side History afterwards (Jepsen's nemesis and checker,
// for a Docker Compose topology): from a seed and a menu of faults valid
// for the topology it generates a timed schedule (fault at t, held for d,
// healed), runs it against a harness stack while several clients submit
// inference and hive jobs through the queen, heals everything, waits for
// health (bounds derived from the heartbeat interval and stale_after),
// runs one job on every hive, and checks that every job reached exactly
// one terminator that its status agrees with and that nothing was lost.
//
// The same seed, targets, duration and menu give the same schedule, byte
// for byte; RBEE_FAULT_SEED=N replays seed N. The Docker suite test
// (xtask/tests/docker/failure, TestNemesis) runs a few seeds per CI run;
// `go run mage.go nemesis --seeds N --duration D` runs more and prints a
// table. Unit tests: go test ./xtask/nemesis/
package nemesis
