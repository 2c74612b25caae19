package fcgi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	stdfcgi "net/http/fcgi"
	"path/filepath"
	"sync"
	"testing"
)

var hello = []byte("Hello, world!")

func helloHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(hello)
}

// benchClient is a minimal keep-conn FastCGI client: sequential requests
// on one connection, request id 1 reused, as nginx does.
type benchClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
	hb  [headerLen]byte
}

func newBenchClient(b testing.TB, path string) *benchClient {
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	return &benchClient{c: c, br: bufio.NewReaderSize(c, 32<<10),
		req: requestBytes(1, true, reqParams("GET", "/hello?x=1"), []byte{})}
}

func (bc *benchClient) roundTrip() error {
	if _, err := bc.c.Write(bc.req); err != nil {
		return err
	}
	for {
		if _, err := io.ReadFull(bc.br, bc.hb[:]); err != nil {
			return err
		}
		var h header
		h.decode(bc.hb[:])
		if _, err := bc.br.Discard(int(h.ContentLength) + int(h.PaddingLength)); err != nil {
			return err
		}
		if h.Type == typeEndRequest {
			return nil
		}
	}
}

func BenchmarkServe(b *testing.B) {
	servers := []struct {
		name  string
		serve func(l net.Listener) (stop func())
	}{
		{"ours", func(l net.Listener) func() {
			s := &Server{Handler: http.HandlerFunc(helloHandler)}
			go s.Serve(l)
			return func() { s.Close() }
		}},
		{"stdlib", func(l net.Listener) func() {
			done := make(chan struct{})
			go func() { stdfcgi.Serve(l, http.HandlerFunc(helloHandler)); close(done) }()
			return func() { l.Close(); <-done }
		}},
	}
	for _, srv := range servers {
		b.Run(srv.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "s")
			l, err := net.Listen("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			stop := srv.serve(l)
			defer stop()
			bc := newBenchClient(b, path)
			defer bc.c.Close()
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.roundTrip(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkServeParallel(b *testing.B) {
	path := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: http.HandlerFunc(helloHandler)}
	go s.Serve(l)
	defer s.Close()
	var mu sync.Mutex
	var clients []*benchClient
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		bc := newBenchClient(b, path)
		mu.Lock()
		clients = append(clients, bc)
		mu.Unlock()
		for pb.Next() {
			if err := bc.roundTrip(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for _, bc := range clients {
		bc.c.Close()
	}
}
