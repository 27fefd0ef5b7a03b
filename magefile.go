//go:build mage

// Mage targets for the rbee Docker test environment. They are thin: the logic is in xtask/setup (keys, binaries, images, cleanup), xtask/integration (topologies), xtask/testrun (test runs and summaries) and xtask/bench. Run `go run mage.go <target>` (-v: verbose).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/magefile/mage/mg"

	"github.com/rbee-dev/rbee/xtask/bench"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/mutate"
	"github.com/rbee-dev/rbee/xtask/nemesis"
	"github.com/rbee-dev/rbee/xtask/setup"
	"github.com/rbee-dev/rbee/xtask/testrun"
)

// Aliases lets `cleanup` mean `cleanup:all`.
var Aliases = map[string]any{
	"cleanup": Cleanup.All,
}

func cfg() (setup.Config, error) {
	root, err := setup.FindRoot(".")
	return setup.Config{Root: root, Verbose: mg.Verbose()}, err
}

// Setup prepares a test run: SSH keys, static binaries, base and service images (idempotent).
func Setup(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Setup(ctx, c)
}

// Engine makes sure a Docker engine answers: where none does and DOCKER_HOST is unset, installs Debian's docker.io, iptables, debootstrap (apt-get, root or sudo) and starts dockerd; setup runs it first.
func Engine(ctx context.Context) error {
	e := setup.SystemEngine(func(format string, args ...any) { fmt.Printf(format+"\n", args...) })
	e.Bootstrap = true
	return setup.EnsureEngine(ctx, e)
}

// Keys generates keys/test_id_rsa, wrong_id_rsa, cluster.key, wrong_cluster.key, per-hive host keys and known_hosts (keeps existing keys).
func Keys(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Keys(ctx, c)
}

// Build compiles static linux/amd64 binaries of the rbee programs and the model hub into build/bin.
func Build(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Build(ctx, c)
}

// Image groups the image targets.
type Image mg.Namespace

// Base builds rbee-test/base:bookworm (from debian:bookworm-slim, else debootstrap from the host's mirror).
func (Image) Base(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.BaseImage(ctx, c)
}

// All builds the base image and the queen, hive, worker and hub images from build/bin (or RBEE_BIN_DIR).
func (Image) All(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Images(ctx, c)
}

// Cleanup groups the cleanup targets; `cleanup` alone is cleanup:all.
type Cleanup mg.Namespace

// All removes every container, network, volume and image labelled dev.rbee.project=rbee-netest.
func (Cleanup) All(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Cleanup(ctx, c, setup.CleanupOptions{Images: true})
}

// Stack removes the project's containers, networks and volumes but keeps its images.
func (Cleanup) Stack(ctx context.Context) error {
	c, err := cfg()
	if err != nil {
		return err
	}
	return setup.Cleanup(ctx, c, setup.CleanupOptions{Images: false})
}

// Env groups the targets that keep a topology running for poking at by hand.
type Env mg.Namespace

// Up brings a topology (localhost, multi-hive, full-stack, …) up as stack rbee-<topology>, waits until healthy, prints its URLs.
func (Env) Up(ctx context.Context, topology string) error {
	topo, err := integration.ParseTopology(topology)
	if err != nil {
		return err
	}
	desc, err := integration.Up(ctx, topo, "rbee-"+topology)
	if err != nil {
		return err
	}
	fmt.Println(desc)
	return nil
}

// Down removes a stack left by env:up or by a kept failed test, given its name (rbee-localhost, …).
func (Env) Down(ctx context.Context, name string) error {
	return integration.Down(ctx, name)
}

// Test groups the test targets. Each writes JUnit XML to test-results/ (or
// $RBEE_JUNIT_DIR) and ends with a summary table.
type Test mg.Namespace

// remoteCategory is the suite test:all (and CI) runs a second time through a TCP
// listener, to prove DOCKER_HOST is honoured end to end.
const remoteCategory = testrun.RemoteCategory

func testOptions() (testrun.Options, error) {
	root, err := setup.FindRoot(".")
	return testrun.Options{Root: root}, err
}

func unitSpec() testrun.Spec {
	return testrun.Spec{Name: "unit", Packages: []string{"./..."}, Collapse: "unit (no Docker)", Verbose: mg.Verbose()}
}

func dockerSpec(name string, run string, env map[string]string, cats ...testrun.Category) testrun.Spec {
	s := testrun.Spec{Name: name, Docker: true, Run: run, Env: env, Verbose: mg.Verbose()}
	for _, c := range cats {
		s.Packages = append(s.Packages, c.Package)
	}
	return s
}

func runTests(ctx context.Context, needsImages bool, specs ...testrun.Spec) error {
	if needsImages {
		mg.CtxDeps(ctx, Setup)
	}
	o, err := testOptions()
	if err != nil {
		return err
	}
	return testrun.RunAll(ctx, o, specs...)
}

// Unit runs the unit and process-level tests (go test ./..., no Docker).
func (Test) Unit(ctx context.Context) error { return runTests(ctx, false, unitSpec()) }

// Docker runs every Docker suite on every topology (after setup).
func (Test) Docker(ctx context.Context) error {
	return runTests(ctx, true, dockerSpec("docker", "", nil, testrun.Categories...))
}

// Topology runs the Docker suites' tests on one topology's shard (localhost, multi-hive, full-stack, …: `go run mage.go topologies` lists them).
func (Test) Topology(ctx context.Context, name string) error {
	topo, err := integration.ParseTopology(name)
	if err != nil {
		return fmt.Errorf("test:topology: %w", err)
	}
	shard := topo.Shard()
	return runTests(ctx, true, dockerSpec("docker-"+shard, "", map[string]string{integration.ShardEnv: shard}, testrun.Categories...))
}

// Localhost is test:topology localhost (a documented alias).
func (Test) Localhost(ctx context.Context) error {
	return Test{}.Topology(ctx, integration.Localhost.Shard())
}

// MultiHive is test:topology multi-hive (a documented alias).
func (Test) MultiHive(ctx context.Context) error {
	return Test{}.Topology(ctx, integration.MultiHive.Shard())
}

// FullStack is test:topology full-stack (a documented alias).
func (Test) FullStack(ctx context.Context) error {
	return Test{}.Topology(ctx, integration.FullStack.Shard())
}

// Topologies lists the registered topologies: name, compose file, queen configs, shard.
func Topologies() {
	fmt.Printf("%-12s %-44s %-20s %s\n", "topology", "compose file", "configs", "shard (RBEE_TOPOLOGY)")
	for _, t := range integration.Topologies() {
		fmt.Printf("%-12s %-44s %-20s %s\n", t, t.File(), t.Configs(), t.Shard())
	}
}

// Shard runs shard I of N ("1/3") of the Docker tests, balanced by the durations in the last JUnit results (RBEE_SHARD_DURATIONS or test-results/).
func (Test) Shard(ctx context.Context, shard string) error {
	i, n, err := testrun.ParseShard(shard)
	if err != nil {
		return err
	}
	o, err := testOptions()
	if err != nil {
		return err
	}
	p, err := testrun.PlanDocker(o, n)
	if err != nil {
		return err
	}
	p.Print(os.Stdout, i)
	spec, ok := p.Shards[i-1].Spec(i, n)
	if !ok {
		fmt.Printf("shard %d/%d has no tests\n", i, n)
		return nil
	}
	spec.Verbose = mg.Verbose()
	return runTests(ctx, true, spec)
}

// Plan prints how test:shard splits the Docker tests into N shards, without running them.
func (Test) Plan(n int) error {
	o, err := testOptions()
	if err != nil {
		return err
	}
	p, err := testrun.PlanDocker(o, n)
	if err != nil {
		return err
	}
	p.Print(os.Stdout, 0)
	return nil
}

// Category runs one Docker suite: httpcomm, sshcomm, heartbeat, lifecycle, workerlifecycle, failure, e2e, security or harness.
func (Test) Category(ctx context.Context, name string) error {
	c, err := testrun.FindCategory(name)
	if err != nil {
		return err
	}
	return runTests(ctx, true, dockerSpec("docker-"+c.Name, "", nil, c))
}

// Run runs the Docker tests whose names match a go test -run pattern (such as 'TestStaleness$' or 'Heartbeat').
func (Test) Run(ctx context.Context, pattern string) error {
	if pattern == "" {
		return fmt.Errorf("test:run needs a pattern (go test -run syntax)")
	}
	return runTests(ctx, true, dockerSpec("docker-run", pattern, nil, testrun.Categories...))
}

// Remote runs one Docker suite against this engine through a TCP listener (DOCKER_HOST=tcp://127.0.0.1:PORT).
func (Test) Remote(ctx context.Context, category string) error {
	spec, stop, err := remoteSpec(ctx, category)
	if err != nil {
		return err
	}
	defer stop()
	return runTests(ctx, true, spec)
}

func remoteSpec(ctx context.Context, category string) (testrun.Spec, func(), error) {
	c, err := testrun.FindCategory(category)
	if err != nil {
		return testrun.Spec{}, nil, err
	}
	sock, err := testrun.LocalSocket()
	if err != nil {
		return testrun.Spec{}, nil, err
	}
	p, err := testrun.StartEngineProxy(ctx, sock)
	if err != nil {
		return testrun.Spec{}, nil, err
	}
	fmt.Printf("remote engine: DOCKER_HOST=%s → %s\n", p.DockerHost(), sock)
	return dockerSpec("docker-remote-"+c.Name, "", map[string]string{"DOCKER_HOST": p.DockerHost()}, c), func() { p.Close() }, nil
}

// All runs what CI runs: unit tests, every Docker suite, and one suite again through DOCKER_HOST=tcp://….
func (Test) All(ctx context.Context) error {
	mg.CtxDeps(ctx, Setup)
	remote, stop, err := remoteSpec(ctx, remoteCategory)
	if err != nil {
		return err
	}
	defer stop()
	return runTests(ctx, false, unitSpec(), dockerSpec("docker", "", nil, testrun.Categories...), remote)
}

// CI groups what the GitHub workflow asks of Mage.
type CI mg.Namespace

// Matrix prints the workflow's Docker job matrix as JSON: test:shard 1/N … N/N and the remote-engine run.
func (CI) Matrix() error {
	b, err := testrun.CIMatrixJSON(testrun.CIShards, remoteCategory)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

// Lint checks gofmt, go vet (with and without the docker tag), shell script syntax and the GitHub workflow with actionlint.
func Lint(ctx context.Context) error {
	root, err := setup.FindRoot(".")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "gofmt", "-l", root).Output()
	if err != nil {
		return fmt.Errorf("gofmt: %w", err)
	}
	if files := strings.TrimSpace(string(out)); files != "" {
		return fmt.Errorf("gofmt needed on:\n%s", files)
	}
	// Shell scripts: a syntax error must fail here, not in the CI run it breaks.
	scripts, _ := filepath.Glob(filepath.Join(root, "tests", "docker", "scripts", "*.sh"))
	more, _ := filepath.Glob(filepath.Join(root, "docker", "*", "*.sh"))
	scripts = append(append(scripts, filepath.Join(root, ".ci", "run")), more...)
	for _, sc := range scripts {
		if out, err := exec.CommandContext(ctx, "bash", "-n", sc).CombinedOutput(); err != nil {
			return fmt.Errorf("bash -n %s: %v\n%s", sc, err, out)
		}
	}
	for _, args := range [][]string{
		{"vet", "./..."},
		{"vet", "-tags", "docker", "./..."},
		{"tool", "-modfile=tools/actionlint/go.mod", "actionlint"},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

// Bench measures harness vs Compose CLI, faults, loopback throughput and the Docker suite; writes docs/BENCHMARKS.md.
func Bench(ctx context.Context) error {
	mg.CtxDeps(ctx, Setup)
	root, err := setup.FindRoot(".")
	if err != nil {
		return err
	}
	o := bench.Options{Root: root}
	if err := o.FromEnv(); err != nil {
		return err
	}
	_, err = bench.Run(ctx, o)
	return err
}

// Soak runs the whole Docker suite N times (`soak N --stress`: unit tests and harness with -race too, every core kept busy by stress-ng or a Go burner; `--pkg heartbeat,./internal/queen/` and `--run PATTERN` a subset); prints per-test failures, appends to docs/BENCHMARKS.md.
func Soak(ctx context.Context, n int, pkg *string, run *string) error {
	o := bench.SoakOptions{Runs: n}
	if pkg != nil {
		o.Only = strings.Split(*pkg, ",")
	}
	if run != nil {
		o.Run = *run
	}
	switch v := os.Getenv(bench.StressEnv); v {
	case "", "0":
	case "1":
		o.Stress = true
	default:
		return fmt.Errorf("%s=%q: want 1 or 0", bench.StressEnv, v)
	}
	specs, err := bench.SoakSpecs("soak", o)
	if err != nil {
		return err
	}
	for _, s := range specs {
		if s.Docker {
			mg.CtxDeps(ctx, Setup) // keys, binaries, images; unit tests alone need none
			break
		}
	}
	root, err := setup.FindRoot(".")
	if err != nil {
		return err
	}
	return bench.SoakReport(ctx, root, o, os.Stdout)
}

// Mutate runs mutation testing of cmd/ and internal/: `mutate all` (writes docs/MUTATION.md), `mutate NAME…` a subset, `mutate -l` lists the catalogue.
func Mutate(ctx context.Context, names string) error {
	if names == "-l" || names == "list" {
		fmt.Print(mutate.List(mutate.Catalogue))
		return nil
	}
	ms, err := mutate.Select(mutate.Catalogue, names)
	if err != nil {
		return err
	}
	c, err := cfg()
	if err != nil {
		return err
	}
	// Keys and build/bin (the hub binary) of this tree; the service images
	// of this tree are not rebuilt: mutants get images of their own.
	if err := setup.Keys(ctx, c); err != nil {
		return err
	}
	if err := setup.Build(ctx, c); err != nil {
		return err
	}
	o := mutate.Options{Root: c.Root, Verbose: c.Verbose, Command: "go run mage.go mutate " + names,
		LogDir: filepath.Join(c.Root, "artifacts", "mutate")}
	if err := o.FromEnv(); err != nil {
		return err
	}
	if (names == "" || names == "all") && o.RunPattern == "" {
		o.Report = filepath.Join(c.Root, "docs", "MUTATION.md")
	}
	_, err = mutate.Run(ctx, o, ms)
	return err
}

// Nemesis runs random fault schedules under job traffic on multi-hive, one fresh stack per seed: `nemesis --seeds N --duration D` (default 5 × 60s; RBEE_FAULT_SEED=N replays one); prints a table, appends it to docs/NEMESIS.md.
func Nemesis(ctx context.Context, seeds *int, duration *time.Duration) error {
	n, d := 5, 60*time.Second
	if seeds != nil {
		n = *seeds
	}
	if duration != nil {
		d = *duration
	}
	mg.CtxDeps(ctx, Setup)
	root, err := setup.FindRoot(".")
	if err != nil {
		return err
	}
	return nemesis.Campaign(ctx, nemesis.CampaignOptions{Root: root, Seeds: n, Duration: d, Verbose: mg.Verbose(),
		Report: filepath.Join(root, "docs", "NEMESIS.md"), Command: fmt.Sprintf("go run mage.go nemesis --seeds %d --duration %s", n, d)}, os.Stdout)
}
