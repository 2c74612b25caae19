package ajp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Packet types. Front end to us: forward request, shutdown, CPing; body
// chunks from the front end carry no type byte. Us to front end: the rest.
const (
	typeForwardRequest = 2
	typeSendBodyChunk  = 3
	typeSendHeaders    = 4
	typeEndResponse    = 5
	typeGetBodyChunk   = 6
	typeShutdown       = 7
	typeCPongReply     = 9
	typeCPing          = 10
)

const (
	packetHeaderLen   = 4 // magic and length
	defaultPacketSize = 8192
	maxPacketSize     = 65536
	nullString        = 0xFFFF // string length meaning "absent"
)

var (
	errSignature = errors.New("packet does not start with 0x12 0x34")
	errMalformed = errors.New("malformed packet")
)

// readPacket reads one front-end packet into buf and returns its payload. A
// payload longer than len(buf)-4 is refused before any of it is read.
func readPacket(br *bufio.Reader, buf []byte) ([]byte, error) {
	var h [packetHeaderLen]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, err
	}
	if h[0] != 0x12 || h[1] != 0x34 {
		return nil, fmt.Errorf("%w: % x", errSignature, h[:2])
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if n > len(buf)-packetHeaderLen {
		return nil, fmt.Errorf("packet of %d bytes over the %d-byte limit", n, len(buf)-packetHeaderLen)
	}
	if _, err := io.ReadFull(br, buf[:n]); err != nil {
		return nil, fmt.Errorf("packet body: %w", noEOF(err))
	}
	return buf[:n], nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decoder reads AJP primitives from a payload; the first error sticks and
// every later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short byte")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) int() int {
	if len(d.b) < 2 {
		d.fail("short integer")
		return 0
	}
	n := int(binary.BigEndian.Uint16(d.b))
	d.b = d.b[2:]
	return n
}

// peekByte returns the next byte without consuming it.
func (d *decoder) peekByte() byte {
	if len(d.b) < 1 {
		d.fail("short byte")
		return 0
	}
	return d.b[0]
}

// string reads a length-prefixed, NUL-terminated string; ok is false for
// the null string (length 0xFFFF).
func (d *decoder) string() (s string, ok bool) {
	n := d.int()
	if d.err != nil || n == nullString {
		return "", false
	}
	if len(d.b) < n+1 {
		d.fail("string runs past the packet")
		return "", false
	}
	if d.b[n] != 0 {
		d.fail("string without NUL terminator")
		return "", false
	}
	s = string(d.b[:n])
	d.b = d.b[n+1:]
	return s, true
}

// encoder builds one packet to the front end in a reused buffer.
type encoder struct {
	b []byte
}

func (e *encoder) start(typ byte) {
	e.b = append(e.b[:0], 'A', 'B', 0, 0, typ)
}

func (e *encoder) byte(c byte) { e.b = append(e.b, c) }

func (e *encoder) int(n int) { e.b = binary.BigEndian.AppendUint16(e.b, uint16(n)) }

func (e *encoder) string(s string) {
	e.int(len(s))
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
}

// packet fills in the length and returns the finished packet.
func (e *encoder) packet() []byte {
	binary.BigEndian.PutUint16(e.b[2:], uint16(len(e.b)-packetHeaderLen))
	return e.b
}
