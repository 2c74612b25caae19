package scgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/conntest"
)

// serveRaw runs one connection of s on in and returns everything s wrote.
func serveRaw(s *Server, in string) string {
	fc := conntest.New(in)
	if err := s.cs.ServeConn(context.Background(), fc, s.newConn(fc)); err != nil {
		panic(err)
	}
	return fc.Out.String()
}

// echo describes the request it got, one fact per line, headers sorted.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	body, err := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s host=%s remote=%s tls=%t len=%d\n", r.Method, r.URL, r.Proto, r.Host, r.RemoteAddr, r.TLS != nil, r.ContentLength)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.Header {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ","))
	}
	fmt.Fprintf(w, "body=%q err=%v", body, err)
})

func req(body string, kv ...string) string {
	kv = append([]string{"CONTENT_LENGTH", fmt.Sprint(len(body)), "SCGI", "1"}, kv...)
	return string(appendHeader(nil, kv...)) + body
}

func reqCL(cl, body string, kv ...string) string {
	kv = append([]string{"CONTENT_LENGTH", cl, "SCGI", "1"}, kv...)
	return string(appendHeader(nil, kv...)) + body
}

var get = []string{"REQUEST_METHOD", "GET", "REQUEST_URI", "/a?b=c", "SERVER_PROTOCOL", "HTTP/1.1",
	"HTTP_HOST", "example.com", "REMOTE_ADDR", "192.0.2.1", "REMOTE_PORT", "5555"}

// with returns get with kv's values set, replacing or appending.
func with(kv ...string) []string {
	out := slices.Clone(get)
next:
	for i := 0; i+1 < len(kv); i += 2 {
		for j := 0; j+1 < len(out); j += 2 {
			if out[j] == kv[i] {
				out[j+1] = kv[i+1]
				continue next
			}
		}
		out = append(out, kv[i], kv[i+1])
	}
	return out
}

const okHead = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"

// requestTests: raw bytes in, the echo handler's raw response out; "" for
// want means the connection is closed without a response.
var requestTests = []struct {
	id, in, want string
}{
	{"get", req("", get...), okHead +
		"GET /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=0\nbody=\"\" err=<nil>"},
	{"post", req("hello", with("REQUEST_METHOD", "POST", "CONTENT_TYPE", "text/x")...), okHead +
		"POST /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=5\nContent-Type: text/x\nbody=\"hello\" err=<nil>"},
	{"PARAM-11 https", req("", with("HTTPS", "on")...), okHead +
		"GET /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=true len=0\nbody=\"\" err=<nil>"},
	{"PARAM-01 httpoxy", req("", with("HTTP_PROXY", "http://evil", "HTTP_X_A", "1")...), okHead +
		"GET /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=0\nX-A: 1\nbody=\"\" err=<nil>"},
	{"PARAM-06 framing headers", req("", with("HTTP_CONTENT_LENGTH", "9", "HTTP_TRANSFER_ENCODING", "chunked",
		"HTTP_CONNECTION", "close", "HTTP_UPGRADE", "h2c", "HTTP_TE", "trailers", "HTTP_EXPECT", "100-continue",
		"HTTP_KEEP_ALIVE", "1")...), okHead +
		"GET /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=0\nbody=\"\" err=<nil>"},
	{"PARAM-12 no uri no port no host", req("", "REQUEST_METHOD", "GET", "SCRIPT_NAME", "/s", "PATH_INFO", "/p", "QUERY_STRING", "q", "REMOTE_ADDR", "::1"), okHead +
		"GET /s/p?q HTTP/1.0 host= remote=::1 tls=false len=0\nbody=\"\" err=<nil>"},
	{"PARAM-09 absolute form same host", req("", with("REQUEST_URI", "http://example.com/x")...), okHead +
		"GET /x HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=0\nbody=\"\" err=<nil>"},
	{"SCGI-05 short body", reqCL("10", "abc", with("REQUEST_METHOD", "POST")...), okHead +
		"POST /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=10\nbody=\"abc\" err=unexpected EOF"},
	{"SCGI-05 trailing bytes ignored", reqCL("3", "abcdef", with("REQUEST_METHOD", "POST")...), okHead +
		"POST /a?b=c HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=3\nbody=\"abc\" err=<nil>"},
	{"SCGI-02 framing error closes", "24:" + minimal + ";", ""},
	{"SCGI-04 rule broken gets 400", "24:SCGI\x001\x00CONTENT_LENGTH\x000\x00,", status400},
	{"PARAM-05 minus", reqCL("-1", "", get...), status400},
	{"PARAM-05 plus", reqCL("+5", "hello", get...), status400},
	{"PARAM-05 space", reqCL(" 5", "hello", get...), status400},
	{"PARAM-05 list", reqCL("5,5", "hello", get...), status400},
	{"PARAM-05 exponent", reqCL("1e3", "", get...), status400},
	{"PARAM-05 overflow", reqCL("99999999999999999999", "", get...), status400},
	{"PARAM-05 empty", reqCL("", "", get...), status400},
	{"PARAM-07 CRLF in header", req("", with("HTTP_X_FOO", "a\r\nTransfer-Encoding: chunked")...), status400},
	{"PARAM-07 LF in host", req("", with("HTTP_HOST", "a\nb")...), status400},
	{"PARAM-07 CR in uri", req("", with("REQUEST_URI", "/a\rb")...), status400},
	{"PARAM-09 absolute form other host", req("", with("REQUEST_URI", "http://other/x")...), status400},
	{"PARAM-12 bad protocol", req("", with("SERVER_PROTOCOL", "HTTP/9")...), status400},
	{"PARAM-12 no method", req("", "REQUEST_URI", "/"), status400},
	{"bad method", req("", with("REQUEST_METHOD", "GE T")...), status400},
	{"bad header name", req("", with("HTTP_X(Y", "1")...), status400},
}

var status400 = "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 12\r\n\r\nBad Request\n"

func TestRequests_PARAM_SCGI(t *testing.T) {
	for _, tt := range requestTests {
		t.Run(tt.id, func(t *testing.T) {
			got := serveRaw(&Server{Handler: echo}, tt.in)
			if got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	s := &Server{Handler: echo, MaxBodyBytes: 4}
	if got := serveRaw(s, req("hello", with("REQUEST_METHOD", "POST")...)); !strings.HasPrefix(got, "Status: 413 ") {
		t.Fatalf("got %q", got)
	}
	if got := serveRaw(s, req("hell", with("REQUEST_METHOD", "POST")...)); !strings.HasPrefix(got, okHead) {
		t.Fatalf("got %q", got)
	}
}

func TestParams_PARAM13(t *testing.T) {
	var got map[string]string
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = Params(r)
		got["REMOTE_USER"] = "changed" // a copy: the next call is unaffected
		got = Params(r)
	})}
	serveRaw(s, req("", with("REMOTE_USER", "alice", "DB_PASS", "x", "HTTP_PROXY", "evil")...))
	if got["REMOTE_USER"] != "alice" || got["DB_PASS"] != "x" || got["SCGI"] != "1" {
		t.Fatalf("Params = %q", got)
	}
	if _, ok := got["HTTP_PROXY"]; ok {
		t.Fatal("Params kept HTTP_PROXY")
	}
	if Params(httpRequest(t)) != nil {
		t.Fatal("Params of a foreign request is not nil")
	}
}

func httpRequest(t *testing.T) *http.Request {
	r, err := http.NewRequest("GET", "http://x/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// responseTests: handler in, raw response bytes out.
var responseTests = []struct {
	id      string
	method  string
	handler http.HandlerFunc
	want    string
}{
	{"SCGI-06 empty handler", "GET", func(w http.ResponseWriter, r *http.Request) {},
		"Status: 200 OK\r\nContent-Length: 0\r\nContent-Type: application/octet-stream\r\nX-Content-Type-Options: nosniff\r\n\r\n"},
	{"RESP-01 html body not sniffed", "GET", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html><script>alert(1)</script>")
	}, "Status: 200 OK\r\nContent-Type: application/octet-stream\r\nX-Content-Type-Options: nosniff\r\n\r\n<html><script>alert(1)</script>"},
	{"explicit type and status", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "<p>")
	}, "Status: 418 I'm a teapot\r\nContent-Type: text/html; charset=utf-8\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n<p>"},
	{"RESP-04 CRLF value and bad name dropped", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header()["X-Evil"] = []string{"a\r\nSet-Cookie: x=1"}
		w.Header()["X Bad"] = []string{"1"}
		w.Header().Set("X-Ok", "1")
		w.Header().Set("Status", "500 Nope")
		w.Header().Set("Transfer-Encoding", "chunked")
		io.WriteString(w, "x")
	}, "Status: 200 OK\r\nContent-Type: text/plain\r\nX-Ok: 1\r\n\r\nx"},
	{"RESP-07 HEAD", "HEAD", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}, "Status: 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"},
	{"RESP-07 304 with body", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
		if _, err := io.WriteString(w, "hello"); err != http.ErrBodyNotAllowed {
			panic(err)
		}
	}, "Status: 304 Not Modified\r\n\r\n"},
	{"RESP-07 204 with body", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(http.StatusNoContent)
		io.WriteString(w, "hello")
	}, "Status: 204 No Content\r\n\r\n"},
	{"RESP-06 longer than declared is cut", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		if _, err := io.WriteString(w, "hello"); err == nil {
			panic("no error")
		}
	}, "Status: 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nhel"},
	{"panic before output is a 500", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Secret", "1")
		panic("boom")
	}, "Status: 500 Internal Server Error\r\nContent-Length: 0\r\nContent-Type: application/octet-stream\r\nX-Content-Type-Options: nosniff\r\n\r\n"},
	{"flush sends header", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		io.WriteString(w, "data: 1\n\n")
	}, "Status: 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n"},
	{"1xx ignored", "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
	}, "Status: 201 Created\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"},
}

func TestResponses_SCGI06_RESP(t *testing.T) {
	for _, tt := range responseTests {
		t.Run(tt.id, func(t *testing.T) {
			got := serveRaw(&Server{Handler: tt.handler}, req("", with("REQUEST_METHOD", tt.method)...))
			if got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func FuzzRequest(f *testing.F) {
	for _, tt := range requestTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range headerTests {
		f.Add([]byte(tt.in))
	}
	s := &Server{Handler: echo, MaxHeaderBytes: 4096}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := serveRaw(s, string(in))
		if out != "" && !strings.HasPrefix(out, "Status: ") {
			t.Fatalf("response without Status: %q", out)
		}
		if i := strings.Index(out, "\r\n\r\n"); i >= 0 && strings.ContainsAny(out[:i], "\x00") {
			t.Fatalf("NUL in response header: %q", out)
		}
	})
}

// listen starts s on a loopback listener and returns its address.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

func roundTrip(t *testing.T, addr, in string) string {
	t.Helper()
	out, err := dialRaw(addr, in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dialRaw sends in on a new connection and reads until the server closes.
func dialRaw(addr, in string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, in); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return string(out), fmt.Errorf("read response: %w", err)
	}
	return string(out), nil
}

func TestServeTCP(t *testing.T) {
	addr := listen(t, &Server{Handler: echo})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			body := strings.Repeat(fmt.Sprint(i), 100000)
			got, err := dialRaw(addr, req(body, with("REQUEST_METHOD", "POST")...))
			if err != nil || !strings.Contains(got, fmt.Sprintf("body=%q", body)) {
				t.Errorf("request %d: got %.200q", i, got)
			}
		})
	}
	wg.Wait()
}

// A handler that ignores a large body must still get its response out: the
// unread body is drained, not reset under the response.
func TestUnreadBodyDrained_SCGI05(t *testing.T) {
	addr := listen(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ignored")
	})})
	got := roundTrip(t, addr, req(strings.Repeat("x", 200000), with("REQUEST_METHOD", "POST")...))
	if !strings.HasSuffix(got, "\r\n\r\nignored") {
		t.Fatalf("got %q", got)
	}
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/late" {
			io.WriteString(w, "late")
			return
		}
		close(entered)
		<-release
		io.WriteString(w, "done")
	})}
	addr := listen(t, s)
	fresh, err := net.Dial("tcp", addr) // connected, request not sent yet
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	resp := make(chan string, 1)
	go func() {
		out, err := dialRaw(addr, req("", get...))
		if err != nil {
			out = err.Error()
		}
		resp <- out
	}()
	<-entered
	begin, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(begin); err != context.Canceled { // Shutdown has begun when it returns
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()

	// A connection accepted before Shutdown is not idle: the web server
	// connected to send a request, and that request is served, not reset.
	late := req("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/late", "SERVER_PROTOCOL", "HTTP/1.1")
	if _, err := io.WriteString(fresh, late); err != nil {
		t.Fatal(err)
	}
	fresh.SetReadDeadline(time.Now().Add(10 * time.Second))
	if out, err := io.ReadAll(fresh); err != nil || !strings.HasSuffix(string(out), "late") {
		t.Fatalf("request on a connection accepted before Shutdown: %q, %v", out, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the request finished", err)
	default:
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	close(release)
	if got := <-resp; !strings.HasSuffix(got, "done") {
		t.Fatalf("in-flight response %q", got)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})}
	addr := listen(t, s)
	go dialRaw(addr, req("", get...))
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); err != context.Canceled {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	close(release)
}

func TestServeAfterClose(t *testing.T) {
	s := &Server{Handler: echo}
	s.Close()
	s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l); err != ErrServerClosed {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Fatal("listener left open")
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := listen(t, &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond, HeaderTimeout: 50 * time.Millisecond})
	for _, in := range []string{"", "24:CONTENT"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, in)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("after %q: read %v, want EOF from the server's timeout", in, err)
		}
		c.Close()
	}
}

// flakyListener fails Accept with EMFILE a few times, then delegates.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAcceptEMFILEBacksOff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo}
	done := make(chan error, 1)
	go func() { done <- s.Serve(&flakyListener{Listener: inner, fails: 3}) }()
	if got := roundTrip(t, inner.Addr().String(), req("", get...)); !strings.HasPrefix(got, okHead) {
		t.Fatalf("got %q", got)
	}
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
}

// Close cancels a request's context and returns without waiting for its
// handler: one that ignores the context cannot hang a stop once Shutdown
// has given up.
func TestCloseCancelsRequests(t *testing.T) {
	entered, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer close(release)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		context.AfterFunc(r.Context(), func() { close(cancelled) })
		close(entered)
		<-release // ignores its context
	})}
	addr := listen(t, s)
	go dialRaw(addr, req("", get...))
	<-entered
	closeAfterShutdown(t, s.Shutdown, s.Close)
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not cancel the request's context")
	}
}

// closeAfterShutdown runs a Shutdown that must give up on a stuck handler,
// then a Close that must return at once.
func closeAfterShutdown(t *testing.T, shutdown func(context.Context) error, close func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline: the handler is stuck", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a handler that ignores its context")
	}
}

// BenchmarkRequest serves one typical nginx request per iteration, in memory.
func BenchmarkRequest(b *testing.B) {
	in := req("", with("HTTP_USER_AGENT", "bench", "HTTP_ACCEPT", "*/*", "HTTP_COOKIE", "a=1; b=2",
		"SERVER_NAME", "example.com", "SERVER_PORT", "80", "DOCUMENT_ROOT", "/srv", "QUERY_STRING", "b=c")...)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})}
	b.ReportAllocs()
	for b.Loop() {
		serveRaw(s, in)
	}
}
