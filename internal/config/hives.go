package config

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Hive is one [[hive]] table of hives.conf.
type Hive struct {
	Alias      string // required; letters, digits, '.', '_', '-'
	Hostname   string // required; DNS name or IP address
	SSHPort    int    // ssh_port, default 22
	SSHUser    string // required
	HivePort   int    // hive_port, default 9000
	AutoStart  bool   // auto_start, default false
	BinaryPath string // binary_path, default "~/.local/bin/rbee-hive"; absolute or "~/"-relative
}

// Defaults for [[hive]].
const (
	DefaultSSHPort        = 22
	DefaultHivePort       = 9000
	DefaultHiveBinaryPath = "~/.local/bin/rbee-hive"
)

// URL is the hive's HTTP base URL, "http://hostname:hive_port".
func (h Hive) URL() string {
	return "http://" + net.JoinHostPort(h.Hostname, strconv.Itoa(h.HivePort))
}

// SSHAddr is "hostname:ssh_port".
func (h Hive) SSHAddr() string {
	return net.JoinHostPort(h.Hostname, strconv.Itoa(h.SSHPort))
}

// These values end up in remote shell commands and in URLs, so they are
// restricted to characters that need no quoting anywhere.
var (
	aliasRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostnameRE = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$`)
	userRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)
	binPathRE  = regexp.MustCompile(`^(/|~/)[A-Za-z0-9._/+-]*[A-Za-z0-9._+-]$`)
)

// ParseHives parses hives.conf content: one or more [[hive]] tables.
func ParseHives(data []byte, name string) ([]Hive, error) {
	doc, err := parseDocument(data, name)
	if err != nil {
		return nil, err
	}
	if len(doc.root) == 0 {
		return nil, &Error{File: name, Msg: "no [[hive]] tables (file is empty)"}
	}
	root := doc.table("", doc.root)
	v, _, ok := root.get("hive")
	var hives []Hive
	switch elems := v.(type) {
	case nil:
		if _, plural := doc.root["hives"]; !ok && !plural {
			doc.errs = append(doc.errs, &Error{File: name, Msg: "no [[hive]] tables"})
		}
	case []any:
		firstAlias := map[string]int{}
		firstAccount := map[string]int{}
		firstAddr := map[string]int{}
		for i, e := range elems {
			path := fmt.Sprintf("hive[%d]", i)
			m, isTable := e.(map[string]any)
			if !isTable {
				doc.fail(path, "%s: want a table, got %s", path, kindOf(e))
				continue
			}
			h, ok := parseHive(doc.table(path, m))
			if !ok {
				continue
			}
			if l, dup := firstAlias[h.Alias]; dup {
				doc.fail(path+".alias", "duplicate hive alias %q (first defined on line %d)", h.Alias, l)
				continue
			}
			// One rbee-hive per machine account: the queen keeps the
			// daemon's pid file under that account's home, so two hives
			// there would overwrite each other's and hive_stop could
			// signal the wrong one. And two daemons cannot share a port.
			acct := fmt.Sprintf("%s@%s:%d", h.SSHUser, strings.ToLower(h.Hostname), h.SSHPort)
			if l, dup := firstAccount[acct]; dup {
				doc.fail(path+".hostname", "hive %q uses the same machine account %s as the hive on line %d; run one hive per machine account", h.Alias, acct, l)
				continue
			}
			addr := fmt.Sprintf("%s:%d", strings.ToLower(h.Hostname), h.HivePort)
			if l, dup := firstAddr[addr]; dup {
				doc.fail(path+".hive_port", "hive %q listens on %s like the hive on line %d", h.Alias, addr, l)
				continue
			}
			firstAlias[h.Alias] = doc.line(path + ".alias")
			firstAccount[acct] = doc.line(path + ".alias")
			firstAddr[addr] = doc.line(path + ".alias")
			hives = append(hives, h)
		}
	case map[string]any:
		doc.fail("hive", "\"hive\" is a single table; write each hive as [[hive]] (an array of tables)")
	default:
		doc.fail("hive", "key \"hive\": want [[hive]] tables, got %s", kindOf(v))
	}
	if _, plural := doc.root["hives"]; plural {
		root.seen["hives"] = true
		doc.fail("hives", "unknown table \"hives\": use [[hive]], not [[hives]]")
	}
	root.unknown("")
	if err := doc.err(); err != nil {
		return nil, err
	}
	if len(hives) == 0 {
		return nil, &Error{File: name, Line: doc.line("hive"), Key: "hive", Msg: "no [[hive]] tables"}
	}
	return hives, nil
}

func parseHive(t *table) (Hive, bool) {
	before := len(t.doc.errs)
	h := Hive{SSHPort: DefaultSSHPort, HivePort: DefaultHivePort, BinaryPath: DefaultHiveBinaryPath}
	t.match("alias", aliasRE, "a valid alias (letters, digits, '.', '_', '-'; at most 63)", &h.Alias)
	t.match("hostname", hostnameRE, "a valid host name or IP address", &h.Hostname)
	t.port("ssh_port", &h.SSHPort)
	t.match("ssh_user", userRE, "a valid user name", &h.SSHUser)
	t.port("hive_port", &h.HivePort)
	t.boolean("auto_start", &h.AutoStart)
	t.match("binary_path", binPathRE, "an absolute or \"~/\" path of plain characters", &h.BinaryPath)
	t.require("alias", "hostname", "ssh_user")
	t.unknown("")
	return h, len(t.doc.errs) == before
}

// LoadHives reads and parses the hives.conf at path.
func LoadHives(path string) ([]Hive, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read hives config: %w", err)
	}
	return ParseHives(data, path)
}
