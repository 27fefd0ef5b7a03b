// Command rbee-keeper is the rbee CLI (PROTOCOL.md §7). See internal/keeper.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rbee-dev/rbee/internal/keeper"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cancel() // first Ctrl-C: cancel the job and wait briefly for [CANCELLED]
		<-sig
		os.Exit(keeper.ExitCancelled) // second Ctrl-C: leave now
	}()
	// On a terminal, control characters from the stream (escape sequences
	// a hostile worker could send) are stripped; pipes get the bytes as is.
	os.Exit(keeper.Main(ctx, os.Args[1:], keeper.ForTerminal(os.Stdout), keeper.ForTerminal(os.Stderr)))
}
