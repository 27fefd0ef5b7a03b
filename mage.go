//go:build ignore

// Zero-install entry point for the Mage targets in magefile.go:
//
//	go run mage.go setup
//	go run mage.go -l          # list targets
//	go run mage.go -v setup    # verbose: stream build output
package main

import (
	"os"

	"github.com/magefile/mage/mage"
)

func main() { os.Exit(mage.Main()) }
