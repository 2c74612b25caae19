package fcgi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestShutdown(t *testing.T) {
	s, started, unblock := slowServer(t)
	path := startServer(t, s)
	idle := dial(t, path)
	idle.do(1, reqParams("GET", "/warm"), []byte{})
	busy := dial(t, path)
	busy.write(requestBytes(1, true, reqParams("GET", "/slow"), []byte{}))
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	idle.expectClosed() // idle keep-conn connection closed at once
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	unblock()
	out, _ := busy.end(1)
	if parseCGI(t, out).body != "done /slow" {
		t.Fatal(out)
	}
	busy.expectClosed()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal("second Shutdown:", err)
	}
	s.Close()
	s.Close()
	l, _ := net.Listen("unix", filepath.Join(t.TempDir(), "again"))
	if err := s.Serve(l); err != ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // only Close ends it
	})}
	tc := dial(t, startServer(t, s))
	tc.write(requestBytes(1, true, reqParams("GET", "/"), []byte{}))
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	s.Close() // cancels the handler; it returns once its context is done
}

// tempErrListener fails Accept with EMFILE a few times.
type tempErrListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *tempErrListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAcceptTemporaryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(&tempErrListener{Listener: inner, fails: 3}) }()
	tc := dial(t, path)
	if r := tc.do(1, reqParams("GET", "/"), []byte{}); r.status != 200 {
		t.Fatal(r.raw)
	}
	s.Close()
	if err := <-errc; err != ErrServerClosed {
		t.Fatal(err)
	}
}

func TestMaxConns(t *testing.T) {
	s := &Server{Handler: echo, MaxConns: 1}
	path := startServer(t, s)
	first := dial(t, path)
	first.do(1, reqParams("GET", "/1"), []byte{})
	second := dial(t, path) // queued by the kernel, not accepted
	second.write(requestBytes(1, false, reqParams("GET", "/2"), []byte{}))
	got := make(chan string, 1)
	go func() {
		out, _ := second.end(1)
		got <- out
	}()
	select {
	case out := <-got:
		t.Fatalf("second connection served past MaxConns: %q", out)
	case <-time.After(100 * time.Millisecond): // absence of an event; bounded wait
	}
	first.c.Close()
	select {
	case out := <-got:
		if parseCGI(t, out).status != 200 {
			t.Fatal(out)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second connection never served")
	}
}
