package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const goodQueen = `listen      = "0.0.0.0:8500"
public_url  = "http://queen:8500"      # what hives and workers are told
hives_conf  = "/etc/rbee/hives.conf"
hive_binary = "/usr/local/share/rbee/rbee-hive"

[heartbeat]
stale_after = "30s"

[ssh]
identity_file   = "/etc/rbee/keys/test_id_rsa"
known_hosts     = "/etc/rbee/keys/known_hosts"
connect_timeout = "10s"
command_timeout = "60s"
max_sessions_per_host = 4

[http]
timeout = "5s"
retries = 3
`

const goodHives = `[[hive]]
alias       = "hive-1"
hostname    = "hive-1"
ssh_port    = 22
ssh_user    = "rbee"
hive_port   = 9000
auto_start  = true
binary_path = "~/.local/bin/rbee-hive"

[[hive]]
alias    = "hive-2"
hostname = "172.20.0.12"
ssh_user = "rbee"
`

func TestParseQueenGood(t *testing.T) {
	q, err := ParseQueen([]byte(goodQueen), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultQueen()
	want.PublicURL = "http://queen:8500"
	want.HivesConf = "/etc/rbee/hives.conf"
	want.SSH.IdentityFile = "/etc/rbee/keys/test_id_rsa"
	want.SSH.KnownHosts = "/etc/rbee/keys/known_hosts"
	if *q != *want {
		t.Fatalf("got %+v\nwant %+v", *q, *want)
	}
}

func TestParseQueenMinimalGetsDefaults(t *testing.T) {
	q, err := ParseQueen([]byte("public_url = \"http://q:1\"\nhives_conf = \"h.conf\"\n"), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", q.Listen, "0.0.0.0:8500"},
		{"hive_binary", q.HiveBinary, DefaultHiveBinary},
		{"stale_after", q.Heartbeat.StaleAfter.D(), 30 * time.Second},
		{"connect_timeout", q.SSH.ConnectTimeout.D(), 10 * time.Second},
		{"command_timeout", q.SSH.CommandTimeout.D(), 60 * time.Second},
		{"max_sessions_per_host", q.SSH.MaxSessionsPerHost, 4},
		{"http.timeout", q.HTTP.Timeout.D(), 5 * time.Second},
		{"retries", q.HTTP.Retries, 3},
		{"start_timeout", q.Lifecycle.StartTimeout.D(), 30 * time.Second},
		{"stop_timeout", q.Lifecycle.StopTimeout.D(), 10 * time.Second},
		{"retention", q.Jobs.Retention.D(), 10 * time.Minute},
		{"max_jobs", q.Jobs.MaxJobs, 10000},
		{"hives_conf", q.HivesConf, "h.conf"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseQueenExtensions(t *testing.T) {
	doc := "public_url = \"https://q.example:8443/\"\nhives_conf = \"h\"\n[lifecycle]\nstart_timeout = \"1m\"\nstop_timeout = \"500ms\"\n[jobs]\nretention = \"1h\"\nmax_jobs = 5\n[heartbeat]\nstale_after = \"2s\"\n"
	q, err := ParseQueen([]byte(doc), "queen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if q.Lifecycle.StartTimeout.D() != time.Minute || q.Lifecycle.StopTimeout.D() != 500*time.Millisecond ||
		q.Jobs.Retention.D() != time.Hour || q.Jobs.MaxJobs != 5 || q.Heartbeat.StaleAfter.D() != 2*time.Second {
		t.Fatalf("got %+v", q)
	}
}

// badCase is a document that must fail; the error must start with prefix
// ("file:line: ") and contain every string in has.
type badCase struct {
	name   string
	doc    string
	prefix string
	has    []string
}

func checkBad(t *testing.T, cases []badCase, parse func([]byte, string) error, file string) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := parse([]byte(c.doc), file)
			if err == nil {
				t.Fatalf("no error for:\n%s", c.doc)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, c.prefix) {
				t.Errorf("error %q does not start with %q", msg, c.prefix)
			}
			for _, h := range c.has {
				if !strings.Contains(msg, h) {
					t.Errorf("error %q does not contain %q", msg, h)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *config.Error", err)
			}
		})
	}
}

const qHead = "public_url = \"http://q:8500\"\nhives_conf = \"/h\"\n"

func TestParseQueenBad(t *testing.T) {
	cases := []badCase{
		{"unknown key in table", qHead + "[ssh]\nconnect_timeout = \"5s\"\nconect_timeout = \"5s\"\n", "queen.toml:5: ",
			[]string{`unknown key "ssh.conect_timeout"`}},
		{"typo gets suggestion", qHead + "[ssh]\nconect_timeout = \"5s\"\n", "queen.toml:4: ",
			[]string{`unknown key "ssh.conect_timeout"`, `did you mean "ssh.connect_timeout"`}},
		{"unknown top-level key", qHead + "lissen = \"0.0.0.0:1\"\n", "queen.toml:3: ", []string{`unknown key "lissen"`, `"listen"`}},
		{"unknown table", qHead + "[sh]\nx = 1\n", "queen.toml:3: ", []string{`unknown table "sh"`}},
		{"unknown subtable", qHead + "[ssh.extra]\nx = 1\n", "queen.toml:3: ", []string{`unknown table "ssh.extra"`}},
		{"duplicate key", qHead + "[http]\nretries = 1\nretries = 2\n", "queen.toml:5: ", []string{`duplicate key "http.retries"`, "line 4"}},
		{"duplicate top key", "public_url = \"http://a:1\"\npublic_url = \"http://b:1\"\nhives_conf = \"/h\"\n", "queen.toml:2: ", []string{`duplicate key "public_url"`}},
		{"duplicate table", qHead + "[ssh]\n[http]\n[ssh]\n", "queen.toml:5: ", []string{"duplicate table [ssh]", "line 3"}},
		{"dotted duplicate", qHead + "ssh.connect_timeout = \"1s\"\n[ssh]\nconnect_timeout = \"2s\"\n", "queen.toml:5: ", []string{`duplicate key "ssh.connect_timeout"`, "line 3"}},
		{"dotted key is fine", qHead + "http.ssh = 1\n", "queen.toml:3: ", []string{`unknown key "http.ssh"`}},
		{"listen port zero", "listen = \"0.0.0.0:0\"\n" + qHead, "queen.toml:1: ", []string{`"listen"`, "out of range"}},
		{"listen port high", "listen = \"0.0.0.0:65536\"\n" + qHead, "queen.toml:1: ", []string{`"listen"`, "out of range"}},
		{"listen no port", "listen = \"0.0.0.0\"\n" + qHead, "queen.toml:1: ", []string{`"listen"`, "HOST:PORT"}},
		{"public_url port", "public_url = \"http://q:70000\"\nhives_conf = \"/h\"\n", "queen.toml:1: ", []string{`"public_url"`, "port"}},
		{"public_url scheme", "public_url = \"queen:8500\"\nhives_conf = \"/h\"\n", "queen.toml:1: ", []string{`"public_url"`, "http://"}},
		{"public_url empty", "public_url = \"\"\nhives_conf = \"/h\"\n", "queen.toml:1: ", []string{`"public_url"`, "empty"}},
		{"bad duration", qHead + "[ssh]\nconnect_timeout = \"10 parsecs\"\n", "queen.toml:4: ", []string{`"ssh.connect_timeout"`, "invalid duration"}},
		{"negative duration", qHead + "[heartbeat]\nstale_after = \"-5s\"\n", "queen.toml:4: ", []string{`"heartbeat.stale_after"`, "negative"}},
		{"zero duration", qHead + "[http]\ntimeout = \"0s\"\n", "queen.toml:4: ", []string{`"http.timeout"`, "greater than zero"}},
		{"integer duration", qHead + "[ssh]\ncommand_timeout = 60\n", "queen.toml:4: ", []string{`"ssh.command_timeout"`, "duration string", "an integer"}},
		{"string int", qHead + "[ssh]\nmax_sessions_per_host = \"4\"\n", "queen.toml:4: ", []string{`"ssh.max_sessions_per_host"`, "want an integer", "a string"}},
		{"float int", qHead + "[http]\nretries = 1.5\n", "queen.toml:4: ", []string{`"http.retries"`, "a float"}},
		{"sessions zero", qHead + "[ssh]\nmax_sessions_per_host = 0\n", "queen.toml:4: ", []string{`"ssh.max_sessions_per_host"`, "out of range"}},
		{"retries negative", qHead + "[http]\nretries = -1\n", "queen.toml:4: ", []string{`"http.retries"`, "out of range"}},
		{"max_jobs zero", qHead + "[jobs]\nmax_jobs = 0\n", "queen.toml:4: ", []string{`"jobs.max_jobs"`}},
		{"table as value", qHead + "ssh = 5\n", "queen.toml:3: ", []string{`"ssh"`, "want a table", "an integer"}},
		{"string as table", qHead + "[listen]\n", "queen.toml:3: ", []string{`"listen"`, "want a string", "a table"}},
		{"missing public_url", "hives_conf = \"/h\"\n", "queen.toml: ", []string{`missing required key "public_url"`}},
		{"missing hives_conf", "public_url = \"http://q:1\"\n", "queen.toml: ", []string{`missing required key "hives_conf"`}},
		{"empty file", "", "queen.toml: ", []string{"empty"}},
		{"only comments", "# nothing\n\n", "queen.toml: ", []string{"empty"}},
		{"syntax error", qHead + "[ssh\n", "queen.toml:3: ", []string{"syntax error"}},
		{"bad string", qHead + "hive_binary = \"unterminated\n", "queen.toml:3: ", []string{"syntax error"}},
		{"huge int", qHead + "[http]\nretries = 99999999999999999999999\n", "queen.toml:4: ", []string{"syntax error"}},
		{"too many keys", qHead + manyKeys(300), "queen.toml:", []string{"too many keys"}},
		{"file too large", qHead + "# " + strings.Repeat("x", 300<<10) + "\n", "queen.toml: ", []string{"refusing"}},
		{"several errors in line order", qHead + "b = 1\na = 2\n", "queen.toml:3: ", []string{`unknown key "b"`, "\nqueen.toml:4: unknown key \"a\""}},
	}
	checkBad(t, cases, func(b []byte, n string) error { _, err := ParseQueen(b, n); return err }, "queen.toml")
}

func TestParseHivesGood(t *testing.T) {
	hs, err := ParseHives([]byte(goodHives), "hives.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := []Hive{
		{Alias: "hive-1", Hostname: "hive-1", SSHPort: 22, SSHUser: "rbee", HivePort: 9000, AutoStart: true, BinaryPath: "~/.local/bin/rbee-hive"},
		{Alias: "hive-2", Hostname: "172.20.0.12", SSHPort: 22, SSHUser: "rbee", HivePort: 9000, BinaryPath: DefaultHiveBinaryPath},
	}
	if len(hs) != len(want) {
		t.Fatalf("got %d hives", len(hs))
	}
	for i := range want {
		if hs[i] != want[i] {
			t.Errorf("hive %d = %+v, want %+v", i, hs[i], want[i])
		}
	}
	if got := hs[1].URL(); got != "http://172.20.0.12:9000" {
		t.Errorf("URL = %q", got)
	}
	if got := hs[0].SSHAddr(); got != "hive-1:22" {
		t.Errorf("SSHAddr = %q", got)
	}
	// The inline form is the same TOML data and is accepted too.
	hs, err = ParseHives([]byte(`hive = [{alias = "a", hostname = "::1", ssh_user = "u", ssh_port = 2222}]`), "hives.conf")
	if err != nil || len(hs) != 1 || hs[0].SSHPort != 2222 || hs[0].SSHAddr() != "[::1]:2222" {
		t.Fatalf("inline: %+v %v", hs, err)
	}
}

func TestParseHivesBad(t *testing.T) {
	h := func(lines ...string) string {
		return "[[hive]]\nalias = \"hive-1\"\nhostname = \"hive-1\"\nssh_user = \"rbee\"\n" + strings.Join(lines, "\n") + "\n"
	}
	cases := []badCase{
		{"hives plural", "[[hives]]\nalias = \"a\"\n", "hives.conf:1: ", []string{"[[hive]]", "[[hives]]"}},
		{"single table", "[hive]\nalias = \"a\"\n", "hives.conf:1: ", []string{"[[hive]]"}},
		{"duplicate alias", h() + h(), "hives.conf:7: ", []string{`duplicate hive alias "hive-1"`, "line 2"}},
		{"same machine account", h() + "[[hive]]\nalias = \"hive-2\"\nhostname = \"HIVE-1\"\nssh_user = \"rbee\"\nhive_port = 9001\n", "hives.conf:", []string{`hive "hive-2" uses the same machine account rbee@hive-1:22`, "line 2"}},
		{"same listen address", h() + "[[hive]]\nalias = \"hive-2\"\nhostname = \"hive-1\"\nssh_user = \"other\"\n", "hives.conf:", []string{`hive "hive-2" listens on hive-1:9000`, "line 2"}},
		{"missing ssh_user", "[[hive]]\nalias = \"a\"\nhostname = \"h\"\n", "hives.conf:1: ", []string{`missing required key "ssh_user"`, "hive[0]"}},
		{"missing alias second hive", h() + "[[hive]]\nhostname = \"h\"\nssh_user = \"u\"\n", "hives.conf:6: ", []string{`missing required key "alias"`, "hive[1]"}},
		{"missing hostname", "[[hive]]\nalias = \"a\"\nssh_user = \"u\"\n", "hives.conf:1: ", []string{`missing required key "hostname"`}},
		{"ssh_port zero", h("ssh_port = 0"), "hives.conf:5: ", []string{`"hive[0].ssh_port"`, "out of range 1..65535"}},
		{"hive_port high", h("hive_port = 65536"), "hives.conf:5: ", []string{`"hive[0].hive_port"`, "out of range"}},
		{"port negative", h("hive_port = -1"), "hives.conf:5: ", []string{`"hive[0].hive_port"`, "out of range"}},
		{"port string", h("ssh_port = \"22\""), "hives.conf:5: ", []string{`"hive[0].ssh_port"`, "want an integer"}},
		{"auto_start string", h("auto_start = \"yes\""), "hives.conf:5: ", []string{`"hive[0].auto_start"`, "boolean"}},
		{"unknown key", h("aliass = \"x\""), "hives.conf:5: ", []string{`unknown key "hive[0].aliass"`}},
		{"unknown top key", "x = 1\n" + h(), "hives.conf:1: ", []string{`unknown key "x"`}},
		{"duplicate key", h("hive_port = 1", "hive_port = 2"), "hives.conf:6: ", []string{`duplicate key "hive[0].hive_port"`}},
		{"alias shell chars", "[[hive]]\nalias = \"a;rm -rf\"\nhostname = \"h\"\nssh_user = \"u\"\n", "hives.conf:2: ", []string{`"hive[0].alias"`}},
		{"hostname spaces", "[[hive]]\nalias = \"a\"\nhostname = \"h h\"\nssh_user = \"u\"\n", "hives.conf:3: ", []string{`"hive[0].hostname"`}},
		{"user bad", "[[hive]]\nalias = \"a\"\nhostname = \"h\"\nssh_user = \"-oProxy\"\n", "hives.conf:4: ", []string{`"hive[0].ssh_user"`}},
		{"binary relative", h("binary_path = \"bin/rbee-hive\""), "hives.conf:5: ", []string{`"hive[0].binary_path"`}},
		{"binary shell", h("binary_path = \"~/$(x)\""), "hives.conf:5: ", []string{`"hive[0].binary_path"`}},
		{"empty alias", "[[hive]]\nalias = \"\"\nhostname = \"h\"\nssh_user = \"u\"\n", "hives.conf:2: ", []string{`"hive[0].alias"`, "empty"}},
		{"empty file", "", "hives.conf: ", []string{"no [[hive]]", "empty"}},
		{"empty array", "hive = []\n", "hives.conf:1: ", []string{"no [[hive]]"}},
		{"hive not table", "hive = [1]\n", "hives.conf:1: ", []string{"hive[0]", "want a table"}},
		{"hive int", "hive = 3\n", "hives.conf:1: ", []string{`"hive"`}},
		{"syntax", "[[hive]\n", "hives.conf:1: ", []string{"syntax error"}},
	}
	checkBad(t, cases, func(b []byte, n string) error { _, err := ParseHives(b, n); return err }, "hives.conf")
}

func TestParseHiveLocal(t *testing.T) {
	good := `hive_id = "hive-1"
port = 9001
queen_url = "http://queen:8500"
advertise_url = "http://hive-1:9001"
data_dir = "/home/rbee/.local/share/rbee"
worker_ports = "9100-9199"
gpus = 2
heartbeat_interval = "2s"
hf_endpoint = "http://hub:8080"
worker_binary = "/usr/local/bin/llm-worker-rbee"
`
	h, err := ParseHiveLocal([]byte(good), "hive.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := HiveLocal{HiveID: "hive-1", Port: 9001, QueenURL: "http://queen:8500", AdvertiseURL: "http://hive-1:9001",
		DataDir: "/home/rbee/.local/share/rbee", WorkerPorts: "9100-9199", GPUs: 2, HeartbeatInterval: Duration(2 * time.Second),
		HFEndpoint: "http://hub:8080", WorkerBinary: "/usr/local/bin/llm-worker-rbee"}
	if *h != want {
		t.Fatalf("got %+v", *h)
	}
	h, err = ParseHiveLocal(nil, "hive.toml")
	if err != nil || *h != (HiveLocal{}) {
		t.Fatalf("empty: %+v %v", h, err)
	}

	cases := []badCase{
		{"unknown", "gpu = 1\n", "hive.toml:1: ", []string{`unknown key "gpu"`, `did you mean "gpus"`}},
		{"port", "port = 0\n", "hive.toml:1: ", []string{`"port"`, "out of range"}},
		{"worker_ports", "worker_ports = \"9199-9100\"\n", "hive.toml:1: ", []string{`"worker_ports"`, "low end"}},
		{"gpus negative", "gpus = -1\n", "hive.toml:1: ", []string{`"gpus"`}},
		{"interval", "heartbeat_interval = \"soon\"\n", "hive.toml:1: ", []string{`"heartbeat_interval"`, "invalid duration"}},
		{"queen_url", "queen_url = \"ftp://x\"\n", "hive.toml:1: ", []string{`"queen_url"`}},
		{"hive_id", "hive_id = \"a b\"\n", "hive.toml:1: ", []string{`"hive_id"`}},
		{"dup", "gpus = 1\ngpus = 2\n", "hive.toml:2: ", []string{`duplicate key "gpus"`}},
		{"table", "[x]\n", "hive.toml:1: ", []string{`unknown table "x"`}},
	}
	checkBad(t, cases, func(b []byte, n string) error { _, err := ParseHiveLocal(b, n); return err }, "hive.toml")
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	qp := filepath.Join(dir, "queen.toml")
	doc := "public_url = \"http://q:8500\"\nhives_conf = \"hives.conf\"\nhive_binary = \"/abs/rbee-hive\"\n[ssh]\nknown_hosts = \"keys/known_hosts\"\n"
	if err := os.WriteFile(qp, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	q, err := LoadQueen(qp)
	if err != nil {
		t.Fatal(err)
	}
	if q.HivesConf != filepath.Join(dir, "hives.conf") || q.SSH.KnownHosts != filepath.Join(dir, "keys/known_hosts") || q.HiveBinary != "/abs/rbee-hive" {
		t.Fatalf("paths not resolved: %+v", q)
	}
	if err := os.WriteFile(q.HivesConf, []byte(goodHives), 0o600); err != nil {
		t.Fatal(err)
	}
	if hs, err := LoadHives(q.HivesConf); err != nil || len(hs) != 2 {
		t.Fatalf("LoadHives: %v %v", hs, err)
	}
	// Errors from Load* name the path they read.
	if err := os.WriteFile(qp, []byte(doc+"bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadQueen(qp); err == nil || !strings.HasPrefix(err.Error(), qp+":6: unknown key \"ssh.bogus\"") {
		t.Fatalf("want error prefixed %q, got %v", qp+":6: ", err)
	}
	if _, err := LoadQueen(filepath.Join(dir, "nope.toml")); err == nil {
		t.Fatal("missing queen.toml must be an error")
	}

	hp := filepath.Join(dir, "hive.toml")
	if _, err := LoadHiveLocal(hp); err == nil {
		t.Fatal("LoadHiveLocal of missing file must fail")
	}
	h, found, err := LoadHiveLocalIfExists(hp)
	if err != nil || found || *h != (HiveLocal{}) {
		t.Fatalf("IfExists missing: %+v %v %v", h, found, err)
	}
	if err := os.WriteFile(hp, []byte("gpus = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, found, err = LoadHiveLocalIfExists(hp)
	if err != nil || !found || h.GPUs != 3 {
		t.Fatalf("IfExists present: %+v %v %v", h, found, err)
	}
	if err := os.WriteFile(hp, []byte("gpus = \"3\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadHiveLocalIfExists(hp); err == nil {
		t.Fatal("bad present file must be an error")
	}
}

func TestParsePortRange(t *testing.T) {
	good := []struct {
		in     string
		lo, hi int
	}{{"9100-9199", 9100, 9199}, {"1-65535", 1, 65535}, {"9100", 9100, 9100}, {"80-80", 80, 80}}
	for _, g := range good {
		lo, hi, err := ParsePortRange(g.in)
		if err != nil || lo != g.lo || hi != g.hi {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", g.in, lo, hi, err)
		}
	}
	for _, bad := range []string{"", "-", "0-10", "10-65536", "9199-9100", "a-b", "9100-", "-9100", "+1-2", "1-2-3", " 1 - 2 ", "99999999999999999999-1"} {
		if _, _, err := ParsePortRange(bad); err == nil || !strings.Contains(err.Error(), "invalid port range") {
			t.Errorf("ParsePortRange(%q) err = %v", bad, err)
		}
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.D() != 90*time.Second || d.String() != "1m30s" {
		t.Fatalf("%v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1m30s" {
		t.Fatalf("MarshalText = %s", b)
	}
	for _, bad := range []string{"", "5", "-1s", "5 seconds", "1y"} {
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("k" + strconv.Itoa(i) + " = 1\n")
	}
	return b.String()
}
