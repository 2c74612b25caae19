package ajp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fcgishim/fcgishim/internal/connserver"
)

// conn is one AJP connection, serving requests one after another.
type conn struct {
	connserver.Conn
	srv        *Server
	rwc        net.Conn
	packetSize int

	br     *bufio.Reader
	buf    []byte // packet payloads from the front end
	broken bool   // out of step with the front end: must close

	wmu      sync.Mutex // bw: handler writes and GET_BODY_CHUNK may race
	bw       *bufio.Writer
	enc      encoder
	chunkBuf []byte // reused response body buffer
}

// Largest body chunk we ask for (packet minus header and chunk length) and
// send (also minus type byte and trailing NUL).
func (c *conn) maxChunk() int { return c.packetSize - packetHeaderLen - 2 }

func (c *conn) Serve(ctx context.Context) {
	s := c.srv
	c.packetSize = s.packetSize()
	c.br = bufio.NewReaderSize(c.rwc, c.packetSize)
	c.buf = make([]byte, c.packetSize)
	c.bw = bufio.NewWriterSize(c.rwc, c.packetSize)
	c.chunkBuf = make([]byte, 0, c.packetSize-packetHeaderLen-4)
	for {
		if !c.SetIdle() {
			return
		}
		if s.IdleTimeout > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		} else {
			c.rwc.SetReadDeadline(time.Time{})
		}
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !c.SetActive() {
			return
		}
		if s.HeaderTimeout > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(s.HeaderTimeout))
		}
		p, err := readPacket(c.br, c.buf)
		if err != nil {
			s.log().Info("ajp: read packet", "remote", c.rwc.RemoteAddr(), "err", noEOF(err))
			return // AJP-01, AJP-02: bad signature or too long
		}
		c.rwc.SetReadDeadline(time.Time{})
		switch {
		case len(p) == 1 && p[0] == typeCPing:
			if c.Draining() {
				return // AJP-03: draining, do not promise more
			}
			if c.writePacket([]byte{'A', 'B', 0, 1, typeCPongReply}) != nil || c.flush() != nil {
				return
			}
		case len(p) > 0 && p[0] == typeForwardRequest:
			if !c.serveRequest(ctx, p) {
				return
			}
		default:
			// AJP-04: Shutdown (7) is never acted on; it, body chunks out of
			// turn and unknown types all end the connection.
			s.log().Info("ajp: unexpected packet", "remote", c.rwc.RemoteAddr(), "len", len(p))
			return
		}
	}
}

// serveRequest serves one forward request and reports whether the
// connection may carry the next one.
func (c *conn) serveRequest(ctx context.Context, p []byte) bool {
	s := c.srv
	fr, err := decodeForwardRequest(p)
	if err != nil {
		s.log().Info("ajp: bad forward request", "remote", c.rwc.RemoteAddr(), "err", err)
		c.refuse(http.StatusBadRequest) // AJP-09
		return false
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := c.newRequest(ctx, fr)
	if err != nil {
		s.log().Info("ajp: request refused", "remote", c.rwc.RemoteAddr(), "uri", fr.uri, "err", err)
		status := http.StatusBadRequest
		var re *requestError
		if errors.As(err, &re) {
			status = re.status
		}
		c.refuse(status)
		return false
	}
	b := req.Body.(*body)
	w := newResponse(c, req)
	ok := connserver.RunHandler(s.Handler, w, req, s.log(), "ajp")
	inStep := b.finish()
	if !ok {
		return false // panicked after the headers went out: no END_RESPONSE
	}
	reuse := inStep && !c.Draining()
	if err := w.finish(reuse); err != nil {
		s.log().Info("ajp: write response", "remote", c.rwc.RemoteAddr(), "err", err)
		return false
	}
	if !reuse {
		connserver.LingerClose(c.rwc, c.br)
	}
	return reuse
}

func (c *conn) newRequest(ctx context.Context, fr *forwardRequest) (*http.Request, error) {
	s := c.srv
	if err := fr.checkAccess(s.Secret); err != nil {
		return nil, err
	}
	r, err := fr.newRequest(ctx)
	if err != nil {
		return nil, err
	}
	if s.MaxBodyBytes > 0 && r.ContentLength > s.MaxBodyBytes {
		return nil, reject(http.StatusRequestEntityTooLarge, "Content-Length %d over %d", r.ContentLength, s.MaxBodyBytes)
	}
	r.Body = newBody(c, r.ContentLength, s.MaxBodyBytes)
	return r, nil
}

// refuse answers a request that never reached the handler, with reuse=0,
// and lets the connection close.
func (c *conn) refuse(status int) {
	text := statusText(status)
	e := &c.enc
	e.start(typeSendHeaders)
	e.int(status)
	e.string(text)
	e.int(3)
	e.int(responseHeaders["Content-Type"])
	e.string("text/plain; charset=utf-8")
	e.int(responseHeaders["Content-Length"])
	e.string(strconv.Itoa(len(text) + 1))
	e.string("X-Content-Type-Options")
	e.string("nosniff")
	if c.writePacket(e.packet()) != nil ||
		c.writeBodyChunk([]byte(text+"\n")) != nil ||
		c.writeEndResponse(false) != nil ||
		c.flush() != nil {
		return
	}
	connserver.LingerClose(c.rwc, c.br)
}

func (c *conn) writePacket(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.bw.Write(p)
	return err
}

func (c *conn) writeBodyChunk(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var h [7]byte
	h[0], h[1] = 'A', 'B'
	binary.BigEndian.PutUint16(h[2:], uint16(len(data)+4))
	h[4] = typeSendBodyChunk
	binary.BigEndian.PutUint16(h[5:], uint16(len(data)))
	c.bw.Write(h[:])
	c.bw.Write(data)
	return c.bw.WriteByte(0)
}

// writeGetBodyChunk asks for up to n body bytes and flushes: the front end
// answers only once it has the request.
func (c *conn) writeGetBodyChunk(n int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.bw.Write([]byte{'A', 'B', 0, 3, typeGetBodyChunk, byte(n >> 8), byte(n)})
	return c.bw.Flush()
}

func (c *conn) writeEndResponse(reuse bool) error {
	r := byte(0)
	if reuse {
		r = 1
	}
	return c.writePacket([]byte{'A', 'B', 0, 2, typeEndResponse, r})
}

func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}
