package handler

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

func fuzzApp(t *testing.T, maxHeader int) *app {
	t.Helper()
	cfg := &config.Config{App: config.App{Upstream: "unix:/nonexistent/app.sock"}}
	cfg.Limits.MaxResponseHeaderBytes = maxHeader
	a, err := newApp(Options{Config: cfg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// FuzzUpstreamRequest: whatever method, host, path, query, fields and body
// reach the proxy, what it writes to the app is refused as a bad request or
// is exactly one HTTP/1.1 request that Go's parser reads back with the same
// method, host and body, with our forwarding facts and no hop-by-hop field:
// nothing a client sends can smuggle a second request or a header line.
func FuzzUpstreamRequest(f *testing.F) {
	f.Add("GET", "example.com", "/a", "x=1", "Accept", "*/*", "Cookie", "a=b", []byte(nil), false)
	f.Add("POST", "example.com", "/up", "", "Content-Type", "text/plain", "X-Forwarded-For", "6.6.6.6", []byte("hello"), false)
	f.Add("PUT", "h", "/c", "", "Transfer-Encoding", "chunked", "Content-Length", "0", []byte("0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"), true)
	f.Add("GET", "h\r\nX-Evil: 1", "/", "a b", "X-A", "v\r\nX-Injected: 1", "Connection", "X-A", []byte(nil), false)
	f.Add("GET", "h", "/", "q=%0d%0a", "Bad Name", "v", "X-Nul", "a\x00b", []byte(nil), true)
	f.Fuzz(func(t *testing.T, method, host, path, query, k1, v1, k2, v2 string, body []byte, chunked bool) {
		a := fuzzApp(t, 0)
		in := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: query}, Host: host,
			Header: http.Header{k1: {v1}, k2: {v2}}, RemoteAddr: "192.0.2.1:1234", Body: http.NoBody}
		if len(body) > 0 || chunked {
			in.Body = io.NopCloser(bytes.NewReader(body))
			in.ContentLength = int64(len(body))
			if chunked {
				in.ContentLength = -1
			}
		}
		o, err := a.newOutRequest(in)
		var bad errBadRequest
		if errors.As(err, &bad) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var wire bytes.Buffer
		bw := bufio.NewWriter(&wire)
		a.writeHead(bw, o)
		if o.length != 0 {
			err = writeBody(bw, o)
		} else {
			err = bw.Flush()
		}
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(bytes.NewReader(wire.Bytes()))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("wrote what Go cannot parse: %v\n%q", err, wire.Bytes())
		}
		got, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatalf("body: %v\n%q", err, wire.Bytes())
		}
		if rest, _ := io.ReadAll(br); len(rest) > 0 {
			t.Fatalf("%d bytes after the request (a second request?): %q\n%q", len(rest), rest, wire.Bytes())
		}
		if req.Method != method || req.Host != o.host || !bytes.Equal(got, body) {
			t.Fatalf("read back %s %q body %q; sent %s %q body %q", req.Method, req.Host, got, method, o.host, body)
		}
		if xff := req.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "192.0.2.1" {
			t.Fatalf("X-Forwarded-For %q", xff)
		}
		for k := range req.Header {
			if hopHeaders[k] && k != "Content-Length" && k != "Transfer-Encoding" {
				t.Fatalf("hop-by-hop %s sent: %q", k, req.Header[k])
			}
		}
	})
}

// socketPair returns two connected unix stream sockets.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	return cs[0], cs[1]
}

// FuzzUpstreamResponse: whatever bytes the app answers with, the proxy
// answers 502/504, or passes on a status with a field block that carries no
// hop-by-hop field and no line break in a value, and an explicit
// Content-Type on any body; or it breaks the response (a body cut off).
// It never panics otherwise, and never waits past the app's EOF.
func FuzzUpstreamResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-A\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nX-Accel-Redirect: /etc/passwd\r\n\r\nclose-delimited"))
	f.Add([]byte("HTTP/1.1 999 Weird\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		if len(resp) > 64<<10 {
			return
		}
		a := fuzzApp(t, 512)
		defer a.pool.closeIdle(true)
		a.timeout = 5 * time.Second
		cc, sc := socketPair(t)
		if _, err := sc.Write(resp); err != nil {
			t.Fatal(err)
		}
		sc.Close()
		in := httptest.NewRequest("GET", "/", nil)
		o, err := a.newOutRequest(in)
		if err != nil {
			t.Fatal(err)
		}
		uc := newUpConn(cc, "t")
		res, err := a.exchange(context.Background(), uc, o)
		if err != nil {
			return // 502 or 504, answered by proxyError
		}
		rec := httptest.NewRecorder()
		broken := false
		func() {
			defer func() {
				if v := recover(); v != nil {
					if v != http.ErrAbortHandler {
						panic(v)
					}
					broken = true
				}
			}()
			a.copyResponse(rec, in, uc, res)
		}()
		if rec.Code < 100 || rec.Code > 999 {
			t.Fatalf("status %d", rec.Code)
		}
		for k, vs := range rec.Header() {
			if hopHeaders[k] && k != "Content-Length" || strings.HasPrefix(k, "X-Accel-") {
				t.Fatalf("%s passed on: %q", k, vs)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("%s value with a line break: %q", k, v)
				}
			}
		}
		if !broken && rec.Body.Len() > 0 && rec.Header().Get("Content-Type") == "" {
			t.Fatalf("a body without Content-Type: %q", rec.Body.Bytes())
		}
	})
}
