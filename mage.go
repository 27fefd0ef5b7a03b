//go:build ignore

// Zero-install entry point for the Mage targets in magefile.go:
//
//	go run mage.go setup
//	go run mage.go -l          # list targets
//	go run mage.go -v setup    # verbose: stream build output
//	go run mage.go soak 3 --stress
package main

import (
	"os"

	"github.com/magefile/mage/mage"
)

func main() {
	// Mage targets take no flags: --stress (for soak) becomes
	// RBEE_SOAK_STRESS=1, which the soak target reads.
	args := make([]string, 0, len(os.Args))
	for _, a := range os.Args[1:] {
		if a == "--stress" {
			os.Setenv("RBEE_SOAK_STRESS", "1")
			continue
		}
		args = append(args, a)
	}
	os.Exit(mage.ParseAndRun(os.Stdout, os.Stderr, os.Stdin, args))
}
