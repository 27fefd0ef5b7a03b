package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is an AF_PACKET socket bound to one interface in promiscuous mode:
// on a Linux bridge that makes the kernel pass every frame the bridge
// forwards between its ports to the socket, not only the frames for the
// host. It needs CAP_NET_RAW (and CAP_NET_ADMIN for a receive buffer above
// the system limit).
type Socket struct {
	fd      int
	ifname  string
	buf     []byte
	oob     []byte
	dropped atomic.Uint64
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenSocket opens a packet socket on ifname that keeps snaplen bytes of a
// packet and asks for a rcvbuf-byte kernel queue (so that a reader held
// back on a busy machine loses fewer packets).
func OpenSocket(ifname string, snaplen, rcvbuf int) (*Socket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: interface %s: %w", ifname, err)
	}
	// Protocol 0 until bind: a socket with ETH_P_ALL would queue packets
	// of every interface between socket() and bind().
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("capture: packet socket (needs CAP_NET_RAW): %w", err)
	}
	s := &Socket{fd: fd, ifname: ifname, buf: make([]byte, snaplen), oob: make([]byte, unix.CmsgSpace(16))}
	fail := func(what string, err error) (*Socket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: %s on %s: %w", what, ifname, err)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) // capped by rmem_max
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	// The membership ends with the socket: no promiscuous flag is left
	// behind on the bridge when the program dies.
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fail("promiscuous mode", err)
	}
	// Anything queued before the membership is kept: it is this interface's.
	return s, nil
}

// Read waits for the next packet and returns its kernel timestamp, its
// length on the wire and its first snaplen bytes. The bytes are valid until
// the next Read.
func (s *Socket) Read() (time.Time, int, []byte, error) {
	for {
		n, oobn, _, _, err := unix.Recvmsg(s.fd, s.buf, s.oob, unix.MSG_TRUNC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return time.Time{}, 0, nil, fmt.Errorf("capture: read %s: %w", s.ifname, err)
		}
		ts := time.Time{}
		if msgs, err := unix.ParseSocketControlMessage(s.oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
					ts = time.Unix(sec, nsec)
				}
			}
		}
		if ts.IsZero() {
			ts = time.Now()
		}
		// With MSG_TRUNC, n is the packet's full length.
		return ts, n, s.buf[:min(n, len(s.buf))], nil
	}
}

// KernelDropped adds up the packets the kernel dropped for this socket
// because its queue was full (PACKET_STATISTICS counts since the last call).
func (s *Socket) KernelDropped() uint64 {
	if st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		return s.dropped.Add(uint64(st.Drops))
	}
	return s.dropped.Load()
}

// Close closes the socket (ending its promiscuous membership).
func (s *Socket) Close() error { return unix.Close(s.fd) }
