package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// FCGI-17: a web server that announces a body and never sends FCGI_STDIN
// does not hold the handler forever, even with no RequestTimeout: the wait
// for the next STDIN record is bounded by IdleTimeout and the handler's
// read fails cleanly.
func TestBodyNeverSent_FCGI17(t *testing.T) {
	got := make(chan string, 1)
	tc := serve(t, &Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%q %v", b, err)
	})})
	tc.write(requestBytes(1, true, reqParams("POST", "/", "CONTENT_LENGTH", "10"), nil)) // no STDIN
	select {
	case s := <-got:
		if s != `"" unexpected EOF` {
			t.Fatal(s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler still waiting for a body that never comes")
	}
	tc.expectClosed()

	// A body that keeps coming, slower than IdleTimeout in total but with
	// records closer together, is not cut off. The gaps leave 1.3 s of
	// margin, so a loaded machine's scheduling delays cannot fake a stall.
	tc = serve(t, &Server{IdleTimeout: 2 * time.Second, Handler: echo})
	tc.write(requestBytes(1, true, reqParams("POST", "/slow", "CONTENT_LENGTH", "6"), nil))
	for _, part := range []string{"ab", "cd", "ef"} {
		time.Sleep(700 * time.Millisecond) // the web server's pace under test, not a synchronisation
		tc.write(rec(typeStdin, 1, []byte(part), 0))
	}
	tc.write(rec(typeStdin, 1, nil, 0))
	if out, _ := tc.end(1); !strings.HasSuffix(out, `body="abcdef" err=<nil>`) {
		t.Fatal(out)
	}
}

// A web server that stops reading our output (hung, or its client stalled
// with buffering off) cannot block a handler forever: the write fails
// after WriteTimeout, the handler's context is cancelled, the connection
// is closed.
func TestWriteTimeout(t *testing.T) {
	done := make(chan error, 1)
	tc := serve(t, &Server{WriteTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		for err == nil {
			_, err = w.Write(make([]byte, 64<<10))
		}
		<-r.Context().Done()
		done <- errors.Join(err, r.Context().Err())
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/flood"), []byte{}))
	// The client never reads.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler blocked on a web server that does not read")
	}
}

// RESP-08: we never send FCGI_STDERR, not even for a panic with a large
// stack trace: it goes to our log (the web server's error log under
// mod_fcgid), where no front end can mistake it for output or 502 on it.
func TestNoStderrRecords_RESP08(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var deep func(int)
		deep = func(n int) {
			if n == 0 {
				panic(strings.Repeat("boom ", 10000))
			}
			deep(n - 1)
		}
		deep(200)
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/"), []byte{}))
	for {
		r, err := tc.read()
		if err != nil {
			t.Fatal(err)
		}
		if r.h.Type == typeStderr {
			t.Fatalf("FCGI_STDERR record of %d bytes", len(r.content))
		}
		if r.h.Type == typeEndRequest {
			break
		}
	}
}

// RES-02: thousands of requests, half of them aborted mid-body or after
// their response started, leave no goroutines behind.
func TestAbortedRequestsLeakNothing_RES02(t *testing.T) {
	base := runtime.NumGoroutine()
	s := &Server{Handler: echo}
	addr := startServer(t, s)
	for i := range 20 {
		tc := dial(t, addr)
		for j := range 100 {
			id := uint16(j%7 + 1)
			if (i+j)%2 == 0 {
				tc.do(id, reqParams("POST", "/ok", "CONTENT_LENGTH", "3"), []byte("abc"))
				continue
			}
			tc.write(requestBytes(id, true, reqParams("POST", "/abort", "CONTENT_LENGTH", "10"), nil))
			tc.write(rec(typeStdin, id, []byte("abc"), 0))
			tc.write(rec(typeAbortRequest, id, nil, 0))
			tc.end(id)
		}
		tc.c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+3 { // the server's accept loop and test helpers
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, started with %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}
