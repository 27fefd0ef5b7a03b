package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// StressEnv set to 1 makes `mage soak N` a stressed soak; mage.go sets it
// for `soak N --stress` (Mage targets take no flags).
const StressEnv = "RBEE_SOAK_STRESS"

// Burner keeps CPUs busy while a soak runs, so that every test meets a
// machine with no idle core, as on a loaded CI runner: Debian's stress-ng
// where it is installed (StartStress), else spinning threads of this
// process (Burn), which need nothing installed.
type Burner struct {
	stop  context.CancelFunc
	wg    sync.WaitGroup
	spins atomic.Uint64 // work done, in blocks of floating-point operations
	start time.Time
	n     int
	cmd   *exec.Cmd     // stress-ng, when it burns
	done  chan struct{} // closed when stress-ng has exited
}

// StressNGEnv set to 0 makes StartStress use the Go burner even where
// stress-ng is installed.
const StressNGEnv = "RBEE_STRESS_NG"

// StartStress keeps n CPUs busy (n ≤ 0: one per CPU) with stress-ng --cpu n
// when stress-ng is on PATH (and RBEE_STRESS_NG is not 0), else with Burn.
// stress-ng runs in its own process group, killed as a whole by Stop, and
// dies with this process if it is killed first (parent-death signal).
func StartStress(n int) (*Burner, error) {
	if n <= 0 {
		n = runtime.NumCPU()
	}
	path, err := exec.LookPath("stress-ng")
	if err != nil || os.Getenv(StressNGEnv) == "0" {
		return Burn(n), nil
	}
	cmd := exec.Command(path, "--cpu", strconv.Itoa(n), "--quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	b := &Burner{stop: func() {}, start: time.Now(), n: n, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(b.done) }()
	return b, nil
}

// stressKind names what StartStress(n) would run, for reports.
func stressKind(n int) string {
	if _, err := exec.LookPath("stress-ng"); err == nil && os.Getenv(StressNGEnv) != "0" {
		return fmt.Sprintf("stress-ng --cpu %d", n)
	}
	return fmt.Sprintf("%d spinning Go threads", n)
}

// Kind says what burns: "stress-ng" or "Go burner".
func (b *Burner) Kind() string {
	if b.cmd != nil {
		return "stress-ng"
	}
	return "Go burner"
}

// String describes the burner: what runs, how many workers.
func (b *Burner) String() string {
	if b.cmd != nil {
		return fmt.Sprintf("stress-ng --cpu %d (pid %d)", b.n, b.cmd.Process.Pid)
	}
	return fmt.Sprintf("%d spinning Go threads", b.n)
}

// Burn starts n spinning goroutines, each locked to an OS thread (n ≤ 0:
// one per CPU). The Go runtime gets extra room (GOMAXPROCS raised by n) so
// the burner competes with the tests through the kernel's scheduler and does
// not starve this process's own goroutines.
func Burn(n int) *Burner {
	if n <= 0 {
		n = runtime.NumCPU()
	}
	if p := runtime.GOMAXPROCS(0); p < runtime.NumCPU()+n {
		runtime.GOMAXPROCS(runtime.NumCPU() + n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Burner{stop: cancel, start: time.Now(), n: n}
	for i := 0; i < n; i++ {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			runtime.LockOSThread()
			x := 1.0 + float64(i)
			for ctx.Err() == nil {
				for j := 0; j < 1<<16; j++ {
					x = math.Sqrt(x*x + 1.0000001)
				}
				if x < 0 { // never: keeps the loop from being optimised away
					return
				}
				b.spins.Add(1)
			}
		}()
	}
	return b
}

// Threads is how many spinning threads run.
func (b *Burner) Threads() int { return b.n }

// Stop ends the burner; it returns the blocks of work the threads did and
// how long they ran.
// For stress-ng, blocks is 0; Stop kills its process group and waits for
// stress-ng to exit.
func (b *Burner) Stop() (blocks uint64, wall time.Duration) {
	if b.cmd != nil {
		wall = time.Since(b.start)
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
		return 0, wall
	}
	b.stop()
	b.wg.Wait()
	return b.spins.Load(), time.Since(b.start)
}

// Running reports whether the burner still burns (stress-ng not exited).
func (b *Burner) Running() bool {
	if b.cmd == nil {
		return true
	}
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}
