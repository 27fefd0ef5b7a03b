package integration

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// An interrupted run (Ctrl-C, a CI job cancelled with SIGTERM) would leave
// every stack it had up behind until a later run's reaper found the owner
// process gone. Instead, the first stack a process creates installs a
// handler: on SIGINT or SIGTERM it removes every stack the process still
// holds (what Close would have removed), then lets the signal end the
// process the way it would have without the handler. Kept stacks (Keep)
// are not touched.

// interruptGrace bounds the removal after a signal: a second signal, or
// this much time, ends the process at once (the reaper of a later run
// removes what is left).
const interruptGrace = 60 * time.Second

var live = struct {
	sync.Mutex
	runs      map[string]client.APIClient // run name → its engine client
	installed bool
}{runs: map[string]client.APIClient{}}

// track records that run has resources on d; the first call installs the
// signal handler.
func track(run string, d client.APIClient) {
	live.Lock()
	defer live.Unlock()
	live.runs[run] = d
	if live.installed {
		return
	}
	live.installed = true
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		// The processes reading our output may be gone already (the
		// terminal sent the signal to all of them): a write to a closed
		// pipe must fail, not end the process before the stacks are gone.
		signal.Ignore(syscall.SIGPIPE)
		done := make(chan struct{})
		go func() {
			defer close(done)
			removeTracked(sig)
		}()
		select {
		case <-done:
		case <-sigs:
		case <-time.After(interruptGrace):
		}
		signal.Reset(sig)
		p, _ := os.FindProcess(os.Getpid())
		_ = p.Signal(sig)
		time.Sleep(5 * time.Second) // the signal ends the process
		os.Exit(2)
	}()
}

// untrack drops run from what an interrupt removes (it was closed or kept).
func untrack(run string) {
	live.Lock()
	defer live.Unlock()
	delete(live.runs, run)
}

func removeTracked(sig os.Signal) {
	live.Lock()
	runs := make(map[string]client.APIClient, len(live.runs))
	for n, d := range live.runs {
		runs[n] = d
	}
	live.Unlock()
	fmt.Fprintf(os.Stderr, "rbee harness: %v: removing %d stacks of this process\n", sig, len(runs))
	ctx, cancel := context.WithTimeout(context.Background(), interruptGrace)
	defer cancel()
	var wg sync.WaitGroup
	for n, d := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := removeRun(ctx, d, nil, n); err != nil {
				fmt.Fprintf(os.Stderr, "rbee harness: %v\n", err)
			}
		}()
	}
	wg.Wait()
}
