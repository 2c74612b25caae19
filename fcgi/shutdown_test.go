package fcgi

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// mod_fcgid connects, then writes its request. A connection accepted
// before Shutdown but with no request yet is not idle: its request is
// served, not reset (mod_fcgid does not retry once connect() succeeded, so
// a reset here is a lost request and a 500 for the client).
func TestShutdownServesAcceptedConnectionsFirstRequest(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "served")
	})}
	s.init()
	tc := serve(t, s)
	peertest.Eventually(t, 10*time.Second, "the connection accepted", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 1
	})
	// Draining has begun once Shutdown returns, here at once: its context
	// is already done.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(done); err != context.Canceled {
		t.Fatalf("Shutdown with a done context: %v, want context.Canceled (the connection is not idle)", err)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// The request arrives after Shutdown began, as it can under mod_fcgid.
	tc.write(requestBytes(1, false, reqParams("GET", "/late"), nil))
	out, proto := tc.end(1)
	if proto != statusRequestComplete {
		t.Fatalf("protocol status %d", proto)
	}
	if r := parseCGI(t, out); r.status != 200 || r.body != "served" {
		t.Fatalf("got %q", out)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the request")
	}
}

// A keep-conn connection that has served a request and sits idle is closed
// by Shutdown at once.
func TestShutdownClosesIdleKeepConn(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	tc := serve(t, s)
	tc.do(1, reqParams("GET", "/"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an idle keep-conn connection: %v", err)
	}
	if _, err := tc.read(); err == nil {
		t.Fatal("idle connection still open after Shutdown")
	}
}

// A request that reaches a busy keep-conn connection after Shutdown began
// is served, not refused with FCGI_OVERLOADED (which nginx turns into a
// 502), and the connection closes once both are answered.
func TestShutdownServesRequestOnBusyConnection(t *testing.T) {
	s, started, unblock := slowServer(t)
	tc := serve(t, s)
	tc.write(requestBytes(1, true, reqParams("GET", "/slow"), []byte{}))
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// Shutdown has begun once the listener refuses; the request below
	// then arrives on a draining connection.
	for {
		c, err := net.Dial("unix", tc.c.RemoteAddr().String())
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond) // polling for Shutdown to close the listener
	}
	tc.write(requestBytes(2, true, reqParams("GET", "/late"), []byte{}))
	out, proto := tc.end(2)
	if proto != statusRequestComplete || parseCGI(t, out).body != "done /late" {
		t.Fatalf("late request: protocol status %d, %q", proto, out)
	}
	unblock()
	if out, _ := tc.end(1); parseCGI(t, out).body != "done /slow" {
		t.Fatal(out)
	}
	tc.expectClosed()
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// slowServer answers "done PATH"; a request for /slow closes started and
// waits for unblock (called at the end of the test at the latest, as
// Close waits for the handler).
func slowServer(t *testing.T) (s *Server, started <-chan struct{}, unblock func()) {
	release := make(chan struct{})
	var once sync.Once
	unblock = func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	st := make(chan struct{})
	s = &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(st)
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})}
	return s, st, unblock
}
