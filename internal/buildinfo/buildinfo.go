// Package buildinfo carries the version stamped into every rbee binary.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/rbee-dev/rbee/internal/api"
)

// Version and Commit are set with -ldflags "-X github.com/rbee-dev/rbee/internal/buildinfo.Version=…".
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

// Get returns the build info document.
func Get() api.BuildInfo {
	c := Commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return api.BuildInfo{Version: Version, Commit: c, GoVersion: runtime.Version()}
}

// Line is the one line every program prints for --version.
func Line(program string) string {
	b := Get()
	return fmt.Sprintf("%s %s (commit %s, %s)", program, b.Version, b.Commit, b.GoVersion)
}
