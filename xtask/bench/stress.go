package bench

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// StressEnv set to 1 makes `mage soak N` a stressed soak; mage.go sets it
// for `soak N --stress` (Mage targets take no flags).
const StressEnv = "RBEE_SOAK_STRESS"

// Burner keeps CPUs busy while a soak runs, so that every test meets a
// machine with no idle core, as on a loaded CI runner. It is plain Go
// rather than stress-ng: nothing to install, it runs wherever the tests
// run, and it stops with the soak (no process to leave behind).
type Burner struct {
	stop  context.CancelFunc
	wg    sync.WaitGroup
	spins atomic.Uint64 // work done, in blocks of floating-point operations
	start time.Time
	n     int
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
func (b *Burner) Stop() (blocks uint64, wall time.Duration) {
	b.stop()
	b.wg.Wait()
	return b.spins.Load(), time.Since(b.start)
}
