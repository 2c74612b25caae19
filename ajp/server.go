package ajp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fcgishim/fcgishim/internal/connserver"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("ajp: Server closed")

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

	cs connserver.Server // listeners, connections, shutdown
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

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown or Close, or the accept error.
// l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		return errors.New("ajp: Server.Handler is nil")
	}
	return s.cs.Serve(l, connserver.Config{
		Name: "ajp", Log: s.log(), Closed: ErrServerClosed, BaseContext: s.BaseContext, NewConn: s.newConn,
	})
}

func (s *Server) newConn(rw net.Conn) connserver.Handler { return &conn{srv: s, rwc: rw} }

// Shutdown stops accepting, closes idle connections (between requests), ends
// busy ones after their current request with reuse=0, and waits until every
// request in flight has finished or ctx ends. A packet that arrives on an
// idle connection while it is being closed is lost, as with HTTP keep-alive.
func (s *Server) Shutdown(ctx context.Context) error { return s.cs.Shutdown(ctx) }

// Close stops accepting, cancels every request's context and closes every
// connection at once, then returns without waiting for the handlers: one
// that ignores its context cannot hold up a stop. Shutdown, if called,
// still waits for them.
func (s *Server) Close() error { return s.cs.Close() }
