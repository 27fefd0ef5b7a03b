package config

import (
	"errors"
	"strings"
	"testing"
)

// Seed corpora run as ordinary tests with `go test`; `-fuzz` explores from them.

func FuzzParseQueen(f *testing.F) {
	seeds := []string{
		goodQueen,
		qHead,
		qHead + "[lifecycle]\nstart_timeout = \"1s\"\n[jobs]\nretention = \"1m\"\nmax_jobs = 1\n",
		"",
		"# only a comment\n",
		qHead + "[ssh]\nconect_timeout = \"5s\"\n",
		qHead + "[http]\nretries = 1\nretries = 2\n",
		qHead + "[ssh]\n[ssh]\n",
		"listen = \"0.0.0.0:0\"\n" + qHead,
		qHead + "[heartbeat]\nstale_after = \"-1s\"\n",
		qHead + "[ssh]\ncommand_timeout = 60\n",
		qHead + "ssh = [1, {a = 2}]\n",
		qHead + "[[ssh]]\nx = 1\n",
		qHead + "a.b.c = 1\n[a]\n",
		"public_url = 'http://[::1]:8500'\nhives_conf = '''/h'''\n",
		qHead + "x = 1979-05-27T07:32:00Z\n",
		"[ssh\n",
		"\"\" = 1\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := ParseQueen(data, "queen.toml")
		if err != nil {
			checkFuzzError(t, err, "queen.toml")
			return
		}
		if checkListen(q.Listen) != nil || checkHTTPURL(q.PublicURL) != nil || q.HivesConf == "" || q.HiveBinary == "" {
			t.Fatalf("accepted invalid queen config: %+v", q)
		}
		for _, d := range []Duration{q.Heartbeat.StaleAfter, q.SSH.ConnectTimeout, q.SSH.CommandTimeout, q.HTTP.Timeout,
			q.Lifecycle.StartTimeout, q.Lifecycle.StopTimeout, q.Jobs.Retention} {
			if d <= 0 {
				t.Fatalf("accepted non-positive duration: %+v", q)
			}
		}
		if q.SSH.MaxSessionsPerHost < 1 || q.HTTP.Retries < 0 || q.Jobs.MaxJobs < 1 {
			t.Fatalf("accepted out-of-range limit: %+v", q)
		}
	})
}

func FuzzParseHives(f *testing.F) {
	seeds := []string{
		goodHives,
		"[[hive]]\nalias = \"a\"\nhostname = \"h\"\nssh_user = \"u\"\n",
		`hive = [{alias = "a", hostname = "::1", ssh_user = "u"}]`,
		"",
		"[[hives]]\nalias = \"a\"\n",
		"[hive]\nalias = \"a\"\n",
		goodHives + goodHives,
		"[[hive]]\nalias = \"a\"\nhostname = \"h\"\nssh_user = \"u\"\nssh_port = 0\n",
		"[[hive]]\nalias = \"a\"\nhostname = \"h\"\n",
		"[[hive]]\n[[hive.sub]]\nx = 1\n[[hive]]\n",
		"hive = [[1], {}]\n",
		"[[hive]]\nalias = \"a\"\nalias = \"b\"\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := ParseHives(data, "hives.conf")
		if err != nil {
			checkFuzzError(t, err, "hives.conf")
			return
		}
		if len(hs) == 0 {
			t.Fatal("accepted a hives.conf without hives")
		}
		seen := map[string]bool{}
		for _, h := range hs {
			if !aliasRE.MatchString(h.Alias) || !hostnameRE.MatchString(h.Hostname) || !userRE.MatchString(h.SSHUser) ||
				!binPathRE.MatchString(h.BinaryPath) {
				t.Fatalf("accepted invalid hive: %+v", h)
			}
			if h.SSHPort < 1 || h.SSHPort > 65535 || h.HivePort < 1 || h.HivePort > 65535 {
				t.Fatalf("accepted bad port: %+v", h)
			}
			if seen[h.Alias] {
				t.Fatalf("accepted duplicate alias %q", h.Alias)
			}
			seen[h.Alias] = true
		}
	})
}

// checkFuzzError: every failure is one or more *Error naming the file.
func checkFuzzError(t *testing.T, err error, name string) {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %q is not a *config.Error", err, err)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, name+":") {
			t.Fatalf("error line %q does not name the file", line)
		}
	}
}
