//go:build docker

package sshcomm

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// sshPort is the hive machine's sshd.
const sshPort = 22

// The queen's hive_install over a slow link (connection-level bandwidth
// cap on the queen's data to the hive's sshd) still succeeds: the installed
// binary has the queen's sha256, the result its size, and the install took
// at least size/rate (the cap was in force). The control: the same install
// without the cap (forced, onto the same hive) took less than that floor.
// [ssh] command_timeout, which bounds the upload as a whole, is raised
// above the capped transfer's time.
func TestInstallOverSlowLink(t *testing.T) {
	t.Parallel()
	const rate = 250 // KB/s: the 7-8 MB hive binary takes ~30 s
	h := integration.Start(t, integration.Localhost, bareHive,
		integration.WithFile("queen", queenToml, suite.QueenConfig(t, "localhost", map[string]string{
			"command_timeout": strconv.Quote("3m"),
		})))
	q := h.MustQueen(t)
	wantSum := strings.Fields(suite.Sh(t, h, "queen", "sha256sum "+queenHive))[0]
	size, err := strconv.ParseInt(strings.TrimSpace(suite.Sh(t, h, "queen", "stat -c %s "+queenHive)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	capped := time.Duration(size) * time.Millisecond / rate // size / (rate × 1000 B/s)
	floor := capped * 3 / 4

	install := func(force bool) (api.HiveInstallResult, time.Duration) {
		t.Helper()
		o, took := runSlowOp(t, q, api.JobRequest{Operation: api.OpHiveInstall, Alias: hive, Force: force}, capped)
		suite.MustDone(t, o)
		res, err := checks.Result[api.HiveInstallResult](o)
		if err != nil {
			t.Fatal(err)
		}
		if res.Size != size {
			t.Errorf("result size %d; want the queen's binary, %d bytes", res.Size, size)
		}
		if got := installed(t, h); got.sum != wantSum || got.mode != "755" {
			t.Fatalf("installed file: sha256 %s mode %s; want %s 755", got.sum, got.mode, wantSum)
		}
		return res, took
	}

	_, fast := install(false)
	t.Logf("install without a cap: %v (the capped floor %v)", fast.Round(time.Millisecond), floor)
	if fast >= floor {
		t.Fatalf("the install without a cap took %v, not under the floor %v the cap is checked against", fast, floor)
	}

	h.MustInject(t, integration.Bandwidth("queen", hive, rate).Upstream().Port(sshPort))
	_, slow := install(true)
	t.Logf("install at %d KB/s: %v for %d bytes (size/rate %v)", rate, slow.Round(time.Millisecond), size, capped.Round(time.Millisecond))
	if slow < floor {
		t.Fatalf("the install at %d KB/s took %v, want ≥ %v (¾ of size/rate %v): the cap was not in force", rate, slow, floor, capped)
	}
}

// runSlowOp is runOp for an operation expected to take about expect: its
// bound is opTimeout plus four times that.
func runSlowOp(t testing.TB, q *client.Client, req api.JobRequest, expect time.Duration) (client.Outcome, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout+4*expect)
	defer cancel()
	t0 := time.Now()
	o, err := q.Run(ctx, req, nil)
	d := time.Since(t0)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Operation, req.Alias, err)
	}
	t.Logf("%s %s (force=%v): %s in %v", req.Operation, req.Alias, req.Force, o.Terminator(), d.Round(time.Millisecond))
	return o, d
}
