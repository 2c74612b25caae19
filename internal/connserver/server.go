package connserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by ServeConn after Shutdown or Close, and by
// Serve when Config.Closed is nil.
var ErrServerClosed = errors.New("connserver: server closed")

// Config is what one protocol gives Serve.
type Config struct {
	Name string       // prefixes log messages and panics, as in "scgi: accept"
	Log  *slog.Logger // never nil

	// Closed is what Serve returns after Shutdown or Close, the protocol's
	// own ErrServerClosed; nil means ErrServerClosed.
	Closed error

	// BaseContext returns the base context of connections accepted on l;
	// nil means context.Background().
	BaseContext func(l net.Listener) context.Context

	// NewConn returns the protocol's connection for rw.
	NewConn func(rw net.Conn) Handler
}

// Handler is a protocol's connection: a type that embeds Conn and serves
// it. Serve returns when the connection should close; it is closed
// afterwards. Its context is cancelled by Close and when it returns.
type Handler interface {
	Serve(ctx context.Context)
	base() *Conn
}

// Server tracks listeners and connections. Its zero value is ready; it must
// not be copied after first use.
type Server struct {
	mu        sync.Mutex
	closing   bool
	done      chan struct{} // closed by the first Shutdown or Close
	listeners map[net.Listener]struct{}
	conns     map[*Conn]bool // value: true while a request is being served
	changed   chan struct{}  // closed and replaced whenever conns shrinks or goes idle
	wg        sync.WaitGroup // connection goroutines
}

// Conn is one accepted connection as the Server sees it. Protocols embed
// it in their connection type; the Server fills it in.
type Conn struct {
	srv     *Server
	rwc     net.Conn
	cancel  context.CancelFunc // cancels the connection's context
	closed  bool               // guarded by srv.mu
	started bool               // a request has begun; guarded by srv.mu
}

// initLocked prepares the lazily built fields; s.mu must be held.
func (s *Server) initLocked() {
	if s.done == nil {
		s.done = make(chan struct{})
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*Conn]bool{}
		s.changed = make(chan struct{})
	}
}

// Serve accepts connections on l and serves each in its own goroutine with
// cfg.NewConn. It returns cfg.Closed after Shutdown or Close, or the
// accept error. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener, cfg Config) error {
	err := s.serve(l, cfg)
	if err == ErrServerClosed && cfg.Closed != nil {
		return cfg.Closed
	}
	return err
}

func (s *Server) serve(l net.Listener, cfg Config) error {
	done, ok := s.addListener(l)
	if !ok {
		l.Close()
		return ErrServerClosed
	}
	defer s.removeListener(l)

	ctx := context.Background()
	if cfg.BaseContext != nil {
		ctx = cfg.BaseContext(l)
		if ctx == nil {
			panic(cfg.Name + ": BaseContext returned a nil context")
		}
	}
	var backoff time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if backoff, err = s.retryAfter(err, backoff, done, cfg); err != nil {
				return err
			}
			continue
		}
		backoff = 0
		if s.start(ctx, rw, cfg.NewConn(rw)) {
			// Accepted as Shutdown began: the web server is sending a
			// request on it; it is served, not reset (see closeIdleLocked).
			return ErrServerClosed
		}
	}
}

// addListener registers l unless the server is closing and returns the
// channel closed when it starts to.
func (s *Server) addListener(l net.Listener) (<-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if s.closing {
		return nil, false
	}
	s.listeners[l] = struct{}{}
	return s.done, true
}

func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.broadcastLocked() // Shutdown waits for the accept loops too
	s.mu.Unlock()
	l.Close()
}

// retryAfter handles an accept error: after a pause of the returned back-off
// for one worth retrying, or at once with ErrServerClosed or err otherwise.
func (s *Server) retryAfter(err error, backoff time.Duration, done <-chan struct{}, cfg Config) (time.Duration, error) {
	select {
	case <-done:
		return 0, ErrServerClosed
	default:
	}
	if !temporary(err) {
		return 0, err
	}
	backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
	cfg.Log.Warn(cfg.Name+": accept", "err", err, "retry", backoff)
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-t.C:
		return backoff, nil
	case <-done:
		return 0, ErrServerClosed
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

// start serves rw in a goroutine and reports whether the server is already
// shutting down; rw is tracked either way, so Shutdown waits for it.
func (s *Server) start(ctx context.Context, rw net.Conn, h Handler) (closing bool) {
	ctx, c, closing := s.track(ctx, rw, h)
	go s.serveTracked(ctx, c, h)
	return closing
}

// ServeConn serves rw in the calling goroutine, tracked like an accepted
// connection (Shutdown waits for it, Close closes it). It returns
// ErrServerClosed without serving if the server is closing.
func (s *Server) ServeConn(ctx context.Context, rw net.Conn, h Handler) error {
	s.mu.Lock()
	s.initLocked()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	ctx, c, _ := s.track(ctx, rw, h)
	s.serveTracked(ctx, c, h)
	return nil
}

// track fills in h's Conn for rw, adds it, and returns the connection's
// context and whether the server is already shutting down.
func (s *Server) track(ctx context.Context, rw net.Conn, h Handler) (context.Context, *Conn, bool) {
	ctx, cancel := context.WithCancel(ctx)
	c := h.base()
	c.srv, c.rwc, c.cancel = s, rw, cancel
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = false
	s.wg.Add(1)
	return ctx, c, s.closing
}

// serveTracked runs h, then closes and forgets its connection.
func (s *Server) serveTracked(ctx context.Context, c *Conn, h Handler) {
	defer s.wg.Done()
	defer s.untrack(c)
	defer c.cancel()
	defer c.close()
	h.Serve(ctx)
}

func (s *Server) untrack(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.broadcastLocked()
	s.mu.Unlock()
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

// Shutdown stops accepting, closes connections between requests, and waits
// until every connection has ended or ctx ends. Connections decide
// themselves, through SetIdle and Draining, not to take another request.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	for {
		s.mu.Lock()
		s.closeIdleLocked()
		// Accept loops count too: one may hold a connection it accepted
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

// Close stops accepting, cancels every connection's context and closes
// every connection, then returns without waiting for handlers, like
// net/http's Close: a handler that ignores its context cannot hold up a
// stop. Their goroutines end when the handlers return; Shutdown still
// waits for them.
func (s *Server) Close() error {
	s.beginClose()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.cancel()
		if !c.closed {
			c.closed = true
			c.rwc.Close()
		}
	}
	return nil
}

// Draining reports whether Shutdown or Close has begun.
func (c *Conn) Draining() bool {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// SetActive marks c busy with a request; it reports false if Shutdown or
// Close already closed c.
func (c *Conn) SetActive() bool {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed {
		return false
	}
	s.conns[c] = true
	c.started = true
	return true
}

// SetIdle marks c as waiting between requests; it reports false if the
// server is shutting down, in which case c should close.
func (c *Conn) SetIdle() bool {
	s := c.srv
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

func (c *Conn) close() {
	c.srv.mu.Lock()
	c.closed = true
	c.srv.mu.Unlock()
	c.rwc.Close()
}

func (c *Conn) base() *Conn { return c }
