package fcgi

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn reads a fixed input and records what is written; deadlines are
// ignored. It lets a test run one connection without sockets. Like a
// socket, it stops reading once closed (an abrupt close ends the stream);
// writes are always recorded, since the end of the input is not the end of
// the peer.
type fakeConn struct {
	in     io.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed atomic.Bool
}

func (f *fakeConn) Read(p []byte) (int, error) {
	if f.closed.Load() {
		return 0, net.ErrClosed
	}
	return f.in.Read(p)
}
func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.out.Len() > 16<<20 {
		return 0, io.ErrShortWrite
	}
	return f.out.Write(p)
}
func (f *fakeConn) Close() error                       { f.closed.Store(true); return nil }
func (f *fakeConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "local", Net: "unix"} }
func (f *fakeConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "remote", Net: "unix"} }
func (f *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

// runConn serves one connection reading in and returns everything written.
func runConn(t testing.TB, s *Server, in []byte) []byte {
	s.init()
	s.sem <- struct{}{}
	fc := &fakeConn{in: bytes.NewReader(in)}
	c := s.newConn(context.Background(), fc)
	c.inline = viaServeFD(t)
	s.trackConn(c, true)
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	// A failure deadline only: every input finishes in microseconds, but a
	// fuzz worker on a loaded machine can be descheduled for seconds, and a
	// wall-clock failure that does not reproduce is reported by the fuzzer
	// with no crasher saved. A genuine hang still fails, with the input.
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("connection did not finish")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.out.Bytes()
}

// checkOutput checks our records: well formed, aligned, at most one
// END_REQUEST per BEGIN_REQUEST sent for an id, no STDOUT after END.
func checkOutput(t testing.TB, in, out []byte) {
	begins := map[uint16]int{}
	for s := in; len(s) >= headerLen; {
		var h header
		h.decode(s)
		if h.Type == typeBeginRequest {
			begins[h.ID]++
		}
		n := headerLen + int(h.ContentLength) + int(h.PaddingLength)
		if n > len(s) {
			break
		}
		s = s[n:]
	}
	ends := map[uint16]int{}
	ended := map[uint16]bool{}
	for s := out; len(s) > 0; {
		if len(s) < headerLen {
			t.Fatalf("truncated record header")
		}
		var h header
		h.decode(s)
		n := headerLen + int(h.ContentLength) + int(h.PaddingLength)
		if h.Version != 1 || h.PaddingLength > 7 || n%8 != 0 || n > len(s) {
			t.Fatalf("bad record %+v", h)
		}
		switch h.Type {
		case typeEndRequest:
			ends[h.ID]++
			ended[h.ID] = true
			if ends[h.ID] > begins[h.ID] {
				t.Fatalf("%d END_REQUESTs for id %d after %d BEGINs", ends[h.ID], h.ID, begins[h.ID])
			}
		case typeStdout:
			if ended[h.ID] && begins[h.ID] == ends[h.ID] {
				t.Fatalf("STDOUT for id %d after its END_REQUEST", h.ID)
			}
		}
		s = s[n:]
	}
}
