package fcgi

import (
	"io"
	"net/http"
	"sync"
)

const bodyBufSize = 64 << 10

// body is a request body fed by the connection's reader goroutine from
// FCGI_STDIN and read by the handler. It buffers at most bodyBufSize bytes;
// beyond that put blocks until the handler reads or the body is closed.
type body struct {
	s         *Server
	mu        sync.Mutex
	cond      sync.Cond
	buf       []byte   // pooled once data arrives
	off       int      // read offset in buf
	remaining int64    // bytes still due per CONTENT_LENGTH; -1 unknown
	received  int64    // bytes accepted so far, for MaxBodyBytes
	eof       bool     // all input arrived
	err       error    // terminal error once buf is drained
	closed    bool     // the handler is done: discard input
	pull      *request // inline: Read fetches input from the connection
}

func (b *body) init(s *Server) {
	b.s = s
	b.cond.L = &b.mu
	b.remaining = -1
}

// put appends STDIN content, waiting for room if the buffer is full.
func (b *body) put(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.eof || b.err != nil {
		return
	}
	var after error
	if b.remaining >= 0 {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining] // extra bytes are never exposed
		}
	} else if max := b.s.cfg.maxBody; max >= 0 && b.received+int64(len(p)) > max {
		p = p[:max-b.received]
		after = &http.MaxBytesError{Limit: max}
	}
	for len(p) > 0 {
		if b.closed || b.err != nil {
			return
		}
		if b.buf == nil {
			b.buf = b.s.getBodyBuf()
		}
		if len(b.buf) == cap(b.buf) {
			if b.off > 0 {
				n := copy(b.buf, b.buf[b.off:])
				b.buf, b.off = b.buf[:n], 0
				continue
			}
			b.cond.Wait()
			continue
		}
		n := copy(b.buf[len(b.buf):cap(b.buf)], p)
		b.buf = b.buf[:len(b.buf)+n]
		p = p[n:]
		b.received += int64(n)
		if b.remaining > 0 {
			b.remaining -= int64(n)
		}
		b.cond.Broadcast()
	}
	if after != nil {
		b.err = after
		b.cond.Broadcast()
	}
	if b.remaining == 0 {
		b.eof = true
		b.cond.Broadcast()
	}
}

// endInput records the empty FCGI_STDIN record.
func (b *body) endInput() {
	b.mu.Lock()
	if !b.eof && b.err == nil {
		if b.remaining > 0 {
			b.err = io.ErrUnexpectedEOF
		} else {
			b.eof = true
		}
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// fail ends input early (abort, timeout, connection closed): a read that
// has not seen the whole body gets io.ErrUnexpectedEOF.
func (b *body) fail() {
	b.mu.Lock()
	if !b.eof && b.err == nil {
		b.err = io.ErrUnexpectedEOF
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.closed {
			return 0, http.ErrBodyReadAfterClose
		}
		if b.off < len(b.buf) {
			n := copy(p, b.buf[b.off:])
			b.off += n
			if b.off == len(b.buf) {
				b.buf, b.off = b.buf[:0], 0
			}
			b.cond.Broadcast()
			return n, nil
		}
		if b.err != nil {
			return 0, b.err
		}
		if b.eof {
			return 0, io.EOF
		}
		if b.pull != nil {
			// Inline: nothing else reads the connection. The buffer is
			// empty, so the next STDIN record (at most 65535 bytes)
			// fits and put does not wait.
			b.mu.Unlock()
			err := b.pull.c.fillBody(b.pull)
			b.mu.Lock()
			if err != nil && !b.eof && b.err == nil && b.off == len(b.buf) {
				b.err = io.ErrUnexpectedEOF
			}
			continue
		}
		b.cond.Wait()
	}
}

// Close discards the rest of the body; later input is dropped.
func (b *body) Close() error {
	b.mu.Lock()
	if b.s != nil && !b.closed {
		b.closed = true
		if b.buf != nil {
			b.s.putBodyBuf(b.buf)
			b.buf = nil
		}
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	return nil
}

func (s *Server) getBodyBuf() []byte {
	if p, ok := s.bodyPool.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, bodyBufSize)
}

func (s *Server) putBodyBuf(b []byte) { s.bodyPool.Put(&b) }

func (s *Server) getParamsBuf() *[]byte {
	if p, ok := s.paramsPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 4<<10)
	return &b
}

// putParamsBuf returns p to the pool with b, its grown contents.
func (s *Server) putParamsBuf(p *[]byte, b []byte) {
	if cap(b) <= 64<<10 {
		*p = b[:0]
		s.paramsPool.Put(p)
	}
}
