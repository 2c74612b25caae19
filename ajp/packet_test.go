package ajp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/internal/conntest"
)

// hdr is a request header: code (0xA001..) or name.
type hdr struct {
	code        int
	name, value string
}

// attr is a request attribute; name is set for req_attribute (0x0A).
type attr struct {
	code        byte
	name, value string
}

// request describes a Forward Request for the tests' encoder.
type request struct {
	method                          byte
	proto, uri, raddr, rhost, sname string
	port                            int
	ssl                             bool
	headers                         []hdr
	attrs                           []attr
	nullURI                         bool
}

func get(uri string, headers ...hdr) request {
	return request{method: 2, proto: "HTTP/1.1", uri: uri, raddr: "192.0.2.1", sname: "example.com", port: 80,
		headers: append([]hdr{{0xA00B, "", "example.com"}}, headers...),
		attrs:   []attr{{attrReqAttribute, "AJP_REMOTE_PORT", "5555"}}}
}

func post(uri string, n int, headers ...hdr) request {
	r := get(uri, append([]hdr{{0xA008, "", fmt.Sprint(n)}}, headers...)...)
	r.method = 4
	return r
}

func (r request) with(a ...attr) request {
	r.attrs = append(append([]attr{}, r.attrs...), a...)
	return r
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	b = append(b, s...)
	return append(b, 0)
}

// packet frames a payload as the front end does.
func packet(payload []byte) []byte {
	b := []byte{0x12, 0x34, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	return append(b, payload...)
}

func (r request) payload() []byte {
	b := []byte{typeForwardRequest, r.method}
	b = appendString(b, r.proto)
	if r.nullURI {
		b = append(b, 0xFF, 0xFF)
	} else {
		b = appendString(b, r.uri)
	}
	b = appendString(b, r.raddr)
	b = appendString(b, r.rhost)
	b = appendString(b, r.sname)
	b = binary.BigEndian.AppendUint16(b, uint16(r.port))
	if r.ssl {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.headers)))
	for _, h := range r.headers {
		if h.code != 0 {
			b = binary.BigEndian.AppendUint16(b, uint16(h.code))
		} else {
			b = appendString(b, h.name)
		}
		b = appendString(b, h.value)
	}
	for _, a := range r.attrs {
		b = append(b, a.code)
		switch a.code {
		case attrReqAttribute:
			b = appendString(b, a.name)
			b = appendString(b, a.value)
		case attrSSLKeySize:
			var n uint16
			fmt.Sscan(a.value, &n)
			b = binary.BigEndian.AppendUint16(b, n)
		default:
			b = appendString(b, a.value)
		}
	}
	return append(b, attrEnd)
}

func (r request) bytes() []byte { return packet(r.payload()) }

// chunk is a body packet from the front end; chunk("") is the end marker.
func chunk(data string) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(len(data)))
	return packet(append(p, data...))
}

var cping = []byte{0x12, 0x34, 0, 1, typeCPing}

func cat(parts ...[]byte) string { return string(bytes.Join(parts, nil)) }

// describe decodes what we sent into one line per packet, for readable
// tables: CPONG, GET n, HEADERS status msg [k: v ...], BODY "…", END reuse.
func describe(out string) string {
	var lines []string
	b := []byte(out)
	for len(b) > 0 {
		if len(b) < 4 || b[0] != 'A' || b[1] != 'B' {
			return strings.Join(append(lines, fmt.Sprintf("GARBAGE %q", b)), "\n")
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+n || n == 0 {
			return strings.Join(append(lines, fmt.Sprintf("SHORT %q", b)), "\n")
		}
		p := b[4 : 4+n]
		b = b[4+n:]
		d := &decoder{b: p[1:]}
		switch p[0] {
		case typeCPongReply:
			lines = append(lines, "CPONG")
		case typeGetBodyChunk:
			lines = append(lines, fmt.Sprintf("GET %d", d.int()))
		case typeEndResponse:
			lines = append(lines, fmt.Sprintf("END %d", d.byte()))
		case typeSendBodyChunk:
			k := d.int()
			if len(d.b) != k+1 || d.b[k] != 0 {
				lines = append(lines, fmt.Sprintf("BADCHUNK %q", p))
				continue
			}
			lines = append(lines, fmt.Sprintf("BODY %q", d.b[:k]))
		case typeSendHeaders:
			status := d.int()
			msg, _ := d.string()
			var hs []string
			for range d.int() {
				var name string
				if d.peekByte() == 0xA0 {
					c := d.int()
					for k, v := range responseHeaders {
						if v == c {
							name = k
						}
					}
				} else {
					name, _ = d.string()
				}
				v, _ := d.string()
				hs = append(hs, name+": "+v)
			}
			if d.err != nil || len(d.b) != 0 {
				lines = append(lines, fmt.Sprintf("BADHEADERS %q", p))
				continue
			}
			lines = append(lines, fmt.Sprintf("HEADERS %d %s [%s]", status, msg, strings.Join(hs, ", ")))
		default:
			lines = append(lines, fmt.Sprintf("UNKNOWN %q", p))
		}
	}
	return strings.Join(lines, "\n")
}

// serveRaw runs one connection of s on in and returns everything s wrote.
func serveRaw(s *Server, in string) string {
	fc := conntest.New(in)
	if err := s.cs.ServeConn(context.Background(), fc, s.newConn(fc)); err != nil {
		panic(err)
	}
	return fc.Out.String()
}

// The wire format of our packets, byte for byte.
func TestPacketBytes(t *testing.T) {
	s := &Server{Handler: okHandler}
	got := serveRaw(s, cat(cping, get("/").bytes()))
	want := "AB\x00\x01\x09" + // CPong
		"AB\x00\x57\x04\x00\xc8\x00\x02OK\x00\x00\x04" + // SEND_HEADERS 200 OK, 4 headers
		"\xa0\x03\x00\x012\x00" + // Content-Length: 2
		"\xa0\x01\x00\x0atext/plain\x00" + // Content-Type
		"\xa0\x07\x00\x03a=1\x00" + // Set-Cookie
		"\x00\x05X-Foo\x00\x00\x25" + strings.Repeat("x", 37) + "\x00" +
		"AB\x00\x06\x03\x00\x02ok\x00" + // SEND_BODY_CHUNK
		"AB\x00\x02\x05\x01" // END_RESPONSE reuse
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q\n%s", got, want, describe(got))
	}
}

func TestReadPacket_AJP01_AJP02(t *testing.T) {
	limit := make([]byte, 8192)
	for _, tt := range []struct {
		id, in string
		ok     bool
	}{
		{"AJP-01 wrong magic", "AB\x00\x01\x0a", false},
		{"AJP-01 http request", "GET / HTTP/1.1\r\n\r\n", false},
		{"AJP-02 one over the limit", "\x12\x34\x1f\xfd" + strings.Repeat("x", 8189), false},
		{"AJP-02 exactly the limit", "\x12\x34\x1f\xfc" + strings.Repeat("x", 8188), true},
		{"short header", "\x12\x34\x00", false},
		{"short payload", "\x12\x34\x00\x05abc", false},
		{"empty payload", "\x12\x34\x00\x00", true},
	} {
		t.Run(tt.id, func(t *testing.T) {
			p, err := readPacket(bufio.NewReader(strings.NewReader(tt.in)), limit)
			if (err == nil) != tt.ok {
				t.Fatalf("got %d bytes, %v; want ok=%t", len(p), err, tt.ok)
			}
			if err == nil && string(packet(p)) != tt.in {
				t.Fatalf("re-framed %q differs", packet(p))
			}
		})
	}
}

func FuzzPacket(f *testing.F) {
	f.Add(cping)
	f.Add(get("/").bytes())
	f.Add([]byte("\x12\x34\x1f\xfd"))
	f.Add(chunk("abc"))
	f.Fuzz(func(t *testing.T, in []byte) {
		buf := make([]byte, 64)
		br := bufio.NewReader(bytes.NewReader(in))
		for {
			p, err := readPacket(br, buf)
			if err != nil {
				return
			}
			if len(p) > 60 {
				t.Fatalf("payload of %d bytes over the 60-byte limit", len(p))
			}
		}
	})
}
