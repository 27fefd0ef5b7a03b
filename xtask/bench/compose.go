package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ComposeVersion is the Compose module version the CLI is built from: the
// one go.mod requires, which the harness links in-process.
const ComposeVersion = "v5.6.0"

// BuildComposeCLI builds the Compose CLI of the module's own
// github.com/docker/compose/v5 requirement into root/build/bin/docker-compose,
// so the comparison runs the same Compose code the harness links.
func BuildComposeCLI(ctx context.Context, root string) (string, error) {
	out := filepath.Join(root, "build", "bin", "docker-compose")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out,
		"-ldflags", "-X github.com/docker/compose/v5/internal.Version="+ComposeVersion,
		"github.com/docker/compose/v5/cmd")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the Compose CLI: %v\n%s", err, b)
	}
	return out, nil
}

var (
	publishVar = regexp.MustCompile(`\$\{(RBEE_PUBLISH_[A-Z0-9_]+):-[0-9]+\}`)
	addrVar    = regexp.MustCompile(`\$\{(RBEE_[A-Z0-9_]+_IP):-([0-9.]+)\}`)
)

// ComposeEnv is the environment that isolates a plain `docker compose` run
// of a topology file the way the harness isolates its own (see the files'
// headers): every RBEE_PUBLISH_* port 0 (ephemeral, on 127.0.0.1 as the file
// says), RBEE_SUBNET the given /24, and every fixed RBEE_*_IP moved into it
// keeping its last octet.
func ComposeEnv(file string, subnet netip.Prefix) (map[string]string, error) {
	if !subnet.Addr().Is4() || subnet.Bits() != 24 {
		return nil, fmt.Errorf("subnet %v: want an IPv4 /24", subnet)
	}
	env := map[string]string{"RBEE_SUBNET": subnet.Masked().String()}
	for _, m := range publishVar.FindAllStringSubmatch(file, -1) {
		env[m[1]] = "0"
	}
	base := subnet.Masked().Addr().As4()
	for _, m := range addrVar.FindAllStringSubmatch(file, -1) {
		a, err := netip.ParseAddr(m[2])
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%s: default %q is not an IPv4 address", m[1], m[2])
		}
		last := a.As4()[3]
		if last == 0 || last == 1 || last == 255 {
			return nil, fmt.Errorf("%s: default %s ends in .%d, which a /24 cannot give a container", m[1], a, last)
		}
		b := base
		b[3] = last
		env[m[1]] = netip.AddrFrom4(b).String()
	}
	if len(env) == 1 {
		return nil, fmt.Errorf("no RBEE_PUBLISH_* or RBEE_*_IP variables: not an rbee topology file")
	}
	return env, nil
}

// PickSubnet returns a random 10.200.0.0/13 /24 that overlaps none of used.
// The harness takes 172.28.0.0/14, so the two never collide; Docker's
// default pools are in 172.17–31 and 192.168.
func PickSubnet(used []netip.Prefix, r *rand.Rand) (netip.Prefix, error) {
	for try := 0; try < 200; try++ {
		n := r.IntN(8 * 256)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + n/256), byte(n % 256), 0}), 24)
		clash := false
		for _, u := range used {
			if u.Overlaps(p) {
				clash = true
				break
			}
		}
		if !clash {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 in 10.200.0.0/13 after 200 tries")
}

// usedSubnets lists the subnets of the engine's networks (docker network inspect).
func usedSubnets(ctx context.Context) ([]netip.Prefix, error) {
	ids, err := exec.CommandContext(ctx, "docker", "network", "ls", "-q").Output()
	if err != nil {
		return nil, fmt.Errorf("docker network ls: %w", err)
	}
	f := strings.Fields(string(ids))
	if len(f) == 0 {
		return nil, nil
	}
	args := append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, f...)
	out, err := exec.CommandContext(ctx, "docker", args...).Output()
	if err != nil {
		// A network removed between ls and inspect (other runs come and go
		// on a shared engine): list again, a few times.
		for try := 0; err != nil && try < 5; try++ {
			if ids, err = exec.CommandContext(ctx, "docker", "network", "ls", "-q").Output(); err != nil {
				continue
			}
			args = append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, strings.Fields(string(ids))...)
			out, err = exec.CommandContext(ctx, "docker", args...).Output()
		}
		if err != nil {
			return nil, fmt.Errorf("docker network inspect: %w", err)
		}
	}
	return parseSubnets(string(out)), nil
}

func parseSubnets(s string) []netip.Prefix {
	var out []netip.Prefix
	for _, w := range strings.Fields(s) {
		if p, err := netip.ParsePrefix(w); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// composeRun is one `docker compose` stack of the bench.
type composeRun struct {
	bin, file, project string
	env                map[string]string
	log                func(format string, args ...any)
}

func (c composeRun) cmd(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"-p", c.project, "-f", c.file}, args...)
	cmd := exec.CommandContext(ctx, c.bin, all...)
	cmd.Dir = filepath.Dir(c.file)
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(c.env))
	for k := range c.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+c.env[k])
	}
	return cmd
}

// up runs `up --wait --quiet-pull` (no pull happens: images are local) and
// times it from process start to exit, as a user would.
func (c composeRun) up(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := c.cmd(ctx, "up", "--wait", "--wait-timeout", "120")
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("compose up -p %s: %v\n%s", c.project, err, tail(string(out), 20))
	}
	return d, nil
}

// down runs `down -v` and times it.
func (c composeRun) down(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	out, err := c.cmd(ctx, "down", "-v", "--remove-orphans").CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("compose down -p %s: %v\n%s", c.project, err, tail(string(out), 20))
	}
	return d, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
