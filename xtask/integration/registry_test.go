package integration

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// checkTopology says what is missing for t to be usable: its compose file
// (loadable, mounting the queen's configuration from t's configs directory),
// that directory with queen.toml and hives.conf, and a shard.
func checkTopology(root string, t Topology) error {
	var errs []error
	if t.name == "" || t.shard == "" {
		errs = append(errs, fmt.Errorf("topology %q: needs a name and a shard", t.name))
	}
	for _, f := range []string{"queen.toml", "hives.conf"} {
		if fi, err := os.Stat(filepath.Join(root, t.configs, f)); err != nil || fi.IsDir() {
			errs = append(errs, fmt.Errorf("topology %s: configs %s/%s: missing", t, t.configs, f))
		}
	}
	file := filepath.Join(root, t.File())
	if _, err := os.Stat(file); err != nil {
		return errors.Join(append(errs, fmt.Errorf("topology %s: compose file %s: missing", t, t.File()))...)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(file),
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		Environment: map[string]string{},
	}, func(o *loader.Options) { o.SetProjectName("rbee-registry-check", true) })
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("topology %s: load %s: %w", t, t.File(), err))...)
	}
	mounted := map[string]bool{}
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			rel, err := filepath.Rel(root, v.Source)
			if v.Type != types.VolumeTypeBind || err != nil || !strings.HasPrefix(rel, "configs"+string(filepath.Separator)) {
				continue
			}
			if filepath.Dir(rel) != filepath.FromSlash(t.configs) {
				errs = append(errs, fmt.Errorf("topology %s: %s mounts %s, outside its configs %s", t, s.Name, rel, t.configs))
			}
			mounted[v.Target] = true
		}
	}
	for _, target := range []string{"/etc/rbee/queen.toml", "/etc/rbee/hives.conf"} {
		if !mounted[target] {
			errs = append(errs, fmt.Errorf("topology %s: %s mounts no %s from %s", t, t.File(), target, t.configs))
		}
	}
	return errors.Join(errs...)
}

// Every registered topology has its compose file and configuration, a
// unique name that ParseTopology returns, and exactly one shard; a
// topology without them is reported, naming what is missing.
func TestRegistry(t *testing.T) {
	root, err := findRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	if len(registry) == 0 {
		t.Fatal("empty registry")
	}
	seen := map[string]bool{}
	for _, topo := range registry {
		if seen[topo.name] {
			t.Errorf("topology %s registered twice", topo)
		}
		seen[topo.name] = true
		if err := checkTopology(root, topo); err != nil {
			t.Error(err)
		}
		if got, err := ParseTopology(topo.name); err != nil || got != topo {
			t.Errorf("ParseTopology(%q) = %v, %v", topo.name, got, err)
		}
		if n := len(shardsOf(topo)); n != 1 {
			t.Errorf("topology %s runs in %d RBEE_TOPOLOGY shards; want 1", topo, n)
		}
	}
	// Negative control: an entry without its files is caught, by name.
	ghost := Topology{name: "ghost", file: "docker-compose.ghost.yml", configs: "configs/ghost"}
	err = checkTopology(root, ghost)
	for _, want := range []string{"compose file tests/docker/docker-compose.ghost.yml: missing", "configs configs/ghost/queen.toml: missing", "needs a name and a shard"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkTopology(ghost) = %v; want it to say %q", err, want)
		}
	}
	if n := len(shardsOf(ghost)); n != 0 {
		t.Errorf("a topology without a shard runs in %d shards", n)
	}
	// A registered file with another topology's configs is caught too.
	mixed := Localhost
	mixed.configs = FullStack.configs
	if err := checkTopology(root, mixed); err == nil || !strings.Contains(err.Error(), "outside its configs") {
		t.Errorf("compose file mounting another topology's configs: %v", err)
	}
}

// shardsOf lists the RBEE_TOPOLOGY values under which a test on topo runs.
func shardsOf(topo Topology) []string {
	var in []string
	for _, s := range Shards() {
		if why, err := shardSkipFor(s, topo); err == nil && why == "" {
			in = append(in, s)
		}
	}
	return in
}

// registerLine finds the exported variable of each register call in topology.go.
var registerLine = regexp.MustCompile(`(?m)^\s*(\w+)\s*=\s*register\(`)

// TestEverySuiteTestHasAShard reads the Docker tests (the suites and the
// harness's own), finds each Start and New call and the topology it names,
// and checks that topology is registered and runs in exactly one
// RBEE_TOPOLOGY shard: a test that no `test:topology` run would include
// fails here rather than being skipped silently.
func TestEverySuiteTestHasAShard(t *testing.T) {
	root, err := findRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "xtask", "integration", "topology.go"))
	if err != nil {
		t.Fatal(err)
	}
	byVar := map[string]Topology{} // exported variable → topology
	for _, m := range registerLine.FindAllStringSubmatch(string(src), -1) {
		byVar[m[1]] = registry[len(byVar)]
	}
	if len(byVar) != len(registry) {
		t.Fatalf("topology.go has %d register lines for %d registered topologies", len(byVar), len(registry))
	}
	var files []string
	for _, pattern := range []string{"xtask/tests/docker/*/*_test.go", "xtask/integration/*_test.go"} {
		m, _ := filepath.Glob(filepath.Join(root, pattern))
		files = append(files, m...)
	}
	perDir := map[string]int{}
	for _, f := range files {
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		inPkg := file.Name.Name == "integration"
		dir := filepath.Dir(f)
		if _, ok := perDir[dir]; !ok {
			perDir[dir] = 0
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			if fn := refName(call.Fun, inPkg); fn != "Start" && fn != "New" {
				return true
			}
			arg := call.Args[1]
			if c, ok := arg.(*ast.CallExpr); ok && refName(c.Fun, inPkg) == "MultiHiveN" {
				perDir[dir]++
				if n := len(shardsOf(MultiHiveN(2))); n != 1 {
					t.Errorf("%s: MultiHiveN runs in %d shards; want 1", fset.Position(call.Pos()), n)
				}
				return true
			}
			name := refName(arg, inPkg)
			topo, ok := byVar[name]
			if !ok {
				return true // not a topology (another New), or one passed in a variable
			}
			perDir[dir]++
			if n := len(shardsOf(topo)); n != 1 {
				t.Errorf("%s: a test on %s runs in %d shards (%v); want 1", fset.Position(call.Pos()), topo, n, Shards())
			}
			return true
		})
	}
	if len(perDir) < 8 {
		t.Errorf("read %d test directories; want the 7 suites and the harness", len(perDir))
	}
	for dir, n := range perDir {
		if n == 0 {
			t.Errorf("%s: found no Start or New call naming a registered topology", dir)
		}
	}
	if !slices.Contains(Shards(), Localhost.shard) {
		t.Errorf("shards %v lack localhost's", Shards())
	}
}

// refName is the name an expression refers to: X for integration.X (or
// for X inside package integration), "" otherwise.
func refName(e ast.Expr, inPkg bool) string {
	switch v := e.(type) {
	case *ast.SelectorExpr:
		if id, ok := v.X.(*ast.Ident); ok && id.Name == "integration" {
			return v.Sel.Name
		}
	case *ast.Ident:
		if inPkg {
			return v.Name
		}
	}
	return ""
}

// TestSuiteTestsRunInParallel reads the Docker tests (the seven suites and
// the harness's own) and checks that every top-level test begins with
// t.Parallel(), so that go test -parallel (RBEE_DOCKER_TEST_PARALLEL) runs
// them side by side: each brings up its own isolated stack. A test that
// cannot (it sets process-wide state such as t.Setenv) says so in its doc
// comment with a line starting "Serial:".
func TestSuiteTestsRunInParallel(t *testing.T) {
	root, err := findRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "xtask", "tests", "docker", "*", "*_test.go"))
	harness, _ := filepath.Glob(filepath.Join(root, "xtask", "integration", "*docker_test.go"))
	files = append(files, harness...)
	tests := 0
	for _, f := range files {
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") || fn.Name.Name == "TestMain" || fn.Body == nil {
				continue
			}
			tests++
			if fn.Doc != nil && serialLine.MatchString(fn.Doc.Text()) {
				continue
			}
			if len(fn.Body.List) == 0 || !isParallelCall(fn.Body.List[0]) {
				t.Errorf("%s: %s does not begin with t.Parallel() (or say why not in a \"Serial:\" line of its doc comment)", fset.Position(fn.Pos()), fn.Name.Name)
			}
		}
	}
	if tests < 100 || len(harness) < 4 {
		t.Errorf("found %d top-level tests in %d files (%d of the harness); want the seven suites' and the harness's (about 130)", tests, len(files), len(harness))
	}
}

// serialLine is how a suite test's doc comment says why it is not parallel.
var serialLine = regexp.MustCompile(`(?m)^Serial: \S`)

// isParallelCall reports whether s is the statement t.Parallel().
func isParallelCall(s ast.Stmt) bool {
	e, ok := s.(*ast.ExprStmt)
	if !ok {
		return false
	}
	c, ok := e.X.(*ast.CallExpr)
	if !ok || len(c.Args) != 0 {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Parallel" {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == "t"
}
