//go:build ignore

// Zero-install entry point for the Mage targets in magefile.go:
//
//	go run mage.go setup
//	go run mage.go -l          # list targets
//	go run mage.go -v setup    # verbose: stream build output
//	go run mage.go mutate a b  # the mutate target takes any number of names
package main

import (
	"os"
	"strings"

	"github.com/magefile/mage/mage"
)

func main() {
	os.Args = mutateArgs(os.Args)
	os.Exit(mage.Main())
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
