//go:build docker

package workerlifecycle

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A model whose model.bin was truncated on the hive after its download (its
// metadata still names the full size) is no longer in the catalog:
// model_list leaves it out and model_get ends [ERROR] "is not on hive-1".
// With the file's bytes restored, both show it again (the negative control:
// the catalog checks the file, it did not simply lose the model).
func TestTruncatedModelLeavesCatalog(t *testing.T) {
	t.Parallel()
	var hist checks.History
	h, q, m := downloadedModel(t, &hist, suite.TinyModel)
	listed := func() bool {
		t.Helper()
		for _, got := range suite.Result[api.ModelList](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelList, HiveID: hive}).Models {
			if got.ID == suite.TinyModel {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatalf("model_list after the download: %s missing", suite.TinyModel)
	}

	// Keep a copy, then cut the file to half its size in place.
	backup := "/tmp/rbee-truncate-backup"
	suite.Sh(t, h, hive, fmt.Sprintf("cp %[1]s %[2]s && truncate -s %[3]d %[1]s", m.Path, backup, m.Size/2))
	if size := strings.TrimSpace(suite.Sh(t, h, hive, "stat -c %s "+m.Path)); size != fmt.Sprint(m.Size/2) {
		t.Fatalf("%s on %s after truncating: %s bytes; want %d", m.Path, hive, size, m.Size/2)
	}
	if listed() {
		t.Errorf("model_list lists %s with model.bin truncated to %d of %d bytes; want it left out", suite.TinyModel, m.Size/2, m.Size)
	}
	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelGet, HiveID: hive, Model: suite.TinyModel})
	suite.MustError(t, o, suite.TinyModel, "is not on "+hive)
	if t.Failed() {
		t.FailNow()
	}

	// Control: the full file back, the model is listed and got again.
	suite.Sh(t, h, hive, fmt.Sprintf("cp %[2]s %[1]s", m.Path, backup))
	if !listed() {
		t.Fatalf("model_list after restoring %s: %s missing", m.Path, suite.TinyModel)
	}
	if got := suite.Result[api.Model](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelGet, HiveID: hive, Model: suite.TinyModel}); got.ID != suite.TinyModel || got.Size != m.Size {
		t.Fatalf("model_get after restoring: %+v; want %s of %d bytes", got, suite.TinyModel, m.Size)
	}
	suite.NothingLost(t, opTimeout, q, &hist)
}
