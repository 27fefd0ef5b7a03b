package testrun

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// workflow is the part of .github/workflows/ci.yml that the Docker jobs'
// matrix depends on.
type workflow struct {
	Jobs map[string]struct {
		Needs    any               `yaml:"needs"`
		Outputs  map[string]string `yaml:"outputs"`
		Strategy struct {
			Matrix any `yaml:"matrix"`
		} `yaml:"strategy"`
		Steps []struct {
			ID   string            `yaml:"id"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// checkWorkflow says how the workflow in data fails to run exactly the
// jobs of matrix: its plan job must print the matrix with `go run mage.go
// ci:matrix` into its output, the docker job must take its matrix from
// that output and run each entry's target, and the job that keeps the
// shards' JUnit XML for the next plan must match every shard job's
// artifact name.
func checkWorkflow(data []byte, matrix []CIJob) error {
	var w workflow
	if err := yaml.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("parse workflow: %w", err)
	}
	var errs []error
	plan, ok := w.Jobs["plan"]
	if !ok {
		return errors.New("no plan job")
	}
	printed := false
	for _, s := range plan.Steps {
		if s.ID == "matrix" && strings.Contains(s.Run, `echo "matrix=$(go run mage.go ci:matrix)" >> "$GITHUB_OUTPUT"`) {
			printed = true
		}
	}
	if !printed {
		errs = append(errs, errors.New(`plan job: no step "matrix" writing matrix=$(go run mage.go ci:matrix) to $GITHUB_OUTPUT`))
	}
	if got := plan.Outputs["matrix"]; got != "${{ steps.matrix.outputs.matrix }}" {
		errs = append(errs, fmt.Errorf("plan job: output matrix is %q, want ${{ steps.matrix.outputs.matrix }}", got))
	}
	docker, ok := w.Jobs["docker"]
	if !ok {
		return errors.Join(append(errs, errors.New("no docker job"))...)
	}
	if fmt.Sprint(docker.Needs) != "plan" && fmt.Sprint(docker.Needs) != "[plan]" {
		errs = append(errs, fmt.Errorf("docker job: needs %v, want plan", docker.Needs))
	}
	if got, ok := docker.Strategy.Matrix.(string); !ok || got != "${{ fromJSON(needs.plan.outputs.matrix) }}" {
		errs = append(errs, fmt.Errorf("docker job: matrix %v, want ${{ fromJSON(needs.plan.outputs.matrix) }} (a list written in the workflow goes stale)", docker.Strategy.Matrix))
	}
	runs, junit := false, ""
	for _, s := range docker.Steps {
		if strings.TrimSpace(s.Run) == "go run mage.go ${{ matrix.target }}" {
			runs = true
		}
		if strings.HasPrefix(s.With["name"], "junit-") {
			junit = s.With["name"]
		}
	}
	if !runs {
		errs = append(errs, errors.New("docker job: no step running go run mage.go ${{ matrix.target }}"))
	}
	keep := ""
	if d, ok := w.Jobs["durations"]; ok {
		for _, s := range d.Steps {
			if p := s.With["pattern"]; p != "" {
				keep = p
			}
		}
	}
	for _, j := range matrix {
		if !strings.HasPrefix(j.Target, "test:shard ") {
			continue
		}
		name := strings.ReplaceAll(junit, "${{ matrix.name }}", j.Name)
		if ok, _ := path.Match(keep, name); junit == "" || !ok {
			errs = append(errs, fmt.Errorf("durations job: pattern %q does not keep %s's JUnit artifact %q: the next plan would balance without its times", keep, j.Name, name))
		}
	}
	return errors.Join(errs...)
}

// The workflow's Docker jobs are the ci:matrix ones, taken from Mage at
// run time; a workflow that lists its own jobs, runs a fixed target or
// drops the shards' durations is caught.
func TestWorkflowRunsTheMatrix(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, ".github", "workflows", "ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	matrix := CIMatrix(CIShards, RemoteCategory)
	if err := checkWorkflow(data, matrix); err != nil {
		t.Fatalf(".github/workflows/ci.yml: %v", err)
	}
	for _, bad := range []struct{ from, to, want string }{
		{"${{ fromJSON(needs.plan.outputs.matrix) }}", "{ include: [ { name: localhost, target: 'test:topology localhost' } ] }", "docker job: matrix"},
		{"go run mage.go ${{ matrix.target }}", "go run mage.go test:docker", "no step running"},
		{"go run mage.go ci:matrix", "echo '{}'", "plan job: no step"},
		{"pattern: junit-shard-*", "pattern: junit-docker-*", "durations job: pattern"},
	} {
		if !bytes.Contains(data, []byte(bad.from)) {
			t.Fatalf("ci.yml lacks %q", bad.from)
		}
		err := checkWorkflow(bytes.ReplaceAll(data, []byte(bad.from), []byte(bad.to)), matrix)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("workflow with %q for %q: %v; want %q", bad.to, bad.from, err, bad.want)
		}
	}
}

// The matrix is shards 1…N of one N plus the remote run of a real
// category, its JSON is what fromJSON reads, and its shards hold every
// Docker test exactly once.
func TestCIMatrixCoversEveryTest(t *testing.T) {
	root := repoRoot(t)
	matrix := CIMatrix(CIShards, RemoteCategory)
	b, err := CIMatrixJSON(CIShards, RemoteCategory)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct{ Include []CIJob }
	if err := json.Unmarshal(b, &decoded); err != nil || len(decoded.Include) != len(matrix) {
		t.Fatalf("CIMatrixJSON = %s (%v); want {\"include\": the %d jobs}", b, err, len(matrix))
	}
	names := map[string]bool{}
	var shards []int
	remote := 0
	for _, j := range decoded.Include {
		if names[j.Name] || j.Name == "" {
			t.Errorf("job name %q empty or twice", j.Name)
		}
		names[j.Name] = true
		if spec, ok := strings.CutPrefix(j.Target, "test:shard "); ok {
			i, n, err := ParseShard(spec)
			if err != nil || n != CIShards || i != len(shards)+1 {
				t.Errorf("job %s: target %q; want shard %d/%d", j.Name, j.Target, len(shards)+1, CIShards)
			}
			shards = append(shards, i)
			continue
		}
		cat, ok := strings.CutPrefix(j.Target, "test:remote ")
		if _, err := FindCategory(cat); !ok || err != nil {
			t.Errorf("job %s: target %q is neither a shard nor the remote run of a category (%v)", j.Name, j.Target, err)
		}
		remote++
	}
	if len(shards) != CIShards || remote != 1 {
		t.Fatalf("%d shard jobs and %d remote runs; want %d and 1", len(shards), remote, CIShards)
	}
	tests, err := ListTests(root, Categories)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(DurationsEnv, t.TempDir()) // no recorded durations: by count
	p, err := PlanDocker(Options{Root: root}, CIShards)
	if err != nil {
		t.Fatal(err)
	}
	where := map[TestID]int{}
	for i, s := range p.Shards {
		if len(s.Tests) == 0 {
			t.Errorf("shard %d/%d is empty", i+1, CIShards)
		}
		for _, id := range s.Tests {
			where[id]++
		}
	}
	for _, id := range tests {
		if where[id] != 1 {
			t.Errorf("%s is in %d CI shards; want 1", id, where[id])
		}
	}
	if len(where) != len(tests) {
		t.Errorf("the shards hold %d tests, the suites have %d", len(where), len(tests))
	}
}

// hardCoded finds the lines of a CI script or workflow (comments aside)
// that name a topology or select a topology shard: such a list goes stale
// when a topology is added, and its tests then run nowhere.
func hardCoded(file string, data []byte, names []string) []string {
	var words []string
	for _, n := range names {
		words = append(words, regexp.QuoteMeta(n))
	}
	re := regexp.MustCompile(`(^|[^\w.-])(` + strings.Join(words, "|") + `)($|[^\w.-])|` + integration.ShardEnv + `|test:(localhost|multiHive|fullStack)\b`)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if re.MatchString(line) {
			out = append(out, fmt.Sprintf("%s:%d: %s", file, n, line))
		}
	}
	return out
}

// The CI entry points name no topology: the workflow, .ci/run and the
// plan's scripts get every topology from the registry (through Mage), so
// adding one needs no change there.
func TestCINamesNoTopology(t *testing.T) {
	root := repoRoot(t)
	files := []string{".github/workflows/ci.yml", ".ci/run"}
	scripts, _ := filepath.Glob(filepath.Join(root, "tests", "docker", "scripts", "*.sh"))
	if len(scripts) == 0 {
		t.Fatal("no tests/docker/scripts/*.sh")
	}
	for _, s := range scripts {
		rel, _ := filepath.Rel(root, s)
		files = append(files, rel)
	}
	names := integration.TopologyNames()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range hardCoded(f, data, names) {
			t.Errorf("%s: names a topology; take it from the registry (go run mage.go topologies, test:topology NAME, test:shard)", line)
		}
	}
	// Negative controls: a per-topology job or loop is caught, a comment or
	// a longer word is not.
	for in, want := range map[string]int{
		"run: go run mage.go test:topology full-stack\n": 1,
		"for t in localhost multi-hive; do x; done\n":    1,
		"RBEE_TOPOLOGY=x go test ./...\n":                1,
		"run: go run mage.go test:fullStack\n":           1,
		"# test:topology localhost, as a comment\n":      0,
		"curl http://localhost.example/\n":               0,
	} {
		if got := len(hardCoded("x", []byte(in), names)); got != want {
			t.Errorf("hardCoded(%q) found %d lines, want %d", in, got, want)
		}
	}
}

// repoRoot is the repository root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}
