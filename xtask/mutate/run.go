package mutate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/setup"
)

// Options configure a run.
type Options struct {
	Root       string        // the repository (read only: mutants go to scratch copies)
	Out        io.Writer     // progress lines; os.Stdout when nil
	Parallel   int           // mutants at a time (default 1)
	PkgTimeout time.Duration // go test -timeout of one suite package (default 20 min)
	Report     string        // file the report is written to ("" = none)
	Command    string        // how the run was started, for the report
	Verbose    bool          // stream build output
	LogDir     string        // where each suite run's go test -json output is kept ("" = nowhere)
	RunPattern string        // go test -run pattern: only these tests of the claiming suites ("" = all)
}

func (o *Options) defaults() {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	if o.PkgTimeout <= 0 {
		o.PkgTimeout = 20 * time.Minute
	}
}

// Run runs every mutant of ms and returns their results in catalogue order.
// An interrupt (SIGINT, SIGTERM) stops the run; every mutant's images,
// containers and scratch copy are removed in any case.
func Run(ctx context.Context, o Options, ms []Mutant) ([]Result, error) {
	o.defaults()
	if errs := Check(o.Root, ms); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	info := RunInfo{Date: time.Now(), LoadStart: loadAvg(), CPUs: runtime.NumCPU(), Parallel: o.Parallel, Command: o.Command}
	info.Commit, info.Dirty = gitHead(ctx, o.Root)
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(o.Out, format+"\n", args...)
	}
	results := make([]Result, len(ms))
	for i, m := range ms {
		results[i] = Result{Mutant: m} // Status "" until it has run
	}
	// The report is rewritten after every mutant, so a long run that is
	// stopped still leaves what it found.
	var repMu sync.Mutex
	writeReport := func(final bool) error {
		if o.Report == "" {
			return nil
		}
		repMu.Lock()
		defer repMu.Unlock()
		mu.Lock()
		snap := append([]Result(nil), results...)
		mu.Unlock()
		ri := info
		ri.Wall, ri.LoadEnd, ri.Partial = time.Since(info.Date), loadAvg(), !final || ctx.Err() != nil
		if err := os.WriteFile(o.Report, []byte(Report(ri, snap)), 0o644); err != nil {
			logf("mutate: write report: %v", err)
			return fmt.Errorf("write report: %w", err)
		}
		if final {
			logf("mutate: wrote %s", o.Report)
		}
		return nil
	}
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for i, m := range ms {
		if ctx.Err() != nil {
			continue // stays "not run"
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			logf("mutant %s: start (%d of %d)", m.Name, i+1, len(ms))
			r := runOne(ctx, o, m, logf)
			mu.Lock()
			results[i] = r
			mu.Unlock()
			logf("mutant %s: %s %s %s (%s) %s", m.Name, r.Status, r.How, strings.Join(r.KilledBy, ","), r.Wall.Round(time.Second), r.Detail)
			writeReport(false)
		}()
	}
	wg.Wait()
	killed, counted := Summary(results)
	logf("mutate: %d of %d killed in %s; survivors: %s", killed, counted, time.Since(info.Date).Round(time.Second), orDash(strings.Join(Survivors(results), ", ")))
	if err := writeReport(true); err != nil {
		return results, err
	}
	return results, ctx.Err()
}

// runOne applies m in a scratch copy, builds and verifies its images, runs
// the claiming suites and cleans up after itself.
func runOne(ctx context.Context, o Options, m Mutant, logf func(string, ...any)) (res Result) {
	start := time.Now()
	res = Result{Mutant: m}
	defer func() { res.Wall = time.Since(start) }()
	fail := func(err error) Result {
		res.Status, res.Detail = Invalid, err.Error()
		return res
	}
	scratch, err := os.MkdirTemp("", "rbee-mut-"+m.Name+"-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(scratch)
	tag := m.Tag()
	// Cleanup runs even when ctx was cancelled (an interrupt).
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := removeTagged(cctx, tag); err != nil {
			logf("mutant %s: cleanup: %v", m.Name, err)
		}
	}()
	if err := CopyTracked(ctx, o.Root, scratch); err != nil {
		return fail(err)
	}
	if err := m.Apply(scratch); err != nil {
		return fail(err)
	}
	var buildLog bytes.Buffer
	bout := io.Writer(&buildLog)
	if o.Verbose {
		bout = io.MultiWriter(&buildLog, o.Out)
	}
	binDir := setup.BinDir(scratch)
	if err := buildPrograms(ctx, scratch, binDir, bout); err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		res.Status, res.Detail = NoCompile, compileError(err.Error())
		return res
	}
	if err := buildImages(ctx, o.Root, binDir, tag, bout); err != nil {
		return fail(fmt.Errorf("images: %w\n%s", err, lastLines(buildLog.String(), 5)))
	}
	if err := VerifyImages(ctx, binDir, tag); err != nil {
		return fail(err)
	}
	logf("mutant %s: images %s hold the mutated binaries (%s)", m.Name, tag, time.Since(start).Round(time.Second))
	runs := map[string]PackageRun{}
	var order []string
	for _, cat := range m.Claims {
		if _, err := os.Stat(filepath.Join(o.Root, "xtask", "tests", "docker", cat)); err != nil {
			res.Missing = append(res.Missing, cat)
			continue
		}
		t0 := time.Now()
		pr, err := runSuite(ctx, o, cat, tag, binDir)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", cat, err))
		}
		runs[cat], order = pr, append(order, cat)
		res.Ran = append(res.Ran, cat)
		logf("mutant %s: %s: %d run, %d failed (%s)", m.Name, cat, pr.Counts.Run, pr.Counts.Failed, time.Since(t0).Round(time.Second))
		if pr.PkgFail || len(pr.Failed) > 0 {
			break // killed (or broken): later suites add nothing to the verdict
		}
	}
	judge(&res, runs, order)
	if len(order) == 0 {
		res.Status, res.Detail = Invalid, "no claiming suite is in the tree: "+strings.Join(res.Missing, ", ")
	}
	return res
}

// CopyTracked copies the files git tracks under root (their working-tree
// content) to dst, so a mutant never touches the real tree.
func CopyTracked(ctx context.Context, root, dst string) error {
	cmd := exec.CommandContext(ctx, "git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files in %s: %w", root, err)
	}
	for _, rel := range strings.Split(string(out), "\x00") {
		if rel == "" {
			continue
		}
		src := filepath.Join(root, filepath.FromSlash(rel))
		st, err := os.Lstat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the work tree, or a symlink/submodule
		}
		to := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

// buildPrograms compiles the four rbee programs of the scratch copy into
// binDir in one go build (static linux/amd64, as setup builds them).
func buildPrograms(ctx context.Context, scratch, binDir string, out io.Writer) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", binDir + string(os.PathSeparator)}
	for _, p := range setup.Programs {
		if p.Name != "rbee-model-hub" {
			args = append(args, p.Pkg)
		}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = scratch
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, out), io.MultiWriter(&buf, out)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, buf.String())
	}
	return nil
}

// buildImages builds the service images under tag from the binaries in
// binDir. The image tags are fixed when xtask/setup is loaded (from
// RBEE_IMAGE_TAG), so the build runs as its own process: `go run mage.go
// image:all` in root with RBEE_IMAGE_TAG and RBEE_BIN_DIR set. The normal
// images and other tags are not touched.
func buildImages(ctx context.Context, root, binDir, tag string, out io.Writer) error {
	// One build at a time: concurrent Mage runs in one directory share its
	// generated main file, and each build's prune of dangling project
	// images can remove the intermediate images of a build still running.
	imageBuildMu.Lock()
	defer imageBuildMu.Unlock()
	cmd := exec.CommandContext(ctx, "go", "run", "mage.go", "image:all")
	cmd.Dir = root
	cmd.Env = append(envWithout(os.Environ(), "RBEE_IMAGE_TAG", setup.BinDirEnv),
		"RBEE_IMAGE_TAG="+tag, setup.BinDirEnv+"="+binDir)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, out), io.MultiWriter(&buf, out)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go run mage.go image:all (tag %s): %w: %s", tag, err, lastLines(buf.String(), 5))
	}
	return nil
}

func envWithout(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

var imageBuildMu sync.Mutex

// imageFiles says where each rbee program lives in which service image
// (the Dockerfiles' COPY lines).
var imageFiles = []struct{ svc, path, bin string }{
	{"queen", "/usr/local/bin/queen-rbee", "queen-rbee"},
	{"queen", "/usr/local/bin/rbee-keeper", "rbee-keeper"},
	{"queen", "/usr/local/share/rbee/rbee-hive", "rbee-hive"},
	{"hive", "/usr/local/share/rbee/rbee-hive", "rbee-hive"},
	{"hive", "/usr/local/bin/llm-worker-rbee", "llm-worker-rbee"},
	{"worker", "/usr/local/bin/llm-worker-rbee", "llm-worker-rbee"},
}

// VerifyImages checks that the images rbee-test/<svc>:tag hold exactly the
// binaries in binDir: each file is copied out of a created, never started
// container (removed afterwards) and compared by sha256.
func VerifyImages(ctx context.Context, binDir, tag string) error {
	cli, err := dockerx.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	bySvc := map[string][]int{}
	var svcs []string
	for i, f := range imageFiles {
		if _, ok := bySvc[f.svc]; !ok {
			svcs = append(svcs, f.svc)
		}
		bySvc[f.svc] = append(bySvc[f.svc], i)
	}
	for _, svc := range svcs {
		image := "rbee-test/" + svc + ":" + tag
		created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config: &container.Config{Image: image, Entrypoint: []string{"/bin/true"}, Labels: map[string]string{
				dockerx.LabelProject: dockerx.ProjectValue, dockerx.LabelRole: "mutate-verify",
			}},
		})
		if err != nil {
			return fmt.Errorf("verify %s: create container: %w", image, err)
		}
		verr := func() error {
			for _, i := range bySvc[svc] {
				f := imageFiles[i]
				want, err := fileSHA(filepath.Join(binDir, f.bin))
				if err != nil {
					return err
				}
				got, err := containerFileSHA(ctx, cli, created.ID, f.path)
				if err != nil {
					return fmt.Errorf("verify %s: %s: %w", image, f.path, err)
				}
				if got != want {
					return fmt.Errorf("verify %s: %s has sha256 %.12s, the mutant's %s has %.12s: the image does not hold the mutated binary", image, f.path, got, f.bin, want)
				}
			}
			return nil
		}()
		_, rerr := cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		if verr != nil {
			return verr
		}
		if rerr != nil {
			return fmt.Errorf("verify %s: remove container: %w", image, rerr)
		}
	}
	return nil
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func containerFileSHA(ctx context.Context, cli client.APIClient, id, path string) (string, error) {
	h := sha256.New()
	err := dockerx.ReadFile(ctx, cli, id, path, func(r io.Reader, _ int64) error {
		_, err := io.Copy(h, r)
		return err
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runSuite runs one suite package against the mutant's images.
func runSuite(ctx context.Context, o Options, cat, tag, binDir string) (PackageRun, error) {
	// The process gets a little longer than go test's own timeout, so the
	// timeout panic (with the running test's name) is what normally ends it.
	pctx, cancel := context.WithTimeout(ctx, o.PkgTimeout+2*time.Minute)
	defer cancel()
	args := []string{"test", "-tags", "docker", "-count=1", "-json", "-failfast", "-timeout", o.PkgTimeout.String()}
	if o.RunPattern != "" {
		args = append(args, "-run", o.RunPattern)
	}
	cmd := exec.CommandContext(pctx, "go", append(args, "./xtask/tests/docker/"+cat+"/")...)
	cmd.Dir = o.Root
	cmd.Env = append(envWithout(os.Environ(), "RBEE_IMAGE_TAG", setup.BinDirEnv, "RBEE_KEEP_FAILED"),
		"RBEE_IMAGE_TAG="+tag, setup.BinDirEnv+"="+binDir)
	// Its own process group, killed whole on a deadline or interrupt: the
	// test binary is a child of go test, and only once it is dead do its
	// harness runs count as abandoned for integration.Reap.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if o.LogDir != "" {
		if merr := os.MkdirAll(o.LogDir, 0o755); merr == nil {
			_ = os.WriteFile(filepath.Join(o.LogDir, tag+"-"+cat+".jsonl"), append(out.Bytes(), stderr.Bytes()...), 0o644)
		}
	}
	pr, perr := ParseTestJSON(bytes.NewReader(out.Bytes()))
	if perr != nil {
		return pr, fmt.Errorf("reading go test -json: %w", perr)
	}
	pr.Output[""] += stderr.String()
	if ctx.Err() != nil {
		return pr, ctx.Err()
	}
	if pctx.Err() != nil {
		pr.TimedOut, pr.PkgFail = true, true
		return pr, nil
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return pr, err
	}
	if err != nil && !pr.PkgFail && len(pr.Failed) == 0 {
		pr.PkgFail = true // exit status without a fail event: the build of the suite failed
	}
	return pr, nil
}

// removeTagged removes every container made from the mutant's images (a
// test killed by its timeout cannot clean up), what dead harness runs left,
// and the images themselves. Containers are matched by the exact image
// reference they were created from, never by image ID: the images of two
// mutants that differ only in the queen share the hive's ID.
func removeTagged(ctx context.Context, tag string) error {
	cli, err := dockerx.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	refs := map[string]bool{}
	for _, svc := range []string{"queen", "hive", "worker", "hub"} {
		refs["rbee-test/"+svc+":"+tag] = true
	}
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		errs = nil
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
		if err != nil {
			return err
		}
		for _, c := range list.Items {
			if refs[c.Image] {
				if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
					errs = append(errs, err)
				}
			}
		}
		if _, err := integration.Reap(ctx); err != nil {
			errs = append(errs, fmt.Errorf("reap: %w", err))
		}
		left := 0
		for ref := range refs {
			if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("remove %s: %w", ref, err))
				left++
			}
		}
		if left == 0 {
			break
		}
		select { // a container of ours may still be on its way out
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(5 * time.Second):
		}
	}
	return errors.Join(errs...)
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No such image") || strings.Contains(err.Error(), "not found"))
}

func compileError(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, ".go:") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) == 0 {
		return lastLines(s, 3)
	}
	if len(keep) > 3 {
		keep = keep[:3]
	}
	return strings.Join(keep, " | ")
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func gitHead(ctx context.Context, root string) (string, bool) {
	c := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD")
	c.Dir = root
	b, err := c.Output()
	if err != nil {
		return "", false
	}
	d := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no")
	d.Dir = root
	st, _ := d.Output()
	return strings.TrimSpace(string(b)), len(bytes.TrimSpace(st)) > 0
}

// FromEnv reads RBEE_MUTATE_PARALLEL (mutants at a time),
// RBEE_MUTATE_TIMEOUT (go test -timeout per suite package, e.g. 15m) and
// RBEE_MUTATE_RUN (a go test -run pattern, to check one new test against a
// mutant without running its whole suites).
func (o *Options) FromEnv() error {
	if v := os.Getenv("RBEE_MUTATE_PARALLEL"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 8 {
			return fmt.Errorf("RBEE_MUTATE_PARALLEL=%q: want 1..8", v)
		}
		o.Parallel = n
	}
	if v := os.Getenv("RBEE_MUTATE_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			return fmt.Errorf("RBEE_MUTATE_TIMEOUT=%q: want a duration of at least 1m", v)
		}
		o.PkgTimeout = d
	}
	if v := os.Getenv("RBEE_MUTATE_RUN"); v != "" {
		if _, err := regexp.Compile(v); err != nil {
			return fmt.Errorf("RBEE_MUTATE_RUN=%q: not a go test -run pattern: %v", v, err)
		}
		o.RunPattern = v
	}
	return nil
}
