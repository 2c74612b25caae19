package scgi

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fcgishim/fcgishim/internal/connserver"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("scgi: Server closed")

const defaultMaxHeaderBytes = 1 << 20

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

	cs connserver.Server // listeners, connections, shutdown
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

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown or Close, or the accept error.
// l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		return errors.New("scgi: Server.Handler is nil")
	}
	return s.cs.Serve(l, connserver.Config{
		Name: "scgi", Log: s.log(), Closed: ErrServerClosed, BaseContext: s.BaseContext, NewConn: s.newConn,
	})
}

func (s *Server) newConn(rw net.Conn) connserver.Handler { return &conn{srv: s, rwc: rw} }

// Shutdown stops accepting, closes connections that have not started a
// request, and waits until every request in flight has finished or ctx ends.
// A connection whose first bytes arrive while it is being closed is lost; the
// front end sees a closed connection.
func (s *Server) Shutdown(ctx context.Context) error { return s.cs.Shutdown(ctx) }

// Close stops accepting, cancels every request's context and closes every
// connection at once, then returns without waiting for the handlers: one
// that ignores its context cannot hold up a stop. Shutdown, if called,
// still waits for them.
func (s *Server) Close() error { return s.cs.Close() }

// conn is one SCGI connection: one request, then close.
type conn struct {
	connserver.Conn
	srv *Server
	rwc net.Conn
}

func (c *conn) Serve(ctx context.Context) {
	s := c.srv
	if s.IdleTimeout > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	}
	br := bufio.NewReaderSize(c.rwc, 4096)
	if _, err := br.Peek(1); err != nil {
		return
	}
	if !c.SetActive() {
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

	// One request per connection: the connection's context, cancelled
	// by Close and when Serve returns, is the request's.
	req, status, err := newRequest(ctx, params, br, s.MaxBodyBytes)
	if err != nil {
		s.log().Info("scgi: bad request", "remote", c.rwc.RemoteAddr(), "err", err)
		writeError(c.rwc, status)
		return
	}
	bw := bufio.NewWriterSize(c.rwc, 4096)
	w := newResponse(bw, req)
	if !connserver.RunHandler(s.Handler, w, req, s.log(), "scgi") {
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
	connserver.LingerClose(c.rwc, br)
}
