package scgi

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("scgi: Server closed")

const (
	defaultMaxHeaderBytes = 1 << 20

	// After a response, up to lingerBytes of unread input are discarded for
	// at most lingerTimeout before the connection closes.
	lingerBytes   = 256 << 10
	lingerTimeout = 2 * time.Second
)

// Server serves SCGI connections with an http.Handler.
type Server struct {
	Handler  http.Handler // required; DefaultServeMux is never used
	ErrorLog *slog.Logger // nil discards

	MaxHeaderBytes int   // netstring header cap; 0 means 1 MiB
	MaxBodyBytes   int64 // CONTENT_LENGTH above it gets 413; 0 means unlimited

	HeaderTimeout time.Duration // from the first header byte to the end of the header; 0 means none
	IdleTimeout   time.Duration // from accept to the first header byte; 0 means none

	// BaseContext returns the base context of requests accepted on l;
	// nil means context.Background().
	BaseContext func(l net.Listener) context.Context

	mu        sync.Mutex
	closing   bool
	done      chan struct{} // closed by the first Shutdown or Close
	listeners map[net.Listener]struct{}
	conns     map[*conn]bool // value: true while a request is being served
	changed   chan struct{}  // closed and replaced whenever conns shrinks or goes idle
	wg        sync.WaitGroup // connection goroutines
}

func (s *Server) log() *slog.Logger {
	if s.ErrorLog == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.ErrorLog
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return defaultMaxHeaderBytes
}

// initLocked prepares the lazily built fields; s.mu must be held.
func (s *Server) initLocked() {
	if s.done == nil {
		s.done = make(chan struct{})
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]bool{}
		s.changed = make(chan struct{})
	}
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown or Close, or the accept error.
// l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		return errors.New("scgi: Server.Handler is nil")
	}
	s.mu.Lock()
	s.initLocked()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	done := s.done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.broadcastLocked() // Shutdown waits for this loop too
		s.mu.Unlock()
		l.Close()
	}()

	ctx := context.Background()
	if s.BaseContext != nil {
		ctx = s.BaseContext(l)
		if ctx == nil {
			panic("scgi: BaseContext returned a nil context")
		}
	}
	var backoff time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			select {
			case <-done:
				return ErrServerClosed
			default:
			}
			if !temporary(err) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log().Warn("scgi: accept", "err", err, "retry", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		cctx, cancel := context.WithCancel(ctx)
		c := &conn{srv: s, rwc: rw, cancel: cancel}
		closing := s.track(c)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			defer cancel()
			c.serve(cctx)
		}()
		if closing {
			// Accepted as Shutdown began: the web server is sending a
			// request on it; it is served, not reset (see closeIdleLocked).
			return ErrServerClosed
		}
	}
}

// temporary reports whether an accept error is worth retrying: descriptor
// exhaustion and aborted handshakes pass, a closed listener does not.
func temporary(err error) bool {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// track adds c and reports whether the server is already shutting down;
// c is tracked either way, so Shutdown waits for it.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = false
	s.wg.Add(1)
	return s.closing
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.broadcastLocked()
	s.mu.Unlock()
}

// setActive marks c busy; it reports false if Shutdown already closed c.
func (s *Server) setActive(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed {
		return false
	}
	s.conns[c] = true
	c.started = true
	return true
}

func (s *Server) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// closeIdleLocked closes connections between requests. A connection that
// has not started its first request is not idle: the web server connected
// to send one (and mod_proxy_* / nginx do not retry a request once the
// connection was accepted), so it is served; the header timeout bounds it.
func (s *Server) closeIdleLocked() {
	for c, active := range s.conns {
		if !active && c.started && !c.closed {
			c.closed = true
			c.rwc.Close()
		}
	}
}

func (s *Server) beginClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
}

// Shutdown stops accepting, closes connections that have not started a
// request, and waits until every request in flight has finished or ctx ends.
// A connection whose first bytes arrive while it is being closed is lost; the
// front end sees a closed connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	for {
		s.mu.Lock()
		s.closeIdleLocked()
		// Serve loops count too: one may hold a connection it accepted
		// but has not tracked yet, and returning now would lose it.
		n, changed := len(s.conns)+len(s.listeners), s.changed
		s.mu.Unlock()
		if n == 0 {
			s.wg.Wait() // only the goroutines' final returns remain
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops accepting, cancels every request's context, closes every
// connection at once, then waits for the connection goroutines to return:
// a handler that ignores both its context and write errors holds Close up.
func (s *Server) Close() error {
	s.beginClose()
	s.mu.Lock()
	for c := range s.conns {
		if c.cancel != nil {
			c.cancel()
		}
		if !c.closed {
			c.closed = true
			c.rwc.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// conn is one SCGI connection: one request, then close.
type conn struct {
	srv     *Server
	rwc     net.Conn
	cancel  context.CancelFunc // cancels the connection's requests; nil in tests
	closed  bool               // guarded by srv.mu
	started bool               // a request has begun; guarded by srv.mu
}

func (c *conn) serve(ctx context.Context) {
	s := c.srv
	defer func() {
		s.mu.Lock()
		c.closed = true
		s.mu.Unlock()
		c.rwc.Close()
	}()
	if s.IdleTimeout > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	}
	br := bufio.NewReaderSize(c.rwc, 4096)
	if _, err := br.Peek(1); err != nil {
		return
	}
	if !s.setActive(c) {
		return
	}
	if s.HeaderTimeout > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(s.HeaderTimeout))
	} else {
		c.rwc.SetReadDeadline(time.Time{})
	}
	params, err := readHeader(br, s.maxHeaderBytes())
	if err != nil {
		if !errors.Is(err, io.EOF) {
			s.log().Info("scgi: bad header", "remote", c.rwc.RemoteAddr(), "err", err)
		}
		if errors.Is(err, errBadParams) {
			writeError(c.rwc, http.StatusBadRequest)
		}
		return
	}
	c.rwc.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, status, err := newRequest(ctx, params, br, s.MaxBodyBytes)
	if err != nil {
		s.log().Info("scgi: bad request", "remote", c.rwc.RemoteAddr(), "err", err)
		writeError(c.rwc, status)
		return
	}
	bw := bufio.NewWriterSize(c.rwc, 4096)
	w := newResponse(bw, req)
	if !serveHandler(s.Handler, w, req, s.log()) {
		abort(c.rwc) // panicked after the header went out
		return
	}
	if err := w.finish(); err != nil {
		s.log().Info("scgi: write response", "remote", c.rwc.RemoteAddr(), "err", err)
	}
	if w.aborted {
		abort(c.rwc)
		return
	}
	c.lingerClose(br)
}

// lingerClose ends the response with a half-close, then discards what the
// front end may still be sending (unread body, trailing bytes) so that
// closing does not reset the connection under a response in flight.
func (c *conn) lingerClose(br *bufio.Reader) {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, br, lingerBytes)
}

// serveHandler runs h and reports whether the response may be finished; a
// panic before any output becomes a 500.
func serveHandler(h http.Handler, w *response, r *http.Request, log *slog.Logger) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log.Error("scgi: handler panic", "uri", r.RequestURI, "panic", p)
			}
			if w.sent {
				ok = false
				return
			}
			w.reset()
			w.WriteHeader(http.StatusInternalServerError)
			ok = true
		}
	}()
	h.ServeHTTP(w, r)
	return !w.aborted
}
