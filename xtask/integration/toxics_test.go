package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

func toxicEnv() ruleEnv {
	return ruleEnv{
		self:  netip.MustParseAddr("172.28.0.10"),
		peers: map[string]netip.Addr{"hive-1": netip.MustParseAddr("172.28.0.20"), "hive-2": netip.MustParseAddr("172.28.0.21")},
	}
}

// decodeApplied finds the proxy state in a rendered script.
func decodeApplied(t *testing.T, script string) toxic.State {
	t.Helper()
	m := regexp.MustCompile(`rbee-toxic apply -state (\S+)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("script does not apply a proxy state:\n%s", script)
	}
	b, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil {
		t.Fatal(err)
	}
	var st toxic.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if err := st.Validate(); err != nil {
		t.Fatalf("rendered state is invalid: %v", err)
	}
	return st
}

// Every toxic kind renders one redirect of the peer (marked sockets
// excluded) and one toxiproxy toxic with the kind's attributes, downstream
// unless asked otherwise.
func TestRenderToxics(t *testing.T) {
	for _, tc := range []struct {
		f      Fault
		typ    string
		stream string
		attrs  map[string]float64
	}{
		{Latency("queen", "hive-1", 100*time.Millisecond, 10*time.Millisecond), "latency", "downstream", map[string]float64{"latency": 100, "jitter": 10}},
		{Latency("queen", "hive-1", time.Second, 0).Upstream(), "latency", "upstream", map[string]float64{"latency": 1000, "jitter": 0}},
		{Bandwidth("queen", "hive-1", 64).Upstream(), "bandwidth", "upstream", map[string]float64{"rate": 64}},
		{SlowClose("queen", "hive-1", 2*time.Second), "slow_close", "downstream", map[string]float64{"delay": 2000}},
		{Hang("queen", "hive-1"), "hang", "downstream", map[string]float64{}},
		{ResetPeer("queen", "hive-1", 50*time.Millisecond), "reset_peer", "downstream", map[string]float64{"timeout": 50}},
		{LimitData("queen", "hive-1", 4096), "limit_data", "downstream", map[string]float64{"bytes": 4096}},
		{Slice("queen", "hive-1", 100, 10, time.Millisecond), "slicer", "downstream", map[string]float64{"average_size": 100, "size_variation": 10, "delay": 1000}},
	} {
		t.Run(tc.f.String(), func(t *testing.T) {
			if err := tc.f.parts[0].check(); err != nil {
				t.Fatal(err)
			}
			script, _ := render(tc.f.parts, toxicEnv(), false)
			if !strings.Contains(script, "-A RBEE-TOX -p tcp -d 172.28.0.20 -m mark ! --mark 0x7262 -j REDIRECT --to-ports 39721") {
				t.Errorf("no redirect of hive-1:\n%s", script)
			}
			st := decodeApplied(t, script)
			if len(st.Routes) != 1 || len(st.Routes[0].Toxics) != 1 {
				t.Fatalf("state = %+v", st)
			}
			tx := st.Routes[0].Toxics[0]
			if tx.Type != tc.typ || tx.Stream != tc.stream || tx.Toxicity != 1 || tx.Name != tc.typ+"_"+tc.stream {
				t.Errorf("toxic = %+v", tx)
			}
			for k, v := range tc.attrs {
				if got, ok := tx.Attributes[k].(float64); !ok || got != v {
					t.Errorf("attribute %s = %v, want %v", k, tx.Attributes[k], v)
				}
			}
			// The apply comes before the redirect: new connections find
			// the toxic in place.
			if strings.Index(script, "apply -state") > strings.Index(script, "REDIRECT") {
				t.Errorf("redirect installed before the toxics:\n%s", script)
			}
		})
	}
}

// Port narrows the redirect and the route; two toxics on one link share one
// route; links to two peers get two; Interpose has a route without toxics.
// Without connection-level rules no proxy is mentioned, unless the helper
// already runs one (then it is told the empty state, which clears it).
func TestRenderRoutes(t *testing.T) {
	env := toxicEnv()
	script, _ := render(Latency("queen", "hive-1", 5*time.Millisecond, 0).Port(9000).parts, env, false)
	if !strings.Contains(script, "-d 172.28.0.20 --dport 9000 -m mark") {
		t.Errorf("port not in the redirect:\n%s", script)
	}
	if st := decodeApplied(t, script); st.Routes[0].Key() != "172.28.0.20:9000" {
		t.Errorf("route = %s", st.Routes[0].Key())
	}
	rules := append(append(Latency("queen", "hive-1", 5*time.Millisecond, 0).parts, Bandwidth("queen", "hive-1", 10).Upstream().parts...), Interpose("queen", "hive-2").parts...)
	script, _ = render(rules, env, false)
	st := decodeApplied(t, script)
	if len(st.Routes) != 2 || len(st.Routes[0].Toxics) != 2 || len(st.Routes[1].Toxics) != 0 || st.Routes[1].Addr.String() != "172.28.0.21" {
		t.Fatalf("state = %+v", st)
	}
	if n := strings.Count(script, "REDIRECT"); n != 2 {
		t.Errorf("%d redirects, want 2:\n%s", n, script)
	}
	script, _ = render(Block("queen", "hive-1").parts, env, false)
	if strings.Contains(script, "rbee-toxic") || strings.Contains(script, "nat") {
		t.Errorf("a block touches the proxy:\n%s", script)
	}
	script, _ = render(nil, env, true)
	if st := decodeApplied(t, script); len(st.Routes) != 0 {
		t.Errorf("empty state = %+v", st)
	}
	if !strings.Contains(script, "*nat\n:RBEE-TOX - [0:0]\nCOMMIT\n") || strings.Contains(script, "REDIRECT") || strings.Contains(script, "-F RBEE-TOX") {
		t.Errorf("clearing script:\n%s", script)
	}
}

// Keys: a toxic kind once per link and stream; the value does not matter
// for Recover; directions and ports are distinct links.
func TestToxicKeys(t *testing.T) {
	k := func(f Fault) string { return f.parts[0].key() }
	if k(Latency("a", "b", time.Second, 0)) != k(Latency("a", "b", time.Millisecond, 0)) {
		t.Error("two latencies on one link and stream must replace each other")
	}
	for _, pair := range [][2]Fault{
		{Latency("a", "b", time.Second, 0), Latency("b", "a", time.Second, 0)},
		{Latency("a", "b", time.Second, 0), Latency("a", "b", time.Second, 0).Upstream()},
		{Latency("a", "b", time.Second, 0), Latency("a", "b", time.Second, 0).Port(80)},
		{Latency("a", "b", time.Second, 0), Bandwidth("a", "b", 1)},
		{Interpose("a", "b"), Hang("a", "b")},
		{Block("a", "b"), Interpose("a", "b")},
	} {
		if k(pair[0]) == k(pair[1]) {
			t.Errorf("%s and %s share the key %s", pair[0], pair[1], k(pair[0]))
		}
	}
	if got := Latency("queen", "hive-1", 100*time.Millisecond, 10*time.Millisecond).Toxicity(0.5).String(); got != "latency queen→hive-1 100ms±10ms downstream toxicity 0.5" {
		t.Errorf("String = %q", got)
	}
}

// Bad toxic arguments and misplaced modifiers are errors naming the
// problem, found before anything reaches Docker.
func TestToxicsRejectBadArguments(t *testing.T) {
	h := fakeHarness(t, "queen", "hive-1")
	ctx := context.Background()
	for _, tc := range []struct {
		f    Fault
		want string
	}{
		{Latency("queen", "hive-1", 0, 0), "must be at least 1ms"},
		{Latency("queen", "hive-1", time.Millisecond, time.Second), "jitter 1s must be in [0, 1ms]"},
		{Latency("queen", "queen", time.Second, 0), "from itself"},
		{Latency("queen", "nope", time.Second, 0), `unknown service "nope"`},
		{Bandwidth("queen", "hive-1", 0), "must be positive"},
		{SlowClose("queen", "hive-1", 0), "at least 1ms"},
		{ResetPeer("queen", "hive-1", -time.Second), "must not be negative"},
		{LimitData("queen", "hive-1", 0), "must be positive"},
		{Slice("queen", "hive-1", 10, 10, 0), "want avg > variation"},
		{Hang("queen", "hive-1").Toxicity(0), "toxicity 0 is not in (0, 1]"},
		{Hang("queen", "hive-1").Toxicity(1.5), "not in (0, 1]"},
		{Hang("queen", "hive-1").Port(70000), "not a TCP port"},
		{Block("queen", "hive-1").Upstream(), "Upstream applies to connection-level faults only, not to block queen→hive-1 (drop)"},
		{Loss("queen", 5).Toxicity(0.5), "Toxicity applies to connection-level faults only"},
	} {
		err := h.Inject(ctx, tc.f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Inject(%s) = %v, want containing %q", tc.f, err, tc.want)
		}
	}
	if err := h.Recover(ctx, Latency("queen", "hive-1", time.Second, 0)); err == nil || !strings.Contains(err.Error(), "is not active") {
		t.Errorf("recover of an inactive latency: %v", err)
	}
	// Recover matches by what a rule acts on: zero values are not argument
	// errors there, the rule is only not active.
	if err := h.Recover(ctx, Latency("queen", "hive-1", 0, 0)); err == nil || !strings.Contains(err.Error(), "is not active") {
		t.Errorf("recover of Latency(…, 0, 0): %v, want \"is not active\", not an argument error", err)
	}
	if len(h.Faults()) != 0 {
		t.Fatalf("failed calls left faults: %v", h.Faults())
	}
}

// The qdisc builder merges tc rules into one root qdisc.
func TestQdiscMerges(t *testing.T) {
	for _, tc := range []struct {
		q    qdisc
		want []string
	}{
		{qdisc{}, []string{"tc qdisc del dev $dev root 2>/dev/null || true"}},
		{qdisc{rate: "1mbit"}, []string{"tc qdisc replace dev $dev root tbf rate 1mbit burst 32kbit latency 400ms"}},
		{qdisc{delay: 10 * time.Millisecond}, []string{"tc qdisc replace dev $dev root netem delay 10ms"}},
		{qdisc{delay: 10 * time.Millisecond, jitter: 2 * time.Millisecond, rate: "1mbit"}, []string{"tc qdisc replace dev $dev root netem delay 10ms 2ms rate 1mbit"}},
	} {
		got := tc.q.commands()
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%+v: %q, want %q", tc.q, got, tc.want)
		}
	}
}
