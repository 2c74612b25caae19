package fcgi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects ErrorLog output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func TestPanic_FCGI20(t *testing.T) {
	var log logBuf
	slowDone := make(chan struct{})
	tc := serve(t, &Server{ErrorLog: log.logger(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/before":
			w.Header().Set("X-Lost", "1")
			io.WriteString(w, "buffered, never sent")
			panic("boom before")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/after":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom after")
		case "/slow":
			<-slowDone
			io.WriteString(w, "slow ok")
		}
	})})
	r := tc.do(1, reqParams("GET", "/before"), []byte{})
	if r.status != 500 || r.header.Get("X-Lost") != "" || strings.Contains(r.body, "buffered") {
		t.Fatalf("got %q", r.raw)
	}
	if !strings.Contains(log.String(), "boom before") {
		t.Fatalf("panic not logged: %s", log.String())
	}
	if r := tc.do(1, reqParams("GET", "/abort"), []byte{}); r.status != 500 {
		t.Fatalf("got %q", r.raw)
	}
	if strings.Contains(log.String(), "abort handler") {
		t.Fatalf("ErrAbortHandler logged: %s", log.String())
	}

	// Panic after output, while another request shares the connection:
	// the other one survives, the panicking one ends with appStatus 1.
	tc.write(requestBytes(2, true, reqParams("GET", "/slow"), []byte{}))
	tc.write(requestBytes(3, true, reqParams("GET", "/after"), []byte{}))
	tc.end(3)
	close(slowDone)
	out, _ := tc.end(2)
	if !strings.HasSuffix(out, "slow ok") {
		t.Fatalf("got %q", out)
	}

	// Alone on its connection, a panic after output closes it without
	// END_REQUEST so the front end cannot take the body as complete.
	tc.write(requestBytes(1, true, reqParams("GET", "/after"), []byte{}))
	for {
		rec, err := tc.read()
		if err != nil {
			break
		}
		if rec.h.Type == typeEndRequest {
			t.Fatal("END_REQUEST after a panic mid-body")
		}
	}
}

func TestPanicAppStatus_FCGI20(t *testing.T) {
	release := make(chan struct{})
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
			return
		}
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("late")
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/wait"), []byte{}))
	tc.write(requestBytes(2, true, reqParams("GET", "/p"), []byte{}))
	for {
		if e, ok := tc.ends[2]; ok {
			if e[0]|e[1]|e[2]|e[3] == 0 {
				t.Fatalf("appStatus 0 after panic: %v", e)
			}
			break
		}
		if _, err := tc.read(); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	tc.end(1)
}

// A slow handler and one that ignores its body must not hold up other
// requests on the same connection.
func TestMultiplex(t *testing.T) {
	release := make(chan struct{})
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow", "/noread":
			<-release
		}
		fmt.Fprintf(w, "%s", r.URL.Path)
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/slow"), []byte{}))
	// id 2 gets a body it never reads, below the per-request buffer bound.
	tc.write(requestBytes(2, true, reqParams("POST", "/noread", "CONTENT_LENGTH", "40000"), bytes.Repeat([]byte("x"), 40000)))
	for id := uint16(3); id < 10; id++ {
		tc.write(requestBytes(id, true, reqParams("GET", fmt.Sprintf("/fast%d", id)), []byte{}))
	}
	for id := uint16(3); id < 10; id++ {
		out, _ := tc.end(id)
		if want := fmt.Sprintf("/fast%d", id); !strings.HasSuffix(out, want) {
			t.Fatalf("id %d got %q", id, out)
		}
	}
	close(release)
	for _, id := range []uint16{1, 2} {
		if out, _ := tc.end(id); !strings.Contains(out, "/") {
			t.Fatal(out)
		}
	}
}

func TestStreamingBodyAndFlush(t *testing.T) {
	gotFirst := make(chan string)
	sawFlush := make(chan struct{})
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 100)
		n, err := r.Body.Read(buf)
		if err != nil {
			t.Error(err)
		}
		gotFirst <- string(buf[:n])
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		<-sawFlush
		rest, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "rest=%s err=%v", rest, err)
	})})
	tc.write(requestBytes(1, true, reqParams("POST", "/s", "CONTENT_LENGTH", "10"), nil))
	tc.write(rec(typeStdin, 1, []byte("hello"), 0))
	if s := <-gotFirst; s != "hello" {
		t.Fatal(s)
	}
	for !strings.Contains(tc.out[1].String(), "first;") {
		if _, err := tc.read(); err != nil {
			t.Fatal(err)
		}
	}
	if h := tc.out[1].String(); !strings.Contains(h, "Content-Type: application/octet-stream") || strings.Contains(h, "Content-Length") {
		t.Fatalf("streamed header %q", h)
	}
	close(sawFlush)
	tc.write(rec(typeStdin, 1, []byte("world"), 0))
	tc.write(rec(typeStdin, 1, nil, 0))
	out, _ := tc.end(1)
	if !strings.HasSuffix(out, "first;rest=world err=<nil>") {
		t.Fatal(out)
	}
}

// Authorizer role: the status and Variable-* headers go back as CGI.
func TestAuthorizer(t *testing.T) {
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody {
			t.Error("authorizer got a body")
		}
		if Params(r)["REMOTE_USER"] == "alice" {
			w.Header().Set("Variable-AUTH_METHOD", "database lookup")
			w.WriteHeader(200)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
		w.WriteHeader(401)
		io.WriteString(w, "denied")
	})
	tc := serve(t, &Server{Handler: echo, Authorizer: auth})
	ask := func(user string) *cgiResponse {
		tc.write(rec(typeBeginRequest, 1, beginBody(roleAuthorizer, flagKeepConn), 0))
		tc.write(rec(typeParams, 1, pairs("REQUEST_URI", "/private", "HTTP_HOST", "h", "REMOTE_USER", user), 0))
		tc.write(rec(typeParams, 1, nil, 0)) // no STDIN for authorizers
		out, proto := tc.end(1)
		if proto != statusRequestComplete {
			t.Fatalf("proto %d", proto)
		}
		return parseCGI(t, out)
	}
	if r := ask("alice"); r.status != 200 || r.header.Get("Variable-Auth_method") != "database lookup" {
		t.Fatalf("allow: %q", r.raw)
	}
	if r := ask("mallory"); r.status != 401 || r.body != "denied" || r.header.Get("Www-Authenticate") == "" {
		t.Fatalf("deny: %q", r.raw)
	}
	// A late STDIN for an authorizer request is ignored.
	tc.write(rec(typeStdin, 1, []byte("x"), 0))
	if r := tc.do(1, reqParams("GET", "/resp"), []byte{}); r.status != 200 {
		t.Fatal(r.raw)
	}
}

func TestNilHandler(t *testing.T) {
	tc := serve(t, &Server{})
	if r := tc.do(1, reqParams("GET", "/"), []byte{}); r.status != 500 {
		t.Fatal(r.raw)
	}
}

func TestRequestContextCancelledAfterHandler(t *testing.T) {
	ctxc := make(chan context.Context, 1)
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ctxc <- r.Context() })})
	tc.do(1, reqParams("GET", "/"), []byte{})
	select {
	case <-(<-ctxc).Done():
	case <-time.After(5 * time.Second):
		t.Fatal("request context not cancelled after the handler returned")
	}
}
