// Command rbee-capture records the packets of network interfaces into a
// bounded ring and hands them out as a pcap file. The harness runs it in a
// helper container on the Docker host's network namespace, one per run,
// capturing that run's bridges:
//
//	rbee-capture [-limit BYTES] [-snaplen BYTES] [-sock PATH] [-w FILE] IFACE...
//	rbee-capture dump [-sock PATH] > capture.pcap
//
// The first form prints "rbee-capture: capturing on IFACE..." once every
// interface's socket is open (packets from then on are kept), keeps the
// newest packets within -limit bytes of pcap records, and serves the ring
// on a unix socket. SIGTERM or SIGINT ends it (after writing the ring to
// -w when given). The dump form writes the running capture's ring to
// stdout as a pcap file and its counters to stderr as one JSON line.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rbee-dev/rbee/xtask/capture"
)

const defaultSock = "/run/rbee-capture.sock"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "dump" {
		if err := dump(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "rbee-capture dump:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rbee-capture:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("rbee-capture", flag.ContinueOnError)
	limit := fs.Int("limit", 16<<20, "bytes of pcap records the ring holds (the oldest packets are dropped)")
	snaplen := fs.Int("snaplen", 65535, "bytes kept of each packet")
	rcvbuf := fs.Int("rcvbuf", 8<<20, "kernel receive queue per interface, bytes")
	sock := fs.String("sock", defaultSock, "unix socket that serves the ring to `rbee-capture dump`")
	out := fs.String("w", "", "write the ring to this file when stopped")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ifaces := fs.Args()
	if len(ifaces) == 0 {
		return errors.New("no interface given (usage: rbee-capture [flags] IFACE...)")
	}
	ring, err := capture.NewRing(*limit, *snaplen)
	if err != nil {
		return err
	}
	var socks []*capture.Socket
	for _, ifn := range ifaces {
		s, err := capture.OpenSocket(ifn, *snaplen, *rcvbuf)
		if err != nil {
			return err
		}
		socks = append(socks, s)
	}
	readErr := make(chan error, len(socks))
	for _, s := range socks {
		go func() {
			for {
				ts, n, data, err := s.Read()
				if err != nil {
					readErr <- err
					return
				}
				ring.Add(ts, n, data)
			}
		}()
	}
	stats := func() capture.Stats {
		st := ring.Stats()
		for _, s := range socks {
			st.KernelDropped += s.KernelDropped()
		}
		return st
	}
	_ = os.Remove(*sock)
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *sock, err)
	}
	go serve(ln, ring, stats)
	fmt.Printf("rbee-capture: capturing on %s (ring %d bytes, snaplen %d)\n", strings.Join(ifaces, ", "), *limit, *snaplen)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Printf("rbee-capture: %v: stopping (%s)\n", s, describe(stats()))
	case err := <-readErr:
		return err
	}
	if *out != "" {
		return writeFile(*out, ring)
	}
	return nil
}

// serve answers each connection with one JSON line of counters followed by
// the ring as a pcap file.
func serve(ln net.Listener, ring *capture.Ring, stats func() capture.Stats) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			w := bufio.NewWriterSize(c, 1<<16)
			b, _ := json.Marshal(stats())
			w.Write(append(b, '\n'))
			if _, err := ring.WriteTo(w); err != nil {
				fmt.Fprintln(os.Stderr, "rbee-capture: dump:", err)
				return
			}
			if err := w.Flush(); err != nil {
				fmt.Fprintln(os.Stderr, "rbee-capture: dump:", err)
			}
		}()
	}
}

func dump(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rbee-capture dump", flag.ContinueOnError)
	sock := fs.String("sock", defaultSock, "unix socket of the running rbee-capture")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.Dial("unix", *sock)
	if err != nil {
		return fmt.Errorf("no capture running at %s: %w", *sock, err)
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 1<<16)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read counters: %w", err)
	}
	var st capture.Stats
	if err := json.Unmarshal(line, &st); err != nil {
		return fmt.Errorf("counters %q: %w", line, err)
	}
	n, err := io.Copy(stdout, r)
	if err != nil {
		return fmt.Errorf("copy pcap: %w", err)
	}
	if n < capture.FileHeaderSize {
		return fmt.Errorf("short pcap: %d bytes", n)
	}
	_, err = stderr.Write(line)
	return err
}

func writeFile(path string, ring *capture.Ring) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if _, err := ring.WriteTo(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func describe(st capture.Stats) string {
	return fmt.Sprintf("%d packets held, %d bytes, %d seen, %d dropped by the ring, %d by the kernel", st.Packets, st.Bytes, st.Seen, st.Dropped, st.KernelDropped)
}
