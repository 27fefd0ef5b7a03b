//go:build docker

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// heartbeatPath is the hive's heartbeat endpoint on the queen (PROTOCOL §3).
const heartbeatPath = "/v1/hive-heartbeat"

// captureHeartbeat is the interval the capture tests give the hives.
const captureHeartbeat = 500 * time.Millisecond

// pcapSummary is what a capture holds, as far as the tests check it.
type pcapSummary struct {
	frames     int
	heartbeats map[[2]netip.Addr]int // (src, dst) → POSTs of heartbeatPath to port 8500
	// firstToQueen is the first TCP segment hive→queen:8500 per (src, dst):
	// a SYN when the capture saw the connection open.
	firstToQueen map[[2]netip.Addr]*layers.TCP
	foreign      []string // packets with an address outside the run's subnet
	other        map[string]int
}

// readCapture parses a pcap with gopacket and checks every IPv4 and ARP
// address against subnet.
func readCapture(t *testing.T, path string, subnet netip.Prefix) pcapSummary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not a pcap file: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("%s: link type %v", path, r.LinkType())
	}
	s := pcapSummary{heartbeats: map[[2]netip.Addr]int{}, firstToQueen: map[[2]netip.Addr]*layers.TCP{}, other: map[string]int{}}
	foreign := func(what string, addrs ...[]byte) {
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a)
			if !ok || !subnet.Contains(ip.Unmap()) {
				s.foreign = append(s.foreign, fmt.Sprintf("frame %d: %s %v", s.frames, what, addrs))
				return
			}
		}
	}
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: frame %d: %v", path, s.frames+1, err)
		}
		s.frames++
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		switch {
		case p.Layer(layers.LayerTypeIPv4) != nil:
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			foreign("ipv4", ip.SrcIP.To4(), ip.DstIP.To4())
			tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ok || tcp.DstPort != 8500 {
				continue
			}
			src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
			dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
			k := [2]netip.Addr{src, dst}
			if _, seen := s.firstToQueen[k]; !seen {
				s.firstToQueen[k] = tcp
			}
			if bytes.HasPrefix(tcp.Payload, []byte("POST "+heartbeatPath+" HTTP/1.1\r\n")) {
				s.heartbeats[k]++
			}
		case p.Layer(layers.LayerTypeIPv6) != nil:
			// No run has IPv6 addresses: only link-scoped traffic (neighbour
			// discovery, MLD) of the bridge's own ports may appear.
			ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			src, _ := netip.AddrFromSlice(ip.SrcIP)
			dst, _ := netip.AddrFromSlice(ip.DstIP)
			if !(src.IsLinkLocalUnicast() || src.IsUnspecified()) || !(dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast()) {
				s.foreign = append(s.foreign, fmt.Sprintf("frame %d: ipv6 %s→%s is not link-local", s.frames, src, dst))
			}
			s.other["ipv6 "+p.Layers()[len(p.Layers())-1].LayerType().String()]++
		case p.Layer(layers.LayerTypeARP) != nil:
			a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			foreign("arp", a.SourceProtAddress, a.DstProtAddress)
		default:
			// No IP, no ARP: nothing in it names a subnet. Such frames are
			// counted and reported.
			s.other[p.Layers()[len(p.Layers())-1].LayerType().String()]++
		}
	}
	return s
}

type captureRunInfo struct {
	h             *Harness
	subnet        netip.Prefix
	hive, queen   netip.Addr
	pcap          string
	lastHeartbeat int
}

// Two runs at once: each run's capture holds its own hive's heartbeat POSTs
// to its own queen from the connection's first SYN on, no packet with an
// address outside its own subnet, and none of the other run's heartbeats.
func TestCaptureHoldsItsOwnRunOnly(t *testing.T) {
	t.Parallel()
	if why, err := shardSkip(Localhost); err != nil {
		t.Fatal(err)
	} else if why != "" {
		t.Skip(why)
	}
	runs := make([]*captureRunInfo, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := New(context.Background(), Localhost, WithName(fmt.Sprintf("%s-%d", t.Name(), i)), WithLog(t.Logf),
				WithCapture(CaptureOn), WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": captureHeartbeat.String()}))
			runs[i], errs[i] = &captureRunInfo{h: h}, err
		}()
	}
	wg.Wait()
	for i, r := range runs {
		t.Cleanup(func() {
			if t.Failed() && r.h != nil && r.h.docker != nil {
				sum, _ := r.h.CollectArtifacts(context.Background(), ArtifactsDir(r.h.repoDir, fmt.Sprintf("%s-%d", t.Name(), i)), 10)
				t.Log(sum)
			}
			if err := r.h.Close(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	dir := t.TempDir()
	for i, r := range runs {
		r.subnet = r.h.nets[0].subnet
		var err error
		if r.hive, err = r.h.ip("hive-localhost"); err != nil {
			t.Fatal(err)
		}
		if r.queen, err = r.h.ip("queen"); err != nil {
			t.Fatal(err)
		}
		r.pcap = filepath.Join(dir, fmt.Sprintf("run%d.pcap", i))
	}
	if runs[0].subnet.Overlaps(runs[1].subnet) {
		t.Fatalf("the runs share addresses: %s and %s", runs[0].subnet, runs[1].subnet)
	}
	// Wait until each capture holds a few heartbeats: a hive sends one per
	// interval, so 3 need 3 intervals; the deadline allows 40 on a loaded
	// machine.
	const want = 3
	ctx, cancel := context.WithTimeout(context.Background(), 40*want*captureHeartbeat+30*time.Second)
	defer cancel()
	for _, r := range runs {
		for {
			st, err := r.h.WriteCapture(ctx, r.pcap)
			if err != nil {
				t.Fatal(err)
			}
			sum := readCapture(t, r.pcap, r.subnet)
			r.lastHeartbeat = sum.heartbeats[[2]netip.Addr{r.hive, r.queen}]
			if r.lastHeartbeat >= want {
				t.Logf("%s: %d frames (%+v), %d heartbeats %s→%s", r.h.Name(), sum.frames, st, r.lastHeartbeat, r.hive, r.queen)
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: after %v the capture holds %d heartbeat POSTs %s→%s (want %d); it holds %v",
					r.h.Name(), 40*want*captureHeartbeat+30*time.Second, r.lastHeartbeat, r.hive, r.queen, want, sum.heartbeats)
			case <-time.After(captureHeartbeat):
			}
		}
	}
	// Both captures taken again, now that both runs have sent heartbeats
	// for a while: the negative control has had its chance to leak.
	for i, r := range runs {
		other := runs[1-i]
		if _, err := r.h.WriteCapture(ctx, r.pcap); err != nil {
			t.Fatal(err)
		}
		sum := readCapture(t, r.pcap, r.subnet)
		own := [2]netip.Addr{r.hive, r.queen}
		if sum.heartbeats[own] < r.lastHeartbeat {
			t.Errorf("%s: a later capture holds fewer heartbeats (%d) than an earlier one (%d)", r.h.Name(), sum.heartbeats[own], r.lastHeartbeat)
		}
		if n := sum.heartbeats[[2]netip.Addr{other.hive, other.queen}]; n != 0 {
			t.Errorf("%s: the capture holds %d heartbeats of the other run %s", r.h.Name(), n, other.h.Name())
		}
		for k, n := range sum.heartbeats {
			if k != own {
				t.Errorf("%s: %d heartbeat POSTs %s→%s, not the run's hive→queen", r.h.Name(), n, k[0], k[1])
			}
		}
		if len(sum.foreign) > 0 {
			t.Errorf("%s: %d packets with addresses outside %s, first: %s", r.h.Name(), len(sum.foreign), r.subnet, sum.foreign[0])
		}
		if syn := sum.firstToQueen[own]; syn == nil || !syn.SYN || syn.ACK {
			t.Errorf("%s: the first segment %s→%s:8500 in the capture is not the connection's SYN (%+v): the capture started late", r.h.Name(), r.hive, r.queen, syn)
		}
		if len(sum.other) > 0 {
			t.Logf("%s: frames without IPv4 or ARP: %v", r.h.Name(), sum.other)
		}
		for _, ph := range r.h.Phases() {
			if ph.Name == "capture" {
				t.Logf("%s: bring-up waited %v for the capture after compose create", r.h.Name(), ph.Took.Round(time.Millisecond))
			}
		}
	}
}

// The child side of TestCaptureArtifacts: RBEE_CAPTURE_HELPER=fail brings a
// queen up, calls it, then fails; =pass does the same and passes.
//
// Serial: it runs only as a child process, alone in its test binary.
func TestCaptureHelperProcess(t *testing.T) {
	mode := os.Getenv("RBEE_CAPTURE_HELPER")
	if mode == "" {
		t.Skip("helper process for TestCaptureArtifacts")
	}
	h := Start(t, Localhost, WithServices("queen"))
	q := h.MustQueen(t)
	if _, err := q.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mode == "fail" {
		t.Fatal("deliberate failure")
	}
}

// A failed test's artifacts hold capture.pcap with the test's own traffic;
// a passing test leaves none unless RBEE_CAPTURE=always; RBEE_CAPTURE=off
// captures nothing.
func TestCaptureArtifacts(t *testing.T) {
	t.Parallel()
	if why, err := shardSkip(Localhost); err != nil {
		t.Fatal(err)
	} else if why != "" {
		t.Skip(why)
	}
	for _, c := range []struct {
		name, mode, env string
		fails, pcap     bool
	}{
		{"failed", "fail", "", true, true},
		{"passed", "pass", "", false, false},
		{"passed-always", "pass", CaptureAlways, false, true},
		{"failed-off", "fail", CaptureOff, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			art := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCaptureHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), "RBEE_CAPTURE_HELPER="+c.mode, CaptureEnv+"="+c.env, "RBEE_TEST_ARTIFACTS="+art, ShardEnv+"=", "RBEE_KEEP_FAILED=")
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != c.fails {
				t.Fatalf("helper failed=%v (%v), want %v:\n%s", failed, err, c.fails, out)
			}
			pcap := filepath.Join(art, "TestCaptureHelperProcess", CaptureFile)
			_, statErr := os.Stat(pcap)
			if !c.pcap {
				if statErr == nil {
					t.Fatalf("%s exists:\n%s", pcap, out)
				}
				if c.fails && !strings.Contains(string(out), "capture: off") {
					t.Fatalf("the summary does not say the capture is off:\n%s", out)
				}
				return
			}
			if statErr != nil {
				t.Fatalf("%v:\n%s", statErr, out)
			}
			if !strings.Contains(string(out), "capture: "+pcap+" (br-") {
				t.Fatalf("the output does not name the capture:\n%s", out)
			}
			// The queen's address is gone with the stack; its port is not.
			f, err := os.Open(pcap)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := pcapgo.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			toQueen := 0
			for {
				data, _, err := r.ReadPacketData()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
				if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.DstPort == 8500 && bytes.HasPrefix(tcp.Payload, []byte("GET /health ")) {
					toQueen++
				}
			}
			if toQueen == 0 {
				t.Fatalf("%s holds no GET /health to the queen:\n%s", pcap, out)
			}
			// tcpdump reads it too (.ci/run installs it; elsewhere optional).
			if _, err := exec.LookPath("tcpdump"); err != nil {
				t.Logf("no tcpdump on PATH: not checking that it reads %s", pcap)
				return
			}
			td, err := exec.CommandContext(ctx, "tcpdump", "-nn", "-r", pcap).CombinedOutput()
			if err != nil || !strings.Contains(string(td), ".8500: Flags [S]") {
				t.Fatalf("tcpdump -r %s: %v, no SYN to port 8500:\n%s", pcap, err, td)
			}
		})
	}
}
