package serve

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/fcgi"
	"github.com/fcgishim/fcgishim/handler"
)

// BenchmarkSpawnedPing serves what Apache + mod_fcgid sends to a spawned
// mysite.fcgi, in process: fcgi.Server.ServeFD on a listening socket, one
// new connection per request, Apache's CGI variables for
// /site/mysite.fcgi/ping. "chain" is the production handler chain (the
// gateway, [server] ping_path, an info-page site) as serve builds it;
// "hello" is a bare handler on the same server, the floor of the chain.
//
//	go test -run '^$' -bench SpawnedPing -benchmem -count 6 ./serve
func BenchmarkSpawnedPing(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	cfg := &config.Config{Server: config.Server{PingPath: "/ping"}}
	proc := &handler.Process{Mode: "fastcgi-stdin", Protocol: "fastcgi"}
	site, err := handler.New(handler.Options{Config: cfg, Process: proc, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	defer site.Close(context.Background())
	gw := &handler.Gateway{Next: site, Process: proc, ForceScriptName: cfg.Server.ForceScriptName}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("pong\n"))
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"hello", hello}, {"chain", gw}} {
		b.Run(c.name, func(b *testing.B) {
			srv, vars := newServer("fcgi", c.h, cfg, log)
			gw.Vars, gw.Var = vars, varOf("fcgi")
			path := filepath.Join(b.TempDir(), "s")
			l, err := net.Listen("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			f, err := l.(*net.UnixListener).File()
			if err != nil {
				b.Fatal(err)
			}
			l.Close() // f keeps the socket
			defer f.Close()
			done := make(chan error, 1)
			go func() { done <- srv.(*fcgi.Server).ServeFD(int(f.Fd())) }()
			defer func() { srv.Close(); <-done }()
			req := apacheRequest("GET", "/site/mysite.fcgi", "/ping")
			resp := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				if resp, err = fcgiRoundTrip(path, req, resp[:0]); err != nil {
					b.Fatal(err)
				}
			}
			if !containsPong(resp) {
				b.Fatalf("unexpected answer %q", resp)
			}
		})
	}
}

func containsPong(b []byte) bool {
	for i := 0; i+4 <= len(b); i++ {
		if string(b[i:i+4]) == "pong" {
			return true
		}
	}
	return false
}

// apacheRequest is one request as mod_fcgid sends it: BEGIN_REQUEST without
// keep-conn, Apache's CGI variables, an empty STDIN.
func apacheRequest(method, script, pathInfo string) []byte {
	uri := script + pathInfo
	params := []string{
		"HTTP_HOST", "127.0.0.1:18083",
		"HTTP_USER_AGENT", "wrk",
		"HTTP_ACCEPT", "*/*",
		"PATH", "/usr/local/bin:/usr/bin:/bin",
		"SERVER_SIGNATURE", "",
		"SERVER_SOFTWARE", "Apache/2.4.62 (Debian)",
		"SERVER_NAME", "127.0.0.1",
		"SERVER_ADDR", "127.0.0.1",
		"SERVER_PORT", "18083",
		"REMOTE_ADDR", "127.0.0.1",
		"DOCUMENT_ROOT", "/tmp/bench/docroot",
		"REQUEST_SCHEME", "http",
		"CONTEXT_PREFIX", "",
		"CONTEXT_DOCUMENT_ROOT", "/tmp/bench/docroot",
		"SERVER_ADMIN", "webmaster@localhost",
		"SCRIPT_FILENAME", "/tmp/bench/docroot" + script,
		"REMOTE_PORT", "41234",
		"GATEWAY_INTERFACE", "CGI/1.1",
		"SERVER_PROTOCOL", "HTTP/1.1",
		"REQUEST_METHOD", method,
		"QUERY_STRING", "",
		"REQUEST_URI", uri,
		"SCRIPT_NAME", script,
		"PATH_INFO", pathInfo,
		"PATH_TRANSLATED", "/tmp/bench/docroot" + pathInfo,
	}
	var pb []byte
	for i := 0; i < len(params); i += 2 {
		pb = appendLen(pb, len(params[i]))
		pb = appendLen(pb, len(params[i+1]))
		pb = append(pb, params[i]...)
		pb = append(pb, params[i+1]...)
	}
	b := appendRecord(nil, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}) // responder, no keep-conn
	b = appendRecord(b, 4, pb)
	b = appendRecord(b, 4, nil)
	return appendRecord(b, 5, nil)
}

func appendLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|1<<31)
}

func appendRecord(b []byte, typ byte, content []byte) []byte {
	pad := -len(content) & 7
	b = append(b, 1, typ, 0, 1, byte(len(content)>>8), byte(len(content)), byte(pad), 0)
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// fcgiRoundTrip sends req on a new connection and appends the STDOUT
// content to resp until FCGI_END_REQUEST.
func fcgiRoundTrip(path string, req, resp []byte) ([]byte, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return resp, err
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return resp, err
	}
	br := bufio.NewReaderSize(c, 4096)
	var h [8]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return resp, err
		}
		n, pad := int(binary.BigEndian.Uint16(h[4:])), int(h[6])
		if h[1] == 6 { // FCGI_STDOUT
			start := len(resp)
			resp = append(resp, make([]byte, n)...)
			if _, err := io.ReadFull(br, resp[start:]); err != nil {
				return resp, err
			}
			n = 0
		}
		if _, err := br.Discard(n + pad); err != nil {
			return resp, err
		}
		if h[1] == 3 { // FCGI_END_REQUEST
			return resp, nil
		}
	}
}
