package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// frame is a packet of n bytes whose first 8 bytes carry seq.
func frame(seq, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint64(b, uint64(seq))
	for i := 8; i < n; i++ {
		b[i] = byte(seq + i)
	}
	return b
}

type record struct {
	seq             int
	capLen, origLen int
	ts              time.Time
}

// readPcap parses a pcap file with gopacket's reader and returns its records.
func readPcap(t *testing.T, b []byte) (uint32, layers.LinkType, []record) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a pcap file: %v", err)
	}
	var out []record
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", len(out), err)
		}
		if len(data) != ci.CaptureLength {
			t.Fatalf("record %d: %d bytes, header says %d", len(out), len(data), ci.CaptureLength)
		}
		out = append(out, record{seq: int(binary.BigEndian.Uint64(data)), capLen: ci.CaptureLength, origLen: ci.Length, ts: ci.Timestamp})
	}
	return r.Snaplen(), r.LinkType(), out
}

func TestRingBoundHoldsAndKeepsTheNewest(t *testing.T) {
	const limit, snaplen = 64 << 10, 1500
	r, err := NewRing(limit, snaplen)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	sizes := []int{60, 1500, 400, 9000, 1499, 64} // 9000 is cut to the snaplen
	const total = 2000
	for i := range total {
		n := sizes[i%len(sizes)]
		r.Add(t0.Add(time.Duration(i)*time.Millisecond), n, frame(i, n))
		if st := r.Stats(); st.Bytes > FileHeaderSize+limit {
			t.Fatalf("after %d packets the ring holds %d bytes, over its limit %d", i+1, st.Bytes, limit)
		}
	}
	var buf bytes.Buffer
	n, err := r.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if int(n) != buf.Len() || buf.Len() != st.Bytes {
		t.Fatalf("WriteTo wrote %d (buffer %d), Stats says %d bytes", n, buf.Len(), st.Bytes)
	}
	if buf.Len() > FileHeaderSize+limit || buf.Len() < limit-2*(RecordOverhead+snaplen) {
		t.Fatalf("pcap is %d bytes; want just under %d", buf.Len(), FileHeaderSize+limit)
	}
	sl, lt, recs := readPcap(t, buf.Bytes())
	if sl != snaplen || lt != layers.LinkTypeEthernet {
		t.Fatalf("header: snaplen %d link type %v", sl, lt)
	}
	if len(recs) != st.Packets || st.Seen != total || st.Dropped != uint64(total-len(recs)) {
		t.Fatalf("%d records; stats %+v", len(recs), st)
	}
	// The newest packets, in order, ending with the last one added.
	for i, rc := range recs {
		want := total - len(recs) + i
		if rc.seq != want {
			t.Fatalf("record %d is packet %d, want %d (oldest dropped first)", i, rc.seq, want)
		}
		orig := sizes[want%len(sizes)]
		if rc.origLen != orig || rc.capLen != min(orig, snaplen) {
			t.Fatalf("packet %d: captured %d of %d bytes, want %d of %d", want, rc.capLen, rc.origLen, min(orig, snaplen), orig)
		}
		if !rc.ts.Equal(t0.Add(time.Duration(want) * time.Millisecond)) {
			t.Fatalf("packet %d: timestamp %v", want, rc.ts)
		}
	}
	if recs[len(recs)-1].seq != total-1 {
		t.Fatal("the last packet added is not in the capture")
	}
}

func TestRingEmptyIsAValidPcap(t *testing.T) {
	r, err := NewRing(1<<20, 65535)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != FileHeaderSize {
		t.Fatalf("empty capture is %d bytes", buf.Len())
	}
	if _, _, recs := readPcap(t, buf.Bytes()); len(recs) != 0 {
		t.Fatalf("empty ring wrote %d records", len(recs))
	}
}

func TestRingSnapshotIsUnaffectedByLaterPackets(t *testing.T) {
	r, err := NewRing(4*(RecordOverhead+100), 100)
	if err != nil {
		t.Fatal(err)
	}
	buf := frame(1, 100)
	r.Add(time.Now(), 100, buf)
	buf[0] = 0xff // the ring holds a copy
	var out bytes.Buffer
	if _, err := r.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	if _, _, recs := readPcap(t, out.Bytes()); len(recs) != 1 || recs[0].seq != 1 {
		t.Fatalf("records %+v", recs)
	}
}

func TestNewRingRejectsBadBounds(t *testing.T) {
	for _, c := range []struct{ limit, snaplen int }{{1 << 20, 10}, {1 << 20, 1 << 20}, {1000, 1500}} {
		if _, err := NewRing(c.limit, c.snaplen); err == nil {
			t.Errorf("NewRing(%d, %d) accepted", c.limit, c.snaplen)
		}
	}
}
