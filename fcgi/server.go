package fcgi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("fcgi: server closed")

// Server serves FastCGI connections. Its zero value is usable once Handler
// is set; fields must not change after the first call to Serve.
type Server struct {
	// Handler serves the Responder role. Nil answers every request with 500;
	// http.DefaultServeMux is never used implicitly.
	Handler http.Handler

	// Authorizer serves the Authorizer role: status 200 allows the request,
	// `Variable-*` response headers become variables for the web server, any
	// other status denies it and the response goes to the client. Nil
	// answers Authorizer requests with FCGI_UNKNOWN_ROLE.
	Authorizer http.Handler

	// ErrorLog receives protocol errors and handler panics. Nil discards.
	ErrorLog *slog.Logger

	// MaxConns is advertised as FCGI_MAX_CONNS and enforced by pausing
	// Accept. Zero means 1024.
	MaxConns int

	// MaxReqsPerConn is advertised as FCGI_MAX_REQS and bounds the open
	// request ids per connection; extra BEGIN_REQUESTs get FCGI_OVERLOADED.
	// Zero means 64. One advertises FCGI_MPXS_CONNS=0.
	MaxReqsPerConn int

	// MaxParamsBytes bounds the FCGI_PARAMS stream of one request; a larger
	// one is answered with 431 and the connection is closed. Zero means 1 MiB.
	MaxParamsBytes int

	// MaxBodyBytes bounds a request body: a larger CONTENT_LENGTH is answered
	// with 413, a body of unknown length fails with *http.MaxBytesError.
	// Zero or negative means unlimited.
	MaxBodyBytes int64

	// HeaderTimeout bounds the time from FCGI_BEGIN_REQUEST to the end of
	// FCGI_PARAMS. Zero means 30s, negative means none.
	HeaderTimeout time.Duration

	// IdleTimeout closes a connection with no request open for this long,
	// and one whose open request has waited this long for its next
	// FCGI_STDIN record (a web server that never sends the body). Zero
	// means 120s, negative means none.
	IdleTimeout time.Duration

	// RequestTimeout cancels a request's context and ends it this long
	// after dispatch. Zero or negative means none.
	RequestTimeout time.Duration

	// WriteTimeout bounds each write to the web server: a web server that
	// stops reading for this long gets its connection closed, and the
	// handlers on it see write errors and cancelled contexts. Zero means
	// 60s, negative means none.
	WriteTimeout time.Duration

	// BaseContext returns the parent of the request contexts for a
	// listener. Nil means context.Background().
	BaseContext func(net.Listener) context.Context

	initOnce sync.Once
	cfg      config
	log      *slog.Logger
	sem      chan struct{} // one token per open connection
	done     chan struct{} // closed by Shutdown and Close

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	wakers     map[waker]struct{} // ServeFD loops
	conns      map[*conn]struct{}
	serving    int           // running Serve loops
	inShutdown bool          // no new listeners or connections
	drained    chan struct{} // closed when serving and conns reach zero during shutdown

	paramsPool sync.Pool // *[]byte, PARAMS accumulation
	bodyPool   sync.Pool // *[]byte, request body buffers
	outPool    sync.Pool // *outBuf, response buffers
	hdrPool    sync.Pool // http.Header, response headers
}

// config holds the limits with defaults applied.
type config struct {
	maxConns       int
	maxReqs        int
	maxParams      int
	maxBody        int64 // -1: unlimited
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	requestTimeout time.Duration
	writeTimeout   time.Duration
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		c := config{
			maxConns:       s.MaxConns,
			maxReqs:        s.MaxReqsPerConn,
			maxParams:      s.MaxParamsBytes,
			maxBody:        s.MaxBodyBytes,
			headerTimeout:  s.HeaderTimeout,
			idleTimeout:    s.IdleTimeout,
			requestTimeout: s.RequestTimeout,
			writeTimeout:   s.WriteTimeout,
		}
		if c.maxConns <= 0 {
			c.maxConns = 1024
		}
		if c.maxReqs <= 0 {
			c.maxReqs = 64
		}
		if c.maxReqs > 65535 {
			c.maxReqs = 65535
		}
		if c.maxParams <= 0 {
			c.maxParams = 1 << 20
		}
		if c.maxBody <= 0 {
			c.maxBody = -1
		}
		if c.headerTimeout == 0 {
			c.headerTimeout = 30 * time.Second
		}
		if c.idleTimeout == 0 {
			c.idleTimeout = 120 * time.Second
		}
		if c.writeTimeout == 0 {
			c.writeTimeout = 60 * time.Second
		}
		s.cfg = c
		s.log = s.ErrorLog
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.sem = make(chan struct{}, c.maxConns)
		s.done = make(chan struct{})
		s.listeners = make(map[*net.Listener]struct{})
		s.wakers = make(map[waker]struct{})
		s.conns = make(map[*conn]struct{})
	})
}

// Serve accepts connections on l and serves them until Shutdown or Close,
// then returns ErrServerClosed. Temporary accept errors are retried with
// back-off. Serve closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	if !s.trackListener(&l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	defer l.Close()

	base := context.Background()
	if s.BaseContext != nil {
		base = s.BaseContext(l)
		if base == nil {
			panic("fcgi: BaseContext returned a nil context")
		}
	}
	var delay time.Duration
	for {
		select {
		case s.sem <- struct{}{}:
		case <-s.done:
			return ErrServerClosed
		}
		rwc, err := l.Accept()
		if err != nil {
			<-s.sem
			if s.closing() {
				return ErrServerClosed
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("fcgi: accept failed; retrying", "err", err, "delay", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-s.done:
					t.Stop()
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("fcgi: accept: %w", err)
		}
		delay = 0
		c := s.newConn(base, rwc)
		draining := s.trackConn(c, true)
		go c.serve()
		if draining {
			// Accepted while Shutdown began: the web server has already
			// sent (or is sending) a request on it. Serve that one request
			// rather than resetting it; mod_fcgid does not retry a request
			// once connect() succeeded.
			c.shutdown()
			return ErrServerClosed
		}
	}
}

func (s *Server) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown {
			return false
		}
		s.listeners[l] = struct{}{}
		s.serving++
		return true
	}
	delete(s.listeners, l)
	s.serving--
	s.checkDrainedLocked()
	return true
}

// trackConn adds or removes c. Adding reports whether the server is
// already shutting down (c is tracked either way, so Shutdown waits for it).
func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
		return s.inShutdown
	}
	delete(s.conns, c)
	s.checkDrainedLocked()
	return true
}

// waker is a ServeFD loop: wake ends its wait for a connection.
type waker interface{ wake() }

// trackWaker adds or removes a ServeFD loop, woken on shutdown. Adding
// fails once the server is shutting down.
func (s *Server) trackWaker(efd waker, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown {
			return false
		}
		s.wakers[efd] = struct{}{}
		s.serving++
		return true
	}
	delete(s.wakers, efd)
	s.serving--
	s.checkDrainedLocked()
	return true
}

func (s *Server) checkDrainedLocked() {
	if s.inShutdown && s.serving == 0 && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// startShutdown stops accepting and returns the channel closed once every
// Serve loop and connection has ended.
func (s *Server) startShutdown(hard bool) <-chan struct{} {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inShutdown {
		s.inShutdown = true
		s.drained = make(chan struct{})
		close(s.done)
	}
	for l := range s.listeners {
		(*l).Close()
	}
	for w := range s.wakers {
		w.wake()
	}
	for c := range s.conns {
		if hard {
			c.rwc.Close()
		} else {
			c.shutdown()
		}
	}
	s.checkDrainedLocked()
	return s.drained
}

// Shutdown closes the listeners, closes idle connections, lets in-flight
// requests finish (each connection closes after its last one) and waits
// for every connection goroutine and Serve loop to end or ctx to be done.
// New FCGI_BEGIN_REQUESTs on draining connections get FCGI_OVERLOADED.
func (s *Server) Shutdown(ctx context.Context) error {
	drained := s.startShutdown(false)
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection, which cancels every
// request context, and returns without waiting for handlers, like
// net/http's Close: one that ignores its context cannot hang a stop.
// Shutdown, if called, still waits for them.
func (s *Server) Close() error {
	s.startShutdown(true)
	return nil
}
