package model

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"unicode/utf8"
)

// File format, version 1 (integers little-endian; "uvarint" is
// encoding/binary's unsigned varint):
//
//	offset 0   [8]byte  magic "RBEENGRM"
//	offset 8   uint16   version (1)
//	offset 10  uint16   flags (0; reserved)
//	offset 12  uint64   payload length P
//	offset 20  [P]byte  payload
//	offset 20+P uint32  CRC-32C (Castagnoli) of the payload
//
// Payload:
//
//	uvarint order (1..MaxOrder)
//	uvarint len, name bytes   (UTF-8, at most 1024 bytes)
//	uvarint len, source bytes (UTF-8, at most 1024 bytes)
//	uvarint number of contexts
//	per context, in strictly increasing byte order of the key:
//	    uvarint len, key bytes (UTF-8, at most order characters)
//	    uvarint number of next characters (>= 1)
//	    per next character, in strictly increasing code point order:
//	        uvarint code point, uvarint count (1..2^32-1)
//	uvarint padding length, padding bytes (ignored)
//
// The payload length in the header lets a reader tell a truncated file from
// a corrupt one; the checksum catches flipped bytes.

// Magic is the first 8 bytes of every model file.
const Magic = "RBEENGRM"

// Version is the file format version this package writes and reads.
const Version = 1

// Limits a reader enforces, so a hostile file cannot make it allocate much.
const (
	MaxFileBytes = 256 << 20
	maxText      = 1024
	headerLen    = 20
)

// Errors returned (wrapped) by Read and Load; test with errors.Is.
var (
	ErrNotModel  = errors.New("not an rbee n-gram model file (bad magic)")
	ErrVersion   = errors.New("unsupported model file version")
	ErrTruncated = errors.New("model file is truncated")
	ErrCorrupt   = errors.New("model file is corrupt")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteTo writes the model in the file format above. The output is
// deterministic: the same model always gives the same bytes.
func (m *Model) WriteTo(w io.Writer) (int64, error) {
	if len(m.Name) > maxText || len(m.Source) > maxText {
		return 0, fmt.Errorf("model name and source must be at most %d bytes", maxText)
	}
	if m.Padding < 0 || m.Padding > MaxFileBytes {
		return 0, fmt.Errorf("padding %d out of range 0..%d", m.Padding, MaxFileBytes)
	}
	order := m.order
	if order < 1 {
		order = 1
	}
	var p bytes.Buffer
	putU := func(v uint64) { p.Write(binary.AppendUvarint(nil, v)) }
	putS := func(s string) { putU(uint64(len(s))); p.WriteString(s) }
	putU(uint64(order))
	putS(m.Name)
	putS(m.Source)
	keys := make([]string, 0, len(m.table))
	for k := range m.table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	putU(uint64(len(keys)))
	for _, k := range keys {
		d := m.table[k]
		putS(k)
		putU(uint64(len(d.runes)))
		for i, r := range d.runes {
			putU(uint64(r))
			putU(uint64(d.counts[i]))
		}
	}
	putU(uint64(m.Padding))
	// Padding is pseudo-random (fixed seed) so the file does not compress
	// away on the wire; its content is ignored on read.
	if m.Padding > 0 {
		rng := rand.New(rand.NewPCG(uint64(m.Padding), seedStream))
		buf := make([]byte, 8)
		for n := int64(0); n < m.Padding; n += 8 {
			binary.LittleEndian.PutUint64(buf, rng.Uint64())
			p.Write(buf[:min(8, m.Padding-n)])
		}
	}

	hdr := make([]byte, headerLen)
	copy(hdr, Magic)
	binary.LittleEndian.PutUint16(hdr[8:], Version)
	binary.LittleEndian.PutUint16(hdr[10:], 0)
	binary.LittleEndian.PutUint64(hdr[12:], uint64(p.Len()))
	sum := binary.LittleEndian.AppendUint32(nil, crc32.Checksum(p.Bytes(), castagnoli))

	bw := bufio.NewWriter(w)
	var total int64
	for _, b := range [][]byte{hdr, p.Bytes(), sum} {
		n, err := bw.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, bw.Flush()
}

// MarshalBinary returns the model's file bytes.
func (m *Model) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	_, err := m.WriteTo(&b)
	return b.Bytes(), err
}

// Save writes the model to path (via a temporary file and rename, so a
// crash never leaves a half-written model under path).
func (m *Model) Save(path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := m.WriteTo(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads a model file; errors name the path and what is wrong.
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	defer f.Close()
	m, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	// A file (unlike a stream) can be checked for data after the model.
	var extra [1]byte
	if k, _ := f.Read(extra[:]); k > 0 {
		return nil, fmt.Errorf("load model %s: %w: trailing data after the checksum", path, ErrCorrupt)
	}
	return m, nil
}

// Read parses one model file from r, reading exactly its bytes. Errors wrap ErrNotModel, ErrVersion,
// ErrTruncated or ErrCorrupt.
func Read(r io.Reader) (*Model, error) {
	hdr := make([]byte, headerLen)
	n, err := io.ReadFull(r, hdr)
	if k := min(n, len(Magic)); string(hdr[:k]) != Magic[:k] {
		return nil, ErrNotModel
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrTruncated, n, headerLen)
		}
		return nil, err
	}
	if v := binary.LittleEndian.Uint16(hdr[8:]); v != Version {
		return nil, fmt.Errorf("%w %d (this build reads version %d)", ErrVersion, v, Version)
	}
	if f := binary.LittleEndian.Uint16(hdr[10:]); f != 0 {
		return nil, fmt.Errorf("%w: unknown header flags %#x", ErrCorrupt, f)
	}
	plen := binary.LittleEndian.Uint64(hdr[12:])
	if plen > MaxFileBytes {
		return nil, fmt.Errorf("%w: payload length %d over the limit of %d", ErrCorrupt, plen, MaxFileBytes)
	}
	// ReadAll grows with the data actually present, so a lying length
	// cannot force a big allocation.
	rest, err := io.ReadAll(io.LimitReader(r, int64(plen)+4))
	if err != nil {
		return nil, err
	}
	if uint64(len(rest)) < plen+4 {
		return nil, fmt.Errorf("%w: header says %d bytes, file has %d", ErrTruncated, headerLen+plen+4, headerLen+len(rest))
	}
	payload := rest[:plen]
	want := binary.LittleEndian.Uint32(rest[plen:])
	if got := crc32.Checksum(payload, castagnoli); got != want {
		return nil, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorrupt, want, got)
	}
	m, err := parsePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return m, nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) uvarint(what string, maxV uint64) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return 0, fmt.Errorf("bad %s at payload offset %d", what, d.off)
	}
	if v > maxV {
		return 0, fmt.Errorf("%s %d at payload offset %d is over the limit of %d", what, v, d.off, maxV)
	}
	d.off += n
	return v, nil
}

func (d *decoder) bytes(what string, maxLen uint64) ([]byte, error) {
	n, err := d.uvarint(what+" length", maxLen)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("%s of %d bytes runs past the payload end", what, n)
	}
	b := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

func (d *decoder) text(what string) (string, error) {
	b, err := d.bytes(what, maxText)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8", what)
	}
	return string(b), nil
}

func parsePayload(b []byte) (*Model, error) {
	d := &decoder{b: b}
	order, err := d.uvarint("order", MaxOrder)
	if err != nil {
		return nil, err
	}
	if order < 1 {
		return nil, fmt.Errorf("order must be at least 1")
	}
	m := &Model{order: int(order)}
	if m.Name, err = d.text("name"); err != nil {
		return nil, err
	}
	if m.Source, err = d.text("source"); err != nil {
		return nil, err
	}
	// Every context takes at least 4 bytes, every next entry at least 2:
	// bounding counts by the bytes left keeps allocations proportional to
	// the input.
	nctx, err := d.uvarint("context count", uint64(len(b)-d.off)/4)
	if err != nil {
		return nil, err
	}
	m.table = make(map[string]*dist, nctx)
	prevKey := ""
	for i := uint64(0); i < nctx; i++ {
		kb, err := d.bytes("context key", uint64(4*order))
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(kb) || utf8.RuneCount(kb) > int(order) {
			return nil, fmt.Errorf("context %d: key is not at most %d UTF-8 characters", i, order)
		}
		key := string(kb)
		if i > 0 && key <= prevKey {
			return nil, fmt.Errorf("context %d: keys out of order", i)
		}
		prevKey = key
		nn, err := d.uvarint("next count", uint64(len(b)-d.off)/2)
		if err != nil {
			return nil, err
		}
		if nn == 0 {
			return nil, fmt.Errorf("context %d has no next characters", i)
		}
		dd := &dist{runes: make([]rune, nn), counts: make([]uint32, nn)}
		for j := range nn {
			r, err := d.uvarint("code point", utf8.MaxRune)
			if err != nil {
				return nil, err
			}
			if !utf8.ValidRune(rune(r)) {
				return nil, fmt.Errorf("context %d: invalid code point %#x", i, r)
			}
			if j > 0 && rune(r) <= dd.runes[j-1] {
				return nil, fmt.Errorf("context %d: next characters out of order", i)
			}
			c, err := d.uvarint("count", 1<<32-1)
			if err != nil {
				return nil, err
			}
			if c == 0 {
				return nil, fmt.Errorf("context %d: zero count", i)
			}
			dd.runes[j], dd.counts[j] = rune(r), uint32(c)
		}
		m.table[key] = dd
	}
	pad, err := d.uvarint("padding length", uint64(len(b)-d.off))
	if err != nil {
		return nil, err
	}
	d.off += int(pad)
	m.Padding = int64(pad)
	if d.off != len(b) {
		return nil, fmt.Errorf("%d unexpected bytes after the padding", len(b)-d.off)
	}
	return m, nil
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
