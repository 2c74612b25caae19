package ajp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("ajp: Server closed")

const (
	// Before closing a connection after a response, up to lingerBytes of
	// unread input are discarded for at most lingerTimeout.
	lingerBytes   = 256 << 10
	lingerTimeout = 2 * time.Second
)

// Server serves AJP13 connections with an http.Handler. Request attributes
// outside a small allow-list (AJP_REMOTE_PORT, AJP_LOCAL_ADDR,
// AJP_SSL_PROTOCOL, JK_LB_ACTIVATION) get 403 and a closed connection. The
// front end's remote_user and auth_type reach the handler only through
// Params, never as headers. A Shutdown packet is never acted on: like any
// unexpected packet it closes the connection.
type Server struct {
	Handler  http.Handler // required; DefaultServeMux is never used
	ErrorLog *slog.Logger // nil discards

	// PacketSize is the largest packet, header included, in either
	// direction; it must match the front end's (mod_proxy_ajp ProxyPass
	// ajp://... packetsize=N, mod_jk max_packet_size). 0 means 8192; values
	// are clamped to 8192..65536.
	PacketSize int

	// Secret, if not empty, must arrive as the secret attribute of every
	// request (mod_proxy_ajp secret=, mod_jk worker.secret); other requests
	// get 403 and the connection is closed.
	Secret string

	MaxBodyBytes int64 // larger bodies get 413 (known length) or a read error; 0 means unlimited

	HeaderTimeout time.Duration // from a packet's first byte to its end, between requests; 0 means none
	IdleTimeout   time.Duration // wait for the next packet on an idle connection; 0 means none

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

func (s *Server) packetSize() int {
	if s.PacketSize == 0 {
		return defaultPacketSize
	}
	return min(max(s.PacketSize, defaultPacketSize), maxPacketSize)
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
		return errors.New("ajp: Server.Handler is nil")
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
			panic("ajp: BaseContext returned a nil context")
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
			s.log().Warn("ajp: accept", "err", err, "retry", backoff)
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

// setIdle marks c as waiting between requests; it reports false if the
// server is shutting down, in which case c should close.
func (s *Server) setIdle(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || c.closed {
		return false
	}
	if s.conns[c] {
		s.conns[c] = false
		s.broadcastLocked()
	}
	return true
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
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

// Shutdown stops accepting, closes idle connections (between requests), ends
// busy ones after their current request with reuse=0, and waits until every
// request in flight has finished or ctx ends. A packet that arrives on an
// idle connection while it is being closed is lost, as with HTTP keep-alive.
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
