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

// worker_spawn of a model whose file was corrupted on the hive after its
// download (same size, so the catalog still lists it) ends [ERROR] naming
// the worker's exit before it became healthy — the worker refuses the file
// before it answers /health — and leaves no worker running, in hive-1's
// table or its process list; with the file's bytes restored the same spawn
// runs.
func TestSpawnOfCorruptModelFails(t *testing.T) {
	t.Parallel()
	var hist checks.History
	h, q, m := downloadedModel(t, &hist, suite.TinyModel)

	// Overwrite 8 bytes in the middle of the payload, keeping a copy of
	// them: the file keeps its size, its checksum no longer matches.
	off := m.Size / 2
	backup := "/tmp/rbee-corrupt-backup"
	suite.Sh(t, h, hive, fmt.Sprintf("dd if=%[1]s of=%[2]s bs=1 skip=%[3]d count=8 status=none && "+
		"printf 'CORRUPT!' | dd of=%[1]s bs=1 seek=%[3]d conv=notrunc status=none", m.Path, backup, off))
	sizeAndSum := func() (string, string) {
		f := strings.Fields(suite.Sh(t, h, hive, fmt.Sprintf("stat -c %%s %[1]s && sha256sum %[1]s", m.Path)))
		if len(f) < 2 {
			t.Fatalf("stat and sha256sum of %s on %s: %q", m.Path, hive, f)
		}
		return f[0], f[1]
	}
	if size, sum := sizeAndSum(); size != fmt.Sprint(m.Size) || sum == m.SHA256 {
		t.Fatalf("%s on %s after corrupting: size %s sha256 %s; want size %d and a sha256 other than %s", m.Path, hive, size, sum, m.Size, m.SHA256)
	}
	// The catalog still has it: the spawn below reaches the worker.
	if got := suite.Result[api.Model](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelGet, HiveID: hive, Model: suite.TinyModel}); got.ID != suite.TinyModel {
		t.Fatalf("model_get after corrupting: %+v; want %s still in the catalog", got, suite.TinyModel)
	}

	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: suite.TinyModel, Device: "cpu:0"})
	suite.MustError(t, o, hive, "exited with code", "before it became healthy", "corrupt")
	t.Logf("worker_spawn of the corrupt model: %s", o.Terminator())
	if t.Failed() {
		t.FailNow()
	}
	for _, w := range suite.ProcessList(t, q, &hist, hive) {
		if w.State != "exited" {
			t.Errorf("hive-1 lists worker %+v after the failed spawn; want none that is not exited", w)
		}
	}
	if r := h.MustExec(t, hive, []string{"pgrep", "-a", "-f", "llm-worker-rbee"}); r.ExitCode == 0 {
		t.Errorf("worker processes on %s after the failed spawn:\n%s", hive, r.Stdout)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Control: the same file with its bytes back spawns a healthy worker.
	suite.Sh(t, h, hive, fmt.Sprintf("dd if=%[2]s of=%[1]s bs=1 seek=%[3]d conv=notrunc status=none", m.Path, backup, off))
	if size, sum := sizeAndSum(); size != fmt.Sprint(m.Size) || sum != m.SHA256 {
		t.Fatalf("%s on %s after restoring: size %s sha256 %s; want %d %s", m.Path, hive, size, sum, m.Size, m.SHA256)
	}
	w := suite.Spawn(t, q, &hist, hive, suite.TinyModel, "cpu:0")
	if w.State != "running" || !alive(t, h, hive, w.PID) {
		t.Fatalf("worker_spawn of the restored model: %+v (alive %v); want running", w, alive(t, h, hive, w.PID))
	}
	suite.NothingLost(t, opTimeout, q, &hist)
}
