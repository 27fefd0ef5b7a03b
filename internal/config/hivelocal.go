package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// HiveLocal is the hive's machine-local defaults file, $HOME/.config/rbee/hive.toml
// (a documented departure from PROTOCOL.md: the queen starts hives with a fixed
// command line, so per-machine settings live here; flags override them).
// Every key is optional; a zero value means "not set".
type HiveLocal struct {
	HiveID            string   // hive_id
	Port              int      // port, 1..65535
	QueenURL          string   // queen_url, http(s) URL
	AdvertiseURL      string   // advertise_url, http(s) URL
	DataDir           string   // data_dir
	WorkerPorts       string   // worker_ports, "9100-9199" (validated with ParsePortRange)
	GPUs              int      // gpus, 0..64 simulated devices
	HeartbeatInterval Duration // heartbeat_interval, positive
	HFEndpoint        string   // hf_endpoint, http(s) URL
	WorkerBinary      string   // worker_binary
	SecretFile        string   // secret_file: the cluster secret (mode 0600)
}

// DefaultHiveLocalPath is $HOME/.config/rbee/hive.toml.
func DefaultHiveLocalPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("hive.toml location: %w", err)
	}
	return filepath.Join(home, ".config", "rbee", "hive.toml"), nil
}

// ParseHiveLocal parses hive.toml content. An empty document is valid.
func ParseHiveLocal(data []byte, name string) (*HiveLocal, error) {
	doc, err := parseDocument(data, name)
	if err != nil {
		return nil, err
	}
	h := &HiveLocal{}
	t := doc.table("", doc.root)
	t.match("hive_id", aliasRE, "a valid hive id (letters, digits, '.', '_', '-')", &h.HiveID)
	t.port("port", &h.Port)
	t.httpURL("queen_url", &h.QueenURL)
	t.httpURL("advertise_url", &h.AdvertiseURL)
	t.str("data_dir", &h.DataDir)
	if t.str("worker_ports", &h.WorkerPorts) {
		if _, _, err := ParsePortRange(h.WorkerPorts); err != nil {
			doc.fail("worker_ports", "key \"worker_ports\": %v", err)
		}
	}
	t.integer("gpus", 0, 64, &h.GPUs)
	t.durationMin("heartbeat_interval", MinHeartbeatInterval, &h.HeartbeatInterval)
	t.httpURL("hf_endpoint", &h.HFEndpoint)
	t.str("worker_binary", &h.WorkerBinary)
	t.str("secret_file", &h.SecretFile)
	t.unknown("")
	if err := doc.err(); err != nil {
		return nil, err
	}
	return h, nil
}

// LoadHiveLocal reads and parses the hive.toml at path; a missing file is an
// error (see LoadHiveLocalIfExists).
func LoadHiveLocal(path string) (*HiveLocal, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read hive config: %w", err)
	}
	return ParseHiveLocal(data, path)
}

// LoadHiveLocalIfExists is LoadHiveLocal, except that a file that does not
// exist yields an empty HiveLocal and found == false instead of an error.
func LoadHiveLocalIfExists(path string) (h *HiveLocal, found bool, err error) {
	h, err = LoadHiveLocal(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &HiveLocal{}, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return h, true, nil
}
