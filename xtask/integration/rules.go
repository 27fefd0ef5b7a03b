package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// A rule is one effect of a Fault in one target's network namespace. Each
// kind of fault is one type: a new kind is one type implementing rule, and
// its tests.
type rule interface {
	// key identifies the rule for replacement and Recover: injecting a rule
	// with the key of an active one replaces it.
	key() string
	// on is the service whose namespace holds the rule.
	on() string
	// peer is the other service whose address the rule names ("" if none).
	peer() string
	// check validates the rule's own arguments (services are checked by the
	// harness).
	check() error
	// render adds the rule to the target's rule set.
	render(rs *ruleSet, env ruleEnv)
	// String names the rule as Faults and the transcript show it.
	String() string
}

// ruleEnv is what rendering needs to know about the network.
type ruleEnv struct {
	self    netip.Addr
	peers   map[string]netip.Addr
	subnet  netip.Prefix
	gateway netip.Addr
}

// ruleSet is a target's complete fault state, built by rendering its rules
// in injection order: iptables filter lines, the nat redirects into the
// toxic proxy, the merged tc qdisc, and the proxy's toxic routes.
type ruleSet struct {
	filter []string
	nat    []string
	qdisc  qdisc
	routes map[string]*toxic.Route
}

func (rs *ruleSet) addFilter(format string, args ...any) {
	rs.filter = append(rs.filter, fmt.Sprintf(format, args...))
}

// route returns (creating) the proxy route of connections to addr:port and
// the nat redirect that steers them into the proxy.
func (rs *ruleSet) route(addr netip.Addr, port uint16) *toxic.Route {
	r := toxic.Route{Addr: addr, Port: port}
	if rs.routes == nil {
		rs.routes = map[string]*toxic.Route{}
	}
	if got := rs.routes[r.Key()]; got != nil {
		return got
	}
	rs.routes[r.Key()] = &r
	match := "-d " + addr.String()
	if port != 0 {
		match += " --dport " + strconv.Itoa(int(port))
	}
	// Marked connections are the proxy's own: never redirect them.
	rs.nat = append(rs.nat, fmt.Sprintf("iptables -w -t nat -A RBEE-TOX -p tcp %s -m mark ! --mark %#x -j REDIRECT --to-ports %d", match, toxic.Mark, toxic.ListenPort))
	return &r
}

// state is the proxy's desired state, in a stable order.
func (rs *ruleSet) state() toxic.State {
	keys := make([]string, 0, len(rs.routes))
	for k := range rs.routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	st := toxic.State{Routes: []toxic.Route{}}
	for _, k := range keys {
		r := *rs.routes[k]
		if r.Toxics == nil {
			r.Toxics = []toxic.Toxic{}
		}
		st.Routes = append(st.Routes, r)
	}
	return st
}

// qdisc is the merged tc state of one interface: at most one root qdisc,
// so a rate limit and a packet delay share it (netem's own rate) instead
// of replacing each other.
type qdisc struct {
	rate          string
	delay, jitter time.Duration
}

// commands are the tc commands that put q on $dev in place of whatever
// root qdisc is there: one "replace" (the old qdisc is swapped for the new
// in one step, so no packet passes unshaped between a delete and an add),
// or, when q is empty, the delete of the old one.
func (q qdisc) commands() []string {
	if q.delay <= 0 && q.rate == "" {
		return []string{"tc qdisc del dev $dev root 2>/dev/null || true"}
	}
	if q.delay <= 0 {
		// burst ≥ one MTU-sized packet; latency bounds the queue (packets
		// waiting longer are dropped, as on a saturated link).
		return []string{fmt.Sprintf("tc qdisc replace dev $dev root tbf rate %s burst 32kbit latency 400ms", q.rate)}
	}
	c := fmt.Sprintf("tc qdisc replace dev $dev root netem delay %dms", q.delay.Milliseconds())
	if q.jitter > 0 {
		c += fmt.Sprintf(" %dms", q.jitter.Milliseconds())
	}
	if q.rate != "" {
		c += " rate " + q.rate
	}
	return []string{c}
}

// blockRule drops (or rejects) what from sends on connections it opens to to.
type blockRule struct {
	from, to string
	reject   bool
}

func (r blockRule) key() string {
	if r.reject {
		return "reject:" + r.from + ">" + r.to
	}
	return "drop:" + r.from + ">" + r.to
}
func (r blockRule) on() string   { return r.from }
func (r blockRule) peer() string { return r.to }
func (r blockRule) check() error { return nil }
func (r blockRule) String() string {
	if r.reject {
		return fmt.Sprintf("block %s→%s (reject)", r.from, r.to)
	}
	return fmt.Sprintf("block %s→%s (drop)", r.from, r.to)
}

// render matches conntrack direction ORIGINAL: packets of connections the
// target opened; replies on connections the peer opened pass.
func (r blockRule) render(rs *ruleSet, env ruleEnv) {
	p := env.peers[r.to]
	if r.reject {
		rs.addFilter("iptables -w -A RBEE-OUT -d %s -p tcp -m conntrack --ctdir ORIGINAL -j REJECT --reject-with tcp-reset", p)
		rs.addFilter("iptables -w -A RBEE-OUT -d %s -m conntrack --ctdir ORIGINAL -j REJECT --reject-with icmp-port-unreachable", p)
		return
	}
	rs.addFilter("iptables -w -A RBEE-OUT -d %s -m conntrack --ctdir ORIGINAL -j DROP", p)
}

// isolateRule cuts svc off from the topology's subnet, both ways, except
// the gateway (the test host's path).
type isolateRule struct{ svc string }

func (r isolateRule) key() string    { return "isolate:" + r.svc }
func (r isolateRule) on() string     { return r.svc }
func (r isolateRule) peer() string   { return "" }
func (r isolateRule) check() error   { return nil }
func (r isolateRule) String() string { return "isolate " + r.svc }
func (r isolateRule) render(rs *ruleSet, env ruleEnv) {
	rs.addFilter("iptables -w -A RBEE-OUT -d %s -j RETURN", env.gateway)
	rs.addFilter("iptables -w -A RBEE-OUT -d %s -j DROP", env.subnet)
	rs.addFilter("iptables -w -A RBEE-IN -s %s -j RETURN", env.gateway)
	rs.addFilter("iptables -w -A RBEE-IN -s %s -j DROP", env.subnet)
}

// lossRule drops a random share of svc's packets, both ways.
type lossRule struct {
	svc     string
	percent float64
}

func (r lossRule) key() string    { return "loss:" + r.svc }
func (r lossRule) on() string     { return r.svc }
func (r lossRule) peer() string   { return "" }
func (r lossRule) String() string { return fmt.Sprintf("loss %s %g%%", r.svc, r.percent) }
func (r lossRule) check() error {
	if !(r.percent > 0 && r.percent <= 100) {
		return fmt.Errorf("loss on %s: %g%% is not in (0, 100]", r.svc, r.percent)
	}
	return nil
}
func (r lossRule) render(rs *ruleSet, _ ruleEnv) {
	p := strconv.FormatFloat(r.percent/100, 'f', 4, 64)
	rs.addFilter("iptables -w -A RBEE-IN -i $dev -m statistic --mode random --probability %s -j DROP", p)
	rs.addFilter("iptables -w -A RBEE-OUT -o $dev -m statistic --mode random --probability %s -j DROP", p)
}

var rateRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$`)

// rateRule caps what svc sends (tc tbf, or netem's rate beside a delay).
type rateRule struct{ svc, rate string }

func (r rateRule) key() string    { return "rate:" + r.svc }
func (r rateRule) on() string     { return r.svc }
func (r rateRule) peer() string   { return "" }
func (r rateRule) String() string { return fmt.Sprintf("rate-limit %s %s", r.svc, r.rate) }
func (r rateRule) check() error {
	if !rateRE.MatchString(r.rate) {
		return fmt.Errorf("rate limit on %s: %q is not a tc rate such as 1mbit, 200kbit, 50kbps", r.svc, r.rate)
	}
	return nil
}
func (r rateRule) render(rs *ruleSet, _ ruleEnv) { rs.qdisc.rate = r.rate }

// netemRule delays every packet svc sends (tc netem): packet-level.
type netemRule struct {
	svc           string
	delay, jitter time.Duration
}

func (r netemRule) key() string  { return "netem:" + r.svc }
func (r netemRule) on() string   { return r.svc }
func (r netemRule) peer() string { return "" }
func (r netemRule) String() string {
	if r.jitter > 0 {
		return fmt.Sprintf("packet latency %s %v±%v", r.svc, r.delay, r.jitter)
	}
	return fmt.Sprintf("packet latency %s %v", r.svc, r.delay)
}
func (r netemRule) check() error {
	if r.delay <= 0 {
		return fmt.Errorf("latency on %s: %v must be positive", r.svc, r.delay)
	}
	if r.jitter < 0 || r.jitter > r.delay {
		return fmt.Errorf("latency on %s: jitter %v must be in [0, %v]", r.svc, r.jitter, r.delay)
	}
	return nil
}
func (r netemRule) render(rs *ruleSet, _ ruleEnv) {
	rs.qdisc.delay, rs.qdisc.jitter = r.delay, r.jitter
}

// toxicRule is one toxiproxy toxic on the connections from opens to to (to
// one port of to, or all), applied by the proxy in from's namespace.
// Upstream is the data from sends, downstream the data it receives.
type toxicRule struct {
	from, to string
	port     uint16
	kind     string // toxiproxy toxic type; "" only interposes the proxy
	stream   string // upstream or downstream
	toxicity float64
	attrs    map[string]any
	desc     string // the kind's arguments, for String
	bad      error  // argument error found by the constructor
}

func (r toxicRule) link() string {
	l := r.from + ">" + r.to
	if r.port != 0 {
		l += ":" + strconv.Itoa(int(r.port))
	}
	return l
}

func (r toxicRule) key() string {
	if r.kind == "" {
		return "via:" + r.link()
	}
	return "toxic:" + r.link() + ":" + r.kind + ":" + r.stream
}
func (r toxicRule) on() string   { return r.from }
func (r toxicRule) peer() string { return r.to }
func (r toxicRule) check() error {
	if r.bad != nil {
		return r.bad
	}
	if r.kind != "" && !(r.toxicity > 0 && r.toxicity <= 1) {
		return fmt.Errorf("%s: toxicity %g is not in (0, 1]", r, r.toxicity)
	}
	return nil
}

func (r toxicRule) String() string {
	to := r.to
	if r.port != 0 {
		to += ":" + strconv.Itoa(int(r.port))
	}
	if r.kind == "" {
		return fmt.Sprintf("interpose %s→%s", r.from, to)
	}
	s := fmt.Sprintf("%s %s→%s %s %s", strings.ReplaceAll(r.kind, "_", "-"), r.from, to, r.desc, r.stream)
	if r.toxicity < 1 {
		s += fmt.Sprintf(" toxicity %g", r.toxicity)
	}
	return s
}

func (r toxicRule) render(rs *ruleSet, env ruleEnv) {
	rt := rs.route(env.peers[r.to], r.port)
	if r.kind == "" {
		return
	}
	rt.Toxics = append(rt.Toxics, toxic.Toxic{
		Name: r.kind + "_" + r.stream, Type: r.kind, Stream: r.stream,
		Toxicity: float32(r.toxicity), Attributes: r.attrs,
	})
}

// render builds the shell script that sets the whole fault state of a
// target from its rules (in injection order); proxyState is the toxic
// proxy's state ("" when the target's helper runs no proxy and needs none).
func render(rules []rule, env ruleEnv, proxy bool) (script string, rs ruleSet) {
	for _, r := range rules {
		r.render(&rs, env)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("set -e")
	w("dev=$(ip -o -4 addr show to %s/32 | awk '{print $2; exit}')", env.self)
	w(`[ -n "$dev" ] || { echo "no interface with address %s" >&2; exit 2; }`, env.self)
	// Each table's chains are replaced in one iptables-restore: a re-sync
	// (another fault injected, one recovered) never passes through a state
	// with the chains flushed, in which a packet would slip past a block or
	// a new connection past the toxic proxy (and keep-alive would keep it
	// there).
	var filter []string
	if env.gateway.IsValid() {
		// The harness reaches the helper's admin endpoint from the host side
		// of the bridge: no fault may cut it off from the rules it installs
		// (a loss or an isolation would otherwise drop its own recovery).
		filter = append(filter,
			fmt.Sprintf("iptables -w -A RBEE-IN -s %s -p tcp --dport %d -j RETURN", env.gateway, toxic.AdminPort),
			fmt.Sprintf("iptables -w -A RBEE-OUT -d %s -p tcp --sport %d -j RETURN", env.gateway, toxic.AdminPort))
	}
	b.WriteString(restore("filter", []string{"RBEE-IN", "RBEE-OUT"}, append(filter, rs.filter...)))
	w("iptables -w -C INPUT -j RBEE-IN 2>/dev/null || iptables -w -I INPUT 1 -j RBEE-IN")
	w("iptables -w -C OUTPUT -j RBEE-OUT 2>/dev/null || iptables -w -I OUTPUT 1 -j RBEE-OUT")
	for _, c := range rs.qdisc.commands() {
		w("%s", c)
	}
	if proxy || len(rs.nat) > 0 {
		// The proxy gets its toxics before the redirect sends it new
		// connections, and loses them before the redirect goes away; both
		// are in force when the script ends.
		w("%s apply -state %s", toxic.BinPath, encodeState(rs.state()))
		b.WriteString(restore("nat", []string{"RBEE-TOX"}, rs.nat))
		w("iptables -w -t nat -C OUTPUT -j RBEE-TOX 2>/dev/null || iptables -w -t nat -I OUTPUT 1 -j RBEE-TOX")
	}
	return b.String(), rs
}

// restore is the shell command that replaces chains of table with the
// rules lines (each an "iptables -w [-t table] -A chain …" command) in one
// iptables-restore transaction: with --noflush the rest of the table is
// kept, and each chain named is created or, when it exists, flushed, in
// the same commit that adds its rules. The here-document is unquoted so
// that the script's $dev expands in it.
func restore(table string, chains, rules []string) string {
	var b strings.Builder
	b.WriteString("iptables-restore -w --noflush <<RULES\n*" + table + "\n")
	for _, c := range chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	prefix := "iptables -w "
	if table != "filter" {
		prefix += "-t " + table + " "
	}
	for _, l := range rules {
		b.WriteString(strings.TrimPrefix(l, prefix) + "\n")
	}
	b.WriteString("COMMIT\nRULES\n")
	return b.String()
}
