package ajp

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkServeTCP serves ten requests per connection over loopback TCP:
// the accept loop, connection tracking and close included.
func BenchmarkServeTCP(b *testing.B) {
	in := get("/a").bytes()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	defer func() { s.Close(); <-served }()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		for range 10 {
			if _, err := c.Write(in); err != nil {
				b.Fatal(err)
			}
			if _, err := readUntilEnd(c); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
	}
}
