package fcgi

import (
	"io"
	"net/http"
	"sync"
)

const bodyBufSize = 64 << 10

// body is a request body fed by the connection's reader goroutine from
// FCGI_STDIN and read by the handler (through bodyReader). It buffers at
// most bodyBufSize bytes; beyond that put blocks until the handler reads or
// the body is closed. It lives inside the request, so it is kept small.
type body struct {
	mu        sync.Mutex
	wake      chan struct{} // made by a waiter, closed by the next broadcast
	bufp      *[]byte       // pooled once data arrives; unread from off on
	off       int32         // < bodyBufSize; beside the flags to save a word
	eof       bool          // all input arrived
	closed    bool          // the handler is done: discard input
	remaining int64         // bytes still due per CONTENT_LENGTH; -1 unknown
	received  int64         // bytes accepted so far, for MaxBodyBytes
	err       error         // terminal error once the buffer is drained
}

// wait releases b.mu until the next broadcast; b.mu is held. Callers
// re-check their condition after it, as with a sync.Cond.
func (b *body) wait() {
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	wake := b.wake
	b.mu.Unlock()
	<-wake
	b.mu.Lock()
}

// broadcast wakes every waiter; b.mu is held.
func (b *body) broadcast() {
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
}

// put appends STDIN content, waiting for room if the buffer is full.
func (b *body) put(s *Server, p []byte) {
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
	} else if max := s.cfg.maxBody; max >= 0 && b.received+int64(len(p)) > max {
		p = p[:max-b.received]
		after = &http.MaxBytesError{Limit: max}
	}
	for len(p) > 0 {
		if b.closed || b.err != nil {
			return
		}
		if b.bufp == nil {
			b.bufp = s.getBodyBuf()
		}
		buf := *b.bufp
		if len(buf) == cap(buf) {
			if b.off > 0 {
				n := copy(buf, buf[b.off:])
				*b.bufp, b.off = buf[:n], 0
				continue
			}
			b.wait()
			continue
		}
		n := copy(buf[len(buf):cap(buf)], p)
		*b.bufp = buf[:len(buf)+n]
		p = p[n:]
		b.received += int64(n)
		if b.remaining > 0 {
			b.remaining -= int64(n)
		}
		b.broadcast()
	}
	if after != nil {
		b.err = after
		b.broadcast()
	}
	if b.remaining == 0 {
		b.eof = true
		b.broadcast()
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
	b.broadcast()
	b.mu.Unlock()
}

// fail ends input early (abort, timeout, connection closed): a read that
// has not seen the whole body gets io.ErrUnexpectedEOF.
func (b *body) fail() {
	b.mu.Lock()
	if !b.eof && b.err == nil {
		b.err = io.ErrUnexpectedEOF
	}
	b.broadcast()
	b.mu.Unlock()
}

// read is Read. Inline, pull is the request, whose connection read
// fetches more input when the buffer is empty: nothing else reads it.
func (b *body) read(p []byte, pull *request) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.closed {
			return 0, http.ErrBodyReadAfterClose
		}
		if b.bufp != nil && int(b.off) < len(*b.bufp) {
			buf := *b.bufp
			n := copy(p, buf[b.off:])
			b.off += int32(n)
			if int(b.off) == len(buf) {
				*b.bufp, b.off = buf[:0], 0
			}
			b.broadcast()
			return n, nil
		}
		if b.err != nil {
			return 0, b.err
		}
		if b.eof {
			return 0, io.EOF
		}
		if pull != nil {
			// The buffer is empty, so the next STDIN record (at most
			// 65535 bytes) fits and put does not wait.
			b.mu.Unlock()
			err := pull.c.fillBody(pull)
			b.mu.Lock()
			if err != nil && !b.eof && b.err == nil && (b.bufp == nil || int(b.off) == len(*b.bufp)) {
				b.err = io.ErrUnexpectedEOF
			}
			continue
		}
		b.wait()
	}
}

// close discards the rest of the body; later input is dropped.
func (b *body) close(s *Server) {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		if b.bufp != nil {
			s.putBodyBuf(b.bufp)
			b.bufp = nil
		}
		b.broadcast()
	}
	b.mu.Unlock()
}

// bodyReader is a request seen as its http.Request.Body: the request
// itself, so that the body needs no allocation of its own.
type bodyReader request

func (br *bodyReader) Read(p []byte) (int, error) {
	r := (*request)(br)
	if r.c.inline {
		return r.body.read(p, r)
	}
	return r.body.read(p, nil)
}

func (br *bodyReader) Close() error {
	r := (*request)(br)
	r.body.close(r.c.s)
	return nil
}

func (s *Server) getBodyBuf() *[]byte {
	if p, ok := s.bodyPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, bodyBufSize)
	return &b
}

// putBodyBuf returns p to the pool emptied; the entry is reused, so that
// putting allocates nothing.
func (s *Server) putBodyBuf(p *[]byte) {
	*p = (*p)[:0]
	s.bodyPool.Put(p)
}

func (s *Server) getParamsBuf() *[]byte {
	if p, ok := s.paramsPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 4<<10)
	return &b
}

// putParamsBuf returns p, holding the grown contents, to the pool.
func (s *Server) putParamsBuf(p *[]byte) {
	if cap(*p) <= 64<<10 {
		*p = (*p)[:0]
		s.paramsPool.Put(p)
	}
}
