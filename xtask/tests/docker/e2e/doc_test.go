//go:build docker

// Package e2e holds the end-to-end Docker suite:
// whole workflows against real containers, driven through the queen's API
// and the rbee-keeper CLI as a user would drive them —
//
//   - a bare machine (sshd only) installed, started, given a model and a
//     worker by the queen, then answering `rbee-keeper infer` run on the
//     test host, reproducibly for a seed;
//   - 20 concurrent inferences spread over workers on two hives;
//   - a model fetched from the model hub with its checksum verified, then
//     served by a worker;
//   - the catalog on a hive's disk: model_delete removes the model's
//     directory and is refused while the model downloads; a hub announcing
//     a wrong sha256 is refused with nothing kept; a cut download resumes
//     with Range at the partial file's size;
//   - a hive machine crashing while it serves: requests move to the other
//     hive, the queen starts the hive again over SSH, and it serves again.
//
// Every job a test submits is recorded in a checks.History and checked at
// the end (exactly one terminator, status agrees). It needs a Docker engine
// and the images from `go run mage.go setup`, whose rbee-keeper (build/bin,
// or RBEE_BIN_DIR like the other three programs) it runs on the test host.
// Run it with:
//
//	go test -tags docker -count=1 ./xtask/tests/docker/e2e/
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/xtask/setup"
)

// keeperBin is the rbee-keeper binary the images' programs come from too:
// RBEE_BIN_DIR when set, else build/bin.
var keeperBin string

// TestMain finds rbee-keeper (the suite runs the CLI where a user would,
// outside the containers), so that a build under test via RBEE_BIN_DIR is
// tested through its own keeper.
func TestMain(m *testing.M) {
	root, err := setup.FindRoot(".")
	if err == nil {
		keeperBin = setup.ProgramPath(root, "rbee-keeper")
		if !filepath.IsAbs(keeperBin) { // a relative RBEE_BIN_DIR means the repository root's, as for setup
			keeperBin = filepath.Join(root, keeperBin)
		}
		var fi os.FileInfo
		if fi, err = os.Stat(keeperBin); err == nil && fi.Mode()&0o111 == 0 {
			err = fmt.Errorf("%s is not executable", keeperBin)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: rbee-keeper: %v (run `go run mage.go setup`, or set %s)\n", err, setup.BinDirEnv)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
