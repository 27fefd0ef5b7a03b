package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/report"
)

// ArtifactsDir is where a failed test's artifacts go:
// $RBEE_TEST_ARTIFACTS/<test>, by default <repo>/artifacts/<test>.
func ArtifactsDir(repoDir, testName string) string {
	return filepath.Join(report.ArtifactsRoot(repoDir), sanitizePath(testName))
}

// sanitizePath keeps a test name readable as one directory name.
func sanitizePath(name string) string {
	r := strings.NewReplacer("/", "__", "\\", "_", ":", "_", " ", "_", "..", "_")
	return r.Replace(name)
}

// CollectArtifacts writes into dir every service's full log
// (<svc>.log), its inspect JSON (<svc>.inspect.json), the fault transcript
// (faults.log), the run's packet capture (capture.pcap, see CaptureEnv) and
// the resolved compose project (compose.yaml). It returns a
// summary that starts with "artifacts: <dir>" and shows the last tailLines
// of each log, for a failure message.
func (h *Harness) CollectArtifacts(ctx context.Context, dir string, tailLines int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("artifacts: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var sum strings.Builder
	fmt.Fprintf(&sum, "artifacts: %s\n", dir)
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	h.mu.Lock()
	names := h.serviceNamesLocked()
	ids := map[string]string{}
	for _, n := range names {
		ids[n] = h.services[n].id
	}
	h.mu.Unlock()
	for _, n := range names {
		logs, err := containerLogs(ctx, h.docker, ids[n], "all")
		keep(err)
		keep(os.WriteFile(filepath.Join(dir, n+".log"), []byte(logs), 0o644))
		if ins, err := h.docker.ContainerInspect(ctx, ids[n], client.ContainerInspectOptions{}); err == nil {
			var pretty bytes.Buffer
			if json.Indent(&pretty, ins.Raw, "", "  ") != nil {
				pretty.Write(ins.Raw)
			}
			keep(os.WriteFile(filepath.Join(dir, n+".inspect.json"), pretty.Bytes(), 0o644))
			if st := ins.Container.State; st != nil {
				fmt.Fprintf(&sum, "%s: %s", n, st.Status)
				if !st.Running {
					fmt.Fprintf(&sum, " (exit %d)", st.ExitCode)
				}
				if st.Health != nil {
					fmt.Fprintf(&sum, ", health %s", st.Health.Status)
				}
				sum.WriteString("\n")
			}
		} else {
			keep(err)
		}
		lines := strings.Split(strings.TrimRight(logs, "\n"), "\n")
		if len(lines) > tailLines {
			lines = lines[len(lines)-tailLines:]
		}
		fmt.Fprintf(&sum, "--- %s: last %d log lines (%s) ---\n%s\n", n, len(lines), filepath.Join(dir, n+".log"), indent(strings.Join(lines, "\n")))
	}
	tr := h.Transcript()
	keep(os.WriteFile(filepath.Join(dir, "faults.log"), []byte(strings.Join(tr, "\n")+"\n"), 0o644))
	if len(tr) > 0 {
		fmt.Fprintf(&sum, "--- transcript (faults.log) ---\n%s\n", indent(strings.Join(tr, "\n")))
	}
	if active := h.Faults(); len(active) > 0 {
		fmt.Fprintf(&sum, "active faults: %s\n", strings.Join(active, "; "))
	}
	capLine, err := h.captureArtifact(ctx, dir)
	keep(err)
	sum.WriteString(capLine)
	if h.project != nil {
		y, err := h.project.MarshalYAML()
		keep(err)
		keep(os.WriteFile(filepath.Join(dir, "compose.yaml"), y, 0o644))
	}
	return sum.String(), firstErr
}
