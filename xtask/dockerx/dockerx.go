// Package dockerx is the Docker plumbing that setup, the harness, its reaper
// and the benchmarks share: connecting to the engine the way the docker CLI
// does, the labels that mark this project's resources, removing resources
// by label, and telling whether the process that created a resource is
// gone. Its unit tests need no engine (they run against a fake one on a
// unix socket): `go test ./xtask/dockerx/`.
package dockerx

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/flags"
	"github.com/moby/moby/client"
)

// Labels this project puts on its images, containers, networks and volumes.
// Cleanup and the reaper find resources by them, never by name.
const (
	LabelProject    = "dev.rbee.project"     // always ProjectValue
	ProjectValue    = "rbee-netest"          //
	LabelTest       = "dev.rbee.test"        // the test name (WithName / t.Name())
	LabelRun        = "dev.rbee.run"         // the compose project name: one per harness
	LabelOwnerPID   = "dev.rbee.owner-pid"   // pid of the process that created it
	LabelOwnerHost  = "dev.rbee.owner-host"  // hostname of that process (pids are per host)
	LabelOwnerStart = "dev.rbee.owner-start" // that process's start time, so a reused pid is not mistaken for the owner
	LabelStartedAt  = "dev.rbee.started-at"  // RFC 3339 creation time
	LabelKeep       = "dev.rbee.keep"        // "1": a stack kept on purpose (env:up, RBEE_KEEP_FAILED); never reaped
	LabelRole       = "dev.rbee.role"        // "fault-helper" or "keep-marker" for the harness's own containers/volumes
	LabelTarget     = "dev.rbee.target"      // fault helper: the service whose network namespace it shares
)

// Project is the label filter value that selects everything of this
// project: LabelProject=ProjectValue.
const Project = LabelProject + "=" + ProjectValue

// Filter returns a filter on all of the given "key=value" labels.
func Filter(labels ...string) client.Filters {
	f := make(client.Filters)
	for _, l := range labels {
		f.Add("label", l)
	}
	return f
}

// ConnectCLI builds the docker CLI's client setup, so DOCKER_HOST,
// DOCKER_CONTEXT and the current context (with its TLS settings) are
// honoured exactly as by `docker`, and checks that an engine answers. The
// Compose SDK is built on the returned CLI.
func ConnectCLI(ctx context.Context) (*command.DockerCli, error) {
	// The engine client is resolved here, where a bad DOCKER_HOST or an
	// unknown context comes back as an error: left to DockerCli.Client, the
	// same resolution failing prints a line and calls os.Exit(1).
	opts := flags.NewClientOptions()
	api, err := command.NewAPIClientFromFlags(opts, config.LoadDefaultConfigFile(io.Discard))
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	dcli, err := command.NewDockerCli()
	if err == nil {
		err = dcli.Initialize(opts, command.WithAPIClient(api))
	}
	if err != nil {
		api.Close()
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := dcli.Client().Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		host := dcli.DockerEndpoint().Host
		dcli.Client().Close()
		return nil, fmt.Errorf("no Docker engine at %s: start dockerd or set DOCKER_HOST: %w", host, err)
	}
	return dcli, nil
}

// Connect is ConnectCLI's engine client.
func Connect(ctx context.Context) (client.APIClient, error) {
	dcli, err := ConnectCLI(ctx)
	if err != nil {
		return nil, err
	}
	return dcli.Client(), nil
}

// UsedSubnets lists the subnets of every network on the engine, so a new
// network can be given one that overlaps none.
func UsedSubnets(ctx context.Context, d client.APIClient) ([]netip.Prefix, error) {
	res, err := d.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var used []netip.Prefix
	for _, n := range res.Items {
		for _, c := range n.IPAM.Config {
			if c.Subnet.IsValid() {
				used = append(used, c.Subnet)
			}
		}
	}
	return used, nil
}
