// Package capture keeps the newest packets seen on network interfaces in a
// bounded ring and writes them as a pcap file (libpcap format, Ethernet
// link type) that tcpdump -r and Wireshark open. It is the library of
// rbee-capture, the program the harness runs next to a test's networks.
package capture

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// RecordOverhead is what one packet costs in a pcap file besides its bytes:
// the per-record header (timestamp, captured and original length).
const RecordOverhead = 16

// FileHeaderSize is the size of a pcap file's global header.
const FileHeaderSize = 24

// packet is one captured frame. data is never changed after Add.
type packet struct {
	ts      time.Time
	origLen int // length on the wire (≥ len(data) when truncated by snaplen)
	data    []byte
}

// Ring holds the newest packets whose pcap records (header + bytes) fit in
// limit bytes; adding a packet drops the oldest ones until it fits. It is
// safe for concurrent use.
type Ring struct {
	limit   int
	snaplen int

	mu      sync.Mutex
	pkts    []packet // pkts[head:] are held, oldest first
	head    int
	size    int // sum of RecordOverhead+len(data) over pkts[head:]
	seen    uint64
	dropped uint64 // pushed out (or too big to hold at all)
}

// NewRing returns a ring that holds at most limit bytes of pcap records and
// keeps at most snaplen bytes of each packet.
func NewRing(limit, snaplen int) (*Ring, error) {
	if snaplen < 64 || snaplen > 262144 {
		return nil, fmt.Errorf("capture: snaplen %d: want 64…262144 bytes", snaplen)
	}
	if limit < RecordOverhead+snaplen {
		return nil, fmt.Errorf("capture: ring limit %d bytes holds not even one packet of snaplen %d (+%d header)", limit, snaplen, RecordOverhead)
	}
	return &Ring{limit: limit, snaplen: snaplen}, nil
}

// Snaplen is the most bytes of one packet the ring keeps.
func (r *Ring) Snaplen() int { return r.snaplen }

// Add copies data (cut to the snaplen) into the ring. origLen is the
// packet's length on the wire; it is raised to len(data) when smaller.
func (r *Ring) Add(ts time.Time, origLen int, data []byte) {
	if len(data) > r.snaplen {
		data = data[:r.snaplen]
	}
	if origLen < len(data) {
		origLen = len(data)
	}
	p := packet{ts: ts, origLen: origLen, data: append([]byte(nil), data...)}
	cost := RecordOverhead + len(p.data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	for r.size+cost > r.limit && r.head < len(r.pkts) {
		r.size -= RecordOverhead + len(r.pkts[r.head].data)
		r.pkts[r.head] = packet{} // let the bytes go
		r.head++
		r.dropped++
	}
	// Compact once the dropped prefix is as long as what is held, so the
	// backing array stays within twice the packets held.
	if r.head > 0 && r.head >= len(r.pkts)-r.head {
		n := copy(r.pkts, r.pkts[r.head:])
		clear(r.pkts[n:])
		r.pkts = r.pkts[:n]
		r.head = 0
	}
	r.pkts = append(r.pkts, p)
	r.size += cost
}

// Stats describes a ring's content.
type Stats struct {
	Packets int    `json:"packets"` // held now
	Bytes   int    `json:"bytes"`   // pcap size of what is held, file header included
	Seen    uint64 `json:"seen"`    // added since the start
	Dropped uint64 `json:"dropped"` // pushed out by newer packets
	// KernelDropped is set by the capturing program: packets the kernel
	// dropped because the reader fell behind (PACKET_STATISTICS).
	KernelDropped uint64 `json:"kernel_dropped"`
}

func (r *Ring) statsLocked() Stats {
	return Stats{Packets: len(r.pkts) - r.head, Bytes: FileHeaderSize + r.size, Seen: r.seen, Dropped: r.dropped}
}

// Stats returns the ring's counters.
func (r *Ring) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statsLocked()
}

// WriteTo writes the held packets as a pcap file (microsecond timestamps,
// Ethernet link type), oldest first. Packets added while it writes are not
// included. It implements io.WriterTo.
func (r *Ring) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	held := append([]packet(nil), r.pkts[r.head:]...)
	r.mu.Unlock()
	cw := &countWriter{w: w}
	pw := pcapgo.NewWriter(cw)
	if err := pw.WriteFileHeader(uint32(r.snaplen), layers.LinkTypeEthernet); err != nil {
		return cw.n, fmt.Errorf("capture: write pcap header: %w", err)
	}
	for _, p := range held {
		ci := gopacket.CaptureInfo{Timestamp: p.ts, CaptureLength: len(p.data), Length: p.origLen}
		if err := pw.WritePacket(ci, p.data); err != nil {
			return cw.n, fmt.Errorf("capture: write pcap record: %w", err)
		}
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
