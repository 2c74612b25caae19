package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"strings"
	"testing"
	"time"
)

// The client against the standard library's FastCGI server: params,
// headers, status and a body larger than one record all arrive intact.
func TestFastCGIGetAgainstNetHTTPFcgi(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := strings.Repeat("x", 200_000)
	done := make(chan error, 1)
	go func() {
		done <- fcgi.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			env := fcgi.ProcessEnv(r)
			w.Header().Set("X-Path", r.URL.Path)
			w.Header().Set("X-Query", r.URL.RawQuery)
			w.Header().Set("X-Accept", r.Header.Get("Accept"))
			w.Header().Set("X-Gateway", env["GATEWAY_INTERFACE"])
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, big)
		}))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := FastCGIGet(ctx, "tcp", l.Addr().String(), "/a/b?x=1", http.Header{"Accept": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(resp.Status, resp.Header.Get("X-Path"), resp.Header.Get("X-Query"), resp.Header.Get("X-Accept"))
	if got != fmt.Sprint(418, "/a/b", "x=1", "application/json") || len(resp.Body) != len(big) {
		t.Errorf("got %s, body %d bytes", got, len(resp.Body))
	}
	l.Close()
	<-done
}

func TestFastCGIGetHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // accepts and never answers
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := FastCGIGet(ctx, "tcp", l.Addr().String(), "/", nil); err == nil {
		t.Fatal("no error from a server that never answers")
	}
}

func TestParseCGIResponse(t *testing.T) {
	r, err := parseCGIResponse([]byte("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"))
	if err != nil || r.Status != 404 || r.Header.Get("Content-Type") != "text/plain" || string(r.Body) != "nope" || r.Header.Get("Status") != "" {
		t.Errorf("%+v %v", r, err)
	}
	r, err = parseCGIResponse([]byte("Content-Type: text/html\n\n<p>"))
	if err != nil || r.Status != 200 || string(r.Body) != "<p>" {
		t.Errorf("%+v %v", r, err)
	}
}
