//go:build docker

package integration

import (
	"context"
	"testing"
	"time"
)

// BenchmarkLocalhost measures what a suite pays per test: New(Localhost)
// until every service is healthy, a block until it is in effect (first one,
// which creates the fault helper, and a second one reusing it), and Close.
// It prints numbers; it asserts no times.
//
//	go test -tags docker -run '^$' -bench Localhost -benchtime 5x ./xtask/integration/
func BenchmarkLocalhost(b *testing.B) {
	ctx := context.Background()
	var up, block1, block2, closing time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		h, err := New(ctx, Localhost, WithName(b.Name()))
		if err != nil {
			_ = h.Close(ctx)
			b.Fatal(err)
		}
		up += time.Since(t0)

		t0 = time.Now()
		if err := h.Inject(ctx, Block("hive-localhost", "queen")); err != nil {
			b.Fatal(err)
		}
		block1 += time.Since(t0)
		t0 = time.Now()
		if err := h.Inject(ctx, Block("queen", "hive-localhost")); err != nil {
			b.Fatal(err)
		}
		block2 += time.Since(t0)

		t0 = time.Now()
		if err := h.Close(ctx); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(up.Seconds()/n, "up-s/op")
	b.ReportMetric(block1.Seconds()/n, "first-block-s/op")
	b.ReportMetric(block2.Seconds()/n, "block-s/op")
	b.ReportMetric(closing.Seconds()/n, "close-s/op")
	b.Logf("n=%d  New(Localhost)→healthy %.2fs  first block (creates helper) %.3fs  next block %.3fs  Close %.2fs",
		b.N, up.Seconds()/n, block1.Seconds()/n, block2.Seconds()/n, closing.Seconds()/n)
}

// BenchmarkMultiHive8 measures bring-up and Close of the widest topology.
func BenchmarkMultiHive8(b *testing.B) {
	ctx := context.Background()
	var up, closing time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		h, err := New(ctx, MultiHiveN(8), WithName(b.Name()))
		if err != nil {
			_ = h.Close(ctx)
			b.Fatal(err)
		}
		up += time.Since(t0)
		t0 = time.Now()
		if err := h.Close(ctx); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(up.Seconds()/n, "up-s/op")
	b.ReportMetric(closing.Seconds()/n, "close-s/op")
	b.Logf("n=%d  New(MultiHiveN(8))→healthy %.2fs  Close %.2fs", b.N, up.Seconds()/n, closing.Seconds()/n)
}
