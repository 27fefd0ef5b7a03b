//go:build ignore

// Zero-install entry point for the Mage targets in magefile.go:
//
//	go run mage.go setup
//	go run mage.go -l          # list targets
//	go run mage.go -v setup    # verbose: stream build output
//	go run mage.go mutate a b  # the mutate target takes any number of names
//	go run mage.go soak 3 --stress
package main

import (
	"os"
	"strings"

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
	args = flagArgs(mutateArgs(append([]string{os.Args[0]}, args...)))[1:]
	os.Exit(mage.ParseAndRun(os.Stdout, os.Stderr, os.Stdin, args))
}

// mutateArgs gives the mutate target its names as one argument (Mage
// targets take a fixed number): `mutate a b` becomes `mutate a,b`, and
// `mutate` alone `mutate all`.
func mutateArgs(args []string) []string {
	for i, a := range args {
		if i == 0 || strings.HasPrefix(a, "-") {
			continue
		}
		if a != "mutate" {
			return args
		}
		if i == len(args)-1 {
			return append(args, "all")
		}
		return append(args[:i+1:i+1], strings.Join(args[i+1:], ","))
	}
	return args
}

// flagArgs turns `--name value` after a target into Mage's `-name=value`
// (a target's optional arguments): `nemesis --seeds 5 --duration 60s`
// becomes `nemesis -seeds=5 -duration=60s`.
func flagArgs(args []string) []string {
	out := args[:1:1]
	target := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			target = true
		}
		if target && strings.HasPrefix(a, "--") && !strings.Contains(a, "=") && i+1 < len(args) {
			out = append(out, a[1:]+"="+args[i+1])
			i++
			continue
		}
		out = append(out, a)
	}
	return out
}
