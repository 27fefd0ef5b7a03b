package testrun

import (
	"encoding/json"
	"fmt"
)

// CIShards is how many machines the GitHub workflow splits the Docker
// tests over (`test:shard 1/N` … `N/N`).
const CIShards = 3

// RemoteCategory is the suite test:all and the workflow run a second time
// through a TCP listener, to prove DOCKER_HOST is honoured end to end.
const RemoteCategory = "sshcomm"

// CIJob is one entry of the workflow's Docker job matrix: the job's name
// (its artifacts are junit-NAME and artifacts-NAME) and the Mage target it
// runs.
type CIJob struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

// CIMatrix is the workflow's Docker job matrix: `test:shard i/n` for each
// i, then `test:remote remote`. The workflow takes it from `go run mage.go
// ci:matrix` at run time, so no list of tests or topologies is written in
// it; ci_test.go checks that it does.
func CIMatrix(n int, remote string) []CIJob {
	var jobs []CIJob
	for i := 1; i <= n; i++ {
		jobs = append(jobs, CIJob{fmt.Sprintf("shard-%d-of-%d", i, n), fmt.Sprintf("test:shard %d/%d", i, n)})
	}
	return append(jobs, CIJob{"remote-engine", "test:remote " + remote})
}

// CIMatrixJSON is CIMatrix as the workflow's fromJSON reads it:
// {"include":[{"name":…,"target":…},…]}.
func CIMatrixJSON(n int, remote string) ([]byte, error) {
	return json.Marshal(struct {
		Include []CIJob `json:"include"`
	}{CIMatrix(n, remote)})
}
