package connserver

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

var errTestClosed = errors.New("test: server closed")

// stuckProtocol reads one line per connection, then runs a "handler" that
// ignores its context and waits for release.
type stuckProtocol struct {
	Conn
	rw        net.Conn
	entered   chan struct{} // closed when the handler starts
	cancelled chan struct{} // closed when the handler's context ends
	release   chan struct{} // the handler returns once this is closed
}

func (p *stuckProtocol) Serve(ctx context.Context) {
	if _, err := bufio.NewReader(p.rw).ReadString('\n'); err != nil || !p.SetActive() {
		return
	}
	context.AfterFunc(ctx, func() { close(p.cancelled) })
	close(p.entered)
	<-p.release // ignores ctx
}

// A handler that ignores its context cannot hold up a stop: once Shutdown
// has given up, Close cancels the context, closes the connection and
// returns at once; a later Shutdown still waits for the handler.
func TestCloseDoesNotWaitForStuckHandler(t *testing.T) {
	p := &stuckProtocol{entered: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
	var s Server
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(l, Config{Name: "test", Log: slog.New(slog.DiscardHandler), Closed: errTestClosed, NewConn: func(rw net.Conn) Handler { p.rw = rw; return p }})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("request\n")); err != nil {
		t.Fatal(err)
	}
	<-p.entered

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline: the handler is stuck", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		close(p.release)
		t.Fatal("Close waited for a handler that ignores its context")
	}
	select {
	case <-p.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the request's context")
	}
	if err := <-served; err != errTestClosed {
		t.Fatalf("Serve = %v, want Config.Closed", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}

	close(p.release)
	if err := s.Shutdown(context.Background()); err != nil { // waits for the handler's goroutine
		t.Fatalf("Shutdown after the handler returned = %v", err)
	}
}

// Close and Shutdown are safe to call twice and on a server never served.
func TestCloseTwice(t *testing.T) {
	var s Server
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l, Config{Name: "test", Log: slog.New(slog.DiscardHandler)}); err != ErrServerClosed {
		t.Fatalf("Serve after Close = %v, want ErrServerClosed", err)
	}
}

// Descriptor exhaustion and aborted handshakes are retried; a closed
// listener or any other error ends Serve.
func TestTemporary(t *testing.T) {
	for err, want := range map[error]bool{
		&net.OpError{Op: "accept", Err: syscall.EMFILE}:       true,
		&net.OpError{Op: "accept", Err: syscall.ENFILE}:       true,
		&net.OpError{Op: "accept", Err: syscall.ECONNABORTED}: true,
		net.ErrClosed:                                  false,
		errors.New("something else"):                   false,
		&net.OpError{Op: "accept", Err: syscall.EBADF}: false,
	} {
		if got := temporary(err); got != want {
			t.Errorf("temporary(%v) = %t, want %t", err, got, want)
		}
	}
}

// failingListener fails Accept with EMFILE fails times, then delegates.
type failingListener struct {
	net.Listener
	fails int // touched only by the one Serve loop
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// An accept that fails for lack of descriptors is retried after a pause,
// and the connection behind it is still served.
func TestAcceptRetriedAfterEMFILE(t *testing.T) {
	p := &stuckProtocol{entered: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
	close(p.release)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var s Server
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(&failingListener{Listener: inner, fails: 3}, Config{Name: "test", Log: slog.New(slog.DiscardHandler),
			NewConn: func(rw net.Conn) Handler { p.rw = rw; return p }})
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("request\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.entered:
	case err := <-served:
		t.Fatalf("Serve = %v after EMFILE, want a retry", err)
	case <-time.After(10 * time.Second):
		t.Fatal("connection not served after EMFILE")
	}
	s.Close()
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
}
