// Command rbee-hive runs one hive: model catalog, worker processes and the
// hive job API (PROTOCOL.md §4). See internal/hive.
package main

import (
	"os"

	"github.com/rbee-dev/rbee/internal/hive"
)

func main() { os.Exit(hive.Main(os.Args[1:], os.Stdout, os.Stderr)) }
