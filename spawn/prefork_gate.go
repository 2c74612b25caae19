package spawn

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// Gate lets a restart stop accepting without losing connections that were
// accepted but not yet answered. A server's Shutdown closes every
// connection with no request in progress, and that includes one whose
// first request is still unread in its buffer: the web server then sees a
// reset on a fresh connection and fails the request. Drain waits for those
// first. The zero value is ready to use.
type Gate struct {
	mu       sync.Mutex
	pending  int // accepts in progress plus connections that have not written yet
	stopping bool
	ls       []*gateListener
	changed  chan struct{} // closed when pending drops
}

// Listener wraps l. Closing the result closes l.
func (g *Gate) Listener(l net.Listener) net.Listener {
	gl := &gateListener{Listener: l, g: g, done: make(chan struct{})}
	g.mu.Lock()
	g.ls = append(g.ls, gl)
	g.mu.Unlock()
	return gl
}

// Drain stops accepting on g's listeners (their sockets stay open in the
// kernel only if the caller holds another descriptor) and waits until
// every connection accepted so far has written something or closed, or
// ctx is done.
func (g *Gate) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.stopping = true
	ls := g.ls
	g.mu.Unlock()
	for _, gl := range ls {
		gl.Listener.Close() // a pending Accept returns
	}
	for {
		g.mu.Lock()
		if g.pending == 0 {
			g.mu.Unlock()
			return nil
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (g *Gate) add(n int) (stopping bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending += n
	if n < 0 && g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
	return g.stopping
}

type gateListener struct {
	net.Listener
	g    *Gate
	done chan struct{}
	once sync.Once
}

func (l *gateListener) Accept() (net.Conn, error) {
	if l.g.add(1) {
		l.g.add(-1)
		<-l.done // stopped by Drain: wait for the server's Close
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		stopping := l.g.add(-1)
		if stopping {
			<-l.done
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return &gateConn{Conn: c, g: l.g}, nil // counted until it writes
}

func (l *gateListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type gateConn struct {
	net.Conn
	g        *Gate
	answered atomic.Bool
}

func (c *gateConn) settle() {
	if c.answered.CompareAndSwap(false, true) {
		c.g.add(-1)
	}
}

func (c *gateConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.settle()
	}
	return n, err
}

func (c *gateConn) Close() error {
	c.settle()
	return c.Conn.Close()
}

// CloseWrite passes a half-close through (SCGI and AJP end responses so).
func (c *gateConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
