//go:build docker

package bench

import (
	"context"
	"os"
	"testing"

	"github.com/rbee-dev/rbee/xtask/setup"
)

// BenchmarkToxics runs the toxic proxy's rows of `mage bench` alone and
// prints their table; it asserts no times.
//
//	go test -tags docker -run '^$' -bench Toxics -benchtime 1x ./xtask/bench/
func BenchmarkToxics(b *testing.B) {
	root, err := setup.FindRoot(".")
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		r, err := Toxics(context.Background(), root, 5, 20, b.Logf)
		if err != nil {
			b.Fatal(err)
		}
		head, t := ToxicTable(r)
		_ = t.Text(os.Stdout)
		for _, h := range head {
			b.Log(h)
		}
	}
}
