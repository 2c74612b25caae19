package prefork

import (
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A worker serving FastCGI follows the record headers that pass through its
// connections (not their contents) to know which connections have a request
// in flight: from the end of its FCGI_PARAMS, when the server hands it to
// the application, to its FCGI_END_REQUEST. A connection with none is idle:
// a web server's kept connection between requests, a client that connected
// and sent nothing, or one that stalls before its parameters are complete.
// When the worker reaches its connection limit it closes the connection
// that has been idle longest, so that no number of idle or slow clients can
// keep a request from being accepted. A web server retries a request that
// fails on a kept connection it finds closed (nginx does).

// Record types and header layout, as on the wire (FastCGI 1.0).
const (
	fcgiHeaderLen  = 8
	fcgiParams     = 4
	fcgiEndRequest = 3
)

// recordFollower walks the record headers of one direction of a FastCGI
// stream, across arbitrary read or write boundaries, and calls on for each
// header.
type recordFollower struct {
	hdr  [fcgiHeaderLen]byte
	hn   int // header bytes held
	skip int // content and padding bytes left of the current record
}

func (f *recordFollower) walk(b []byte, on func(typ byte, id uint16, contentLen int)) {
	for len(b) > 0 {
		if f.skip > 0 {
			n := min(f.skip, len(b))
			f.skip -= n
			b = b[n:]
			continue
		}
		n := copy(f.hdr[f.hn:], b)
		f.hn += n
		b = b[n:]
		if f.hn < fcgiHeaderLen {
			return
		}
		f.hn = 0
		clen := int(f.hdr[4])<<8 | int(f.hdr[5])
		f.skip = clen + int(f.hdr[6])
		on(f.hdr[1], uint16(f.hdr[2])<<8|uint16(f.hdr[3]), clen)
	}
}

// flight is what a connection's followers know: the ids of its requests in
// flight, and since when it has had none. The reader adds, the writer
// removes, eviction reads.
type flight struct {
	in, out recordFollower // only their own goroutine's
	mu      sync.Mutex
	ids     []uint16
	idle    time.Time // zero while a request is in flight
}

func newFlight(now time.Time) *flight { return &flight{idle: now} }

// read follows bytes the server read: an empty FCGI_PARAMS record ends a
// request's parameters.
func (f *flight) read(b []byte) {
	f.in.walk(b, func(typ byte, id uint16, clen int) {
		if typ == fcgiParams && clen == 0 && id != 0 {
			f.mu.Lock()
			f.ids = append(f.ids, id)
			f.idle = time.Time{}
			f.mu.Unlock()
		}
	})
}

// wrote follows bytes the server wrote: FCGI_END_REQUEST ends a request
// (or refuses one that never got its parameters).
func (f *flight) wrote(b []byte) {
	f.out.walk(b, func(typ byte, id uint16, _ int) {
		if typ != fcgiEndRequest {
			return
		}
		f.mu.Lock()
		for i, x := range f.ids {
			if x == id {
				f.ids = append(f.ids[:i], f.ids[i+1:]...)
				break
			}
		}
		if len(f.ids) == 0 && f.idle.IsZero() {
			f.idle = time.Now()
		}
		f.mu.Unlock()
	})
}

// idleSince reports since when the connection has had no request in flight
// (ok false: one is in flight).
func (f *flight) idleSince() (t time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idle, len(f.ids) == 0
}

// longestIdleLocked returns the open connection idle longest, other than
// except, or nil when every other one has a request in flight. With check,
// a connection whose bytes wait unread in the kernel (a request on its
// way to the server) is passed over.
func (w *Worker) longestIdleLocked(except *workerConn, check bool) *workerConn {
	var skip []*workerConn
	for {
		var victim *workerConn
		var since time.Time
		for c := range w.conns {
			if c == except || slices.Contains(skip, c) {
				continue
			}
			t, ok := c.flight.idleSince()
			if ok && (victim == nil || t.Before(since)) {
				victim, since = c, t
			}
		}
		if victim == nil || !check || !unread(victim.Conn) {
			return victim
		}
		skip = append(skip, victim)
	}
}

// unread reports whether bytes wait in c's receive queue.
func unread(c net.Conn) bool {
	n := 0
	withFD(c, func(fd int) { n, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
	return n > 0
}

// waiting reports whether connections wait in l's backlog: no worker has
// taken them.
func waiting(l net.Listener) bool {
	n := 0
	withFD(l, func(fd int) {
		n, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
	})
	return n > 0
}

// withFD runs f on the descriptor of a connection or listener, if it has
// one; f must not keep it.
func withFD(x any, f func(fd int)) {
	sc, ok := x.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { f(int(fd)) })
}
