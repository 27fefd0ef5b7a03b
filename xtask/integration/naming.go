package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"net/netip"
	"strings"
)

// sanitize lower-cases name and keeps [a-z0-9-], collapsing the rest to '-',
// so that a test name like "TestX/sub_case#01" can start a compose project
// name (which must match [a-z0-9][a-z0-9_-]*).
func sanitize(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// projectName derives a compose project name from a test name: readable
// prefix, random suffix so that reruns and parallel runs never share one.
func projectName(testName string) string {
	s := sanitize(testName)
	if len(s) > 40 {
		s = strings.Trim(s[:40], "-")
	}
	var buf [3]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails on Linux
	return "rbee-" + s + "-" + hex.EncodeToString(buf[:])
}

// subnetPool is where harness networks live: 172.28.0.0/14 holds 1024 /24s,
// away from Docker's default pools (172.17–172.27 for bridges it picks
// itself) and from the compose files' 172.20.0.0/16.
var subnetPool = netip.MustParsePrefix("172.28.0.0/14")

const subnetBits = 24

// randInt is where pickSubnet starts looking: runs started at the same
// moment then rarely contend for the same subnet.
func randInt() int { return mathrand.IntN(1 << 30) }

// pickSubnet returns the first /24 of subnetPool, starting at index start and
// wrapping around, that overlaps none of used.
func pickSubnet(used []netip.Prefix, start int) (netip.Prefix, error) {
	n := 1 << (subnetBits - subnetPool.Bits())
	base := subnetPool.Addr().As4()
	baseU := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	start = ((start % n) + n) % n
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		v := baseU + uint32(idx)<<(32-subnetBits)
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), subnetBits)
		free := true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /%d left in %s: remove stale networks (go run mage.go cleanup)", subnetBits, subnetPool)
}

// remapAddr moves addr from subnet from to the same offset in subnet to, so
// that a compose file's fixed addresses (172.20.0.10) land in the harness's
// own subnet (172.29.7.10). The offset must fit and must not be the network,
// gateway (.1) or broadcast address of to.
func remapAddr(addr netip.Addr, from, to netip.Prefix) (netip.Addr, error) {
	if !addr.Is4() || !from.Addr().Is4() || !to.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("address %s: only IPv4 is supported", addr)
	}
	if !from.Contains(addr) {
		return netip.Addr{}, fmt.Errorf("address %s is outside its network's subnet %s", addr, from)
	}
	u := func(a netip.Addr) uint32 {
		b := a.As4()
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	off := u(addr) - u(from.Masked().Addr())
	size := uint32(1) << (32 - to.Bits())
	if off <= 1 || off >= size-1 {
		return netip.Addr{}, fmt.Errorf("address %s (offset %d in %s) does not fit the harness subnet %s: keep fixed addresses within the first /%d, above .1", addr, off, from, to, to.Bits())
	}
	v := u(to.Masked().Addr()) + off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}
