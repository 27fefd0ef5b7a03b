package integration

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"time"
)

// An Option changes how New brings a topology up.
type Option func(*config) error

type config struct {
	env        map[string]string // compose interpolation environment, over os.Environ
	services   []string          // nil: all services
	name       string            // test name (label dev.rbee.test, project name prefix)
	repoDir    string            // repository root (tests/docker/, configs/, keys/)
	keysDir    string            // default <repo>/keys
	timeout    time.Duration     // bring-up budget until every service is healthy
	faultImage string            // image of the fault helper containers
	logf       func(format string, args ...any)
	keep       bool // Up: keep the stack after the process exits
	files      []fileOverride
	capture    string // packet capture mode (WithCapture); "": RBEE_CAPTURE
	execFaults bool   // WithExecFaults: no admin endpoint in the fault helpers
}

// fileOverride is a file WithFile mounts into a service.
type fileOverride struct {
	service, target string
	content         []byte
	writable        bool // WithWritableFile: mode 0600, mounted read-write
}

func defaultConfig() config {
	return config{
		env:        map[string]string{},
		name:       "manual",
		timeout:    90 * time.Second,
		faultImage: DefaultFaultImage,
		logf:       func(string, ...any) {},
	}
}

// WithEnv sets variables for compose interpolation (${RBEE_HEARTBEAT_INTERVAL},
// RBEE_GPUS, RBEE_HIVE_PREINSTALLED, RBEE_HIVE_AUTOSTART …); they win over the
// process environment. Later calls add to earlier ones.
func WithEnv(env map[string]string) Option {
	return func(c *config) error {
		for k := range env {
			if k == "" {
				return fmt.Errorf("WithEnv: empty variable name")
			}
		}
		maps.Copy(c.env, env)
		return nil
	}
}

// WithServices starts only these services (and, as compose does, the services
// they depend on). Unknown names are an error from New.
func WithServices(services ...string) Option {
	return func(c *config) error {
		if len(services) == 0 {
			return fmt.Errorf("WithServices: no services given")
		}
		c.services = append([]string(nil), services...)
		return nil
	}
}

// WithName sets the test name: it labels every resource (dev.rbee.test), prefixes
// the compose project name and names the artifacts directory. Start sets it
// from t.Name().
func WithName(name string) Option {
	return func(c *config) error {
		if sanitize(name) == "" {
			return fmt.Errorf("WithName: %q has no usable characters", name)
		}
		c.name = name
		return nil
	}
}

// WithRepoDir sets the repository root (where tests/docker/, configs/ and
// keys/ live). By default New walks up from the working directory to the
// directory holding tests/docker/.
func WithRepoDir(dir string) Option {
	return func(c *config) error { c.repoDir = dir; return nil }
}

// WithTimeout bounds bring-up: creating, starting and waiting until every
// service is healthy (default 90 s). It must be positive.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithTimeout: %v is not a positive duration", d)
		}
		c.timeout = d
		return nil
	}
}

// WithFaultImage sets the image of the helper containers that inject network
// faults; it needs iptables and tc (default DefaultFaultImage).
func WithFaultImage(image string) Option {
	return func(c *config) error {
		if image == "" {
			return fmt.Errorf("WithFaultImage: empty image")
		}
		c.faultImage = image
		return nil
	}
}

// WithExecFaults makes the fault helpers take every script by docker exec
// and start the toxic proxy only at the first toxic, as they do with a
// remote engine whose bridges this host is not on, even where the admin
// endpoint would serve: the path a remote engine takes, on a local one.
func WithExecFaults() Option {
	return func(c *config) error {
		c.execFaults = true
		return nil
	}
}

// WithLog sends the harness's progress lines and fault transcript to logf as
// they happen (Start passes t.Logf).
func WithLog(logf func(format string, args ...any)) Option {
	return func(c *config) error {
		if logf != nil {
			c.logf = logf
		}
		return nil
	}
}

// WithFile mounts content read-only at path inside service, replacing the
// compose file's bind mount at that path if there is one. Suites use it for
// configuration variants: a queen.toml with other timeouts, a queen that
// holds the wrong SSH key. Unknown services are an error from New.
func WithFile(service, path string, content []byte) Option {
	return withFile("WithFile", service, path, content, false)
}

// WithWritableFile mounts content read-write, mode 0600, at path inside
// service: the file exists when the service starts (programs that check
// their key files at start-up see it), and a test can replace its content
// in place later (suite.PutFile) for a program that re-reads it, such as
// the queen's known_hosts and SSH identity.
func WithWritableFile(service, path string, content []byte) Option {
	return withFile("WithWritableFile", service, path, content, true)
}

func withFile(name, service, path string, content []byte, writable bool) Option {
	return func(c *config) error {
		if service == "" {
			return fmt.Errorf("%s: empty service name", name)
		}
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("%s: container path %q must be absolute", name, path)
		}
		c.files = append(c.files, fileOverride{service: service, target: path, content: bytes.Clone(content), writable: writable})
		return nil
	}
}
