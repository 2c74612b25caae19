package handler

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/fcgishim/fcgishim/config"
)

// BenchmarkProxy runs one GET through the proxy to a Go HTTP app on a unix
// socket, side by side with the standard library's ReverseProxy over an
// http.Transport doing the same.
//
//	go test -run '^$' -bench Proxy -benchmem ./handler
func BenchmarkProxy(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "app.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Hello, world!")
	})}
	go srv.Serve(l)
	defer srv.Close()

	site, err := New(Options{Config: &config.Config{App: config.App{Upstream: "unix:" + sock}}, Process: &Process{}})
	if err != nil {
		b.Fatal(err)
	}
	defer site.Close(context.Background())
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 1024,
	}
	defer tr.CloseIdleConnections()
	std := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "app"})
	std.Transport = tr

	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"fcgishim", site}, {"httputil", std}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", "/hello", nil)
				for pb.Next() {
					rec := httptest.NewRecorder()
					c.h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Fatalf("status %d: %s", rec.Code, rec.Body)
					}
				}
			})
		})
	}
}
