package ajp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// body reads the request body as AJP body-chunk packets. With a known
// Content-Length > 0 the front end sends the first chunk unasked; every
// other chunk, and all of a body of unknown length, is fetched with
// GET_BODY_CHUNK. An empty chunk ends the body.
type body struct {
	c *conn

	mu      sync.Mutex // held across network reads, so finish waits for a stray Read
	left    int64      // bytes still due, or -1 for unknown length
	limit   int64      // MaxBodyBytes for unknown length; 0 = none
	got     int64
	unasked bool   // a chunk is on its way without a GET_BODY_CHUNK
	chunk   []byte // unread part of the current chunk (aliases the conn's read buffer)
	eof     bool
	err     error // sticky
	closed  bool
}

var errBodyClosed = errors.New("ajp: read on a finished request's body")

func newBody(c *conn, contentLength, limit int64) *body {
	return &body{c: c, left: contentLength, limit: limit, unasked: contentLength > 0}
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	for len(b.chunk) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.eof || b.left == 0 {
			return 0, io.EOF
		}
		b.err = b.fetch()
	}
	n := copy(p, b.chunk)
	b.chunk = b.chunk[n:]
	return n, nil
}

func (b *body) Close() error { return nil }

// fetch receives the next chunk, asking for it first unless it comes unasked.
// On a protocol error the connection is marked broken.
func (b *body) fetch() error {
	c := b.c
	if !b.unasked {
		want := c.maxChunk()
		if b.left > 0 && b.left < int64(want) {
			want = int(b.left)
		}
		if err := c.writeGetBodyChunk(want); err != nil {
			c.broken = true
			return err
		}
	}
	b.unasked = false
	p, err := readPacket(c.br, c.buf)
	if err != nil {
		c.broken = true
		return fmt.Errorf("ajp: read body chunk: %w", noEOF(err))
	}
	n := 0
	if len(p) >= 2 {
		n = int(binary.BigEndian.Uint16(p))
	} else if len(p) == 1 {
		c.broken = true
		return fmt.Errorf("ajp: body chunk: %w", errMalformed)
	}
	if n == 0 {
		b.eof = true
		if b.left > 0 {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	if n > len(p)-2 || b.left >= 0 && int64(n) > b.left {
		c.broken = true
		return fmt.Errorf("ajp: body chunk of %d bytes: %w", n, errMalformed)
	}
	b.chunk = p[2 : 2+n]
	b.got += int64(n)
	if b.left > 0 {
		b.left -= int64(n)
	}
	if b.limit > 0 && b.got > b.limit {
		b.chunk = nil
		return &http.MaxBytesError{Limit: b.limit}
	}
	return nil
}

// finish ends the body after the handler returned: later Reads fail, and a
// chunk the front end sent unasked is swallowed so that it is not parsed as
// the next request (AJP-08, CVE-2008-5519). It reports whether the
// connection is still in step with the front end.
func (b *body) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.chunk = nil
	if b.unasked && !b.c.broken {
		b.unasked = false
		if _, err := readPacket(b.c.br, b.c.buf); err != nil {
			b.c.broken = true
		}
	}
	return !b.c.broken
}
