package spawn

import (
	"fmt"
	"net"
	"os"
	"sync"
)

// EnvWorkerFD names a prefork worker's control socket descriptor.
const EnvWorkerFD = "FCGISHIM_WORKER_FD"

// Bytes on the control socket, one per state change, as flup's
// preforkserver sends them.
const (
	ctlIdle = 'i' // worker → supervisor: waiting in accept
	ctlBusy = 'b' // worker → supervisor: serving a connection
	ctlQuit = 'q' // worker → supervisor: accepts no more and will exit;
	// supervisor → worker: retire (finish the open connection, then exit)
)

// WorkerListener wraps a prefork worker's share l of the supervisor's
// listener: it hands out one connection at a time (flup: a worker serves one
// request at a time), reports idle/busy on the control socket fd, and stops
// accepting after maxConns connections (0 = no limit) or when the
// supervisor says to retire. quit is called once when the worker should
// exit: no connection is open and none will be accepted, or the supervisor
// is gone. stop closes the control socket; call it after serving ends.
//
// Retiring never closes a connection that was accepted but not yet read
// (a server's Shutdown would): the worker finishes it first.
func WorkerListener(l net.Listener, fd, maxConns int, quit func()) (wl net.Listener, stop func(), err error) {
	f := os.NewFile(uintptr(fd), "prefork-control")
	c, err := net.FileConn(f) // a close-on-exec duplicate
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("prefork worker: control socket fd %d: %w", fd, err)
	}
	w := &workerListener{inner: l, ctl: c, max: maxConns, quit: quit,
		token: make(chan struct{}, 1), done: make(chan struct{}), readDone: make(chan struct{})}
	go w.readControl()
	return w, w.stop, nil
}

type workerListener struct {
	inner net.Listener
	ctl   net.Conn
	max   int
	quit  func()

	token    chan struct{} // held from accept until that connection closes
	done     chan struct{} // closed by Close
	readDone chan struct{}

	mu       sync.Mutex
	n        int  // connections accepted
	retiring bool // accept no more
	last     byte // last state reported

	closeOnce, quitOnce sync.Once
}

func (w *workerListener) Accept() (net.Conn, error) {
	select {
	case <-w.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case w.token <- struct{}{}:
	case <-w.done:
		return nil, net.ErrClosed
	}
	if w.isRetiring() {
		return nil, w.finish()
	}
	w.report(ctlIdle)
	c, err := w.inner.Accept()
	if err != nil {
		if w.isRetiring() { // retire closed inner
			return nil, w.finish()
		}
		<-w.token
		return nil, err
	}
	w.mu.Lock()
	w.n++
	if w.max > 0 && w.n >= w.max {
		w.retiring = true // this is the last one
	}
	w.mu.Unlock()
	w.report(ctlBusy)
	return &workerConn{Conn: c, w: w}, nil
}

// finish is Accept's end once retiring: it releases the token, asks the
// worker to quit, and waits for Close.
func (w *workerListener) finish() error {
	<-w.token
	w.report(ctlQuit)
	w.quitOnce.Do(w.quit)
	<-w.done
	return net.ErrClosed
}

func (w *workerListener) isRetiring() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.retiring
}

// retire stops accepting: a pending accept returns (or hands out the
// connection it already has, which is served first).
func (w *workerListener) retire() {
	w.mu.Lock()
	w.retiring = true
	w.mu.Unlock()
	w.inner.Close()
}

func (w *workerListener) report(state byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == state || w.last == ctlQuit {
		return
	}
	w.last = state
	w.ctl.Write([]byte{state}) // fails only when the supervisor is gone; readControl handles that
}

func (w *workerListener) readControl() {
	defer close(w.readDone)
	b := make([]byte, 1)
	for {
		if _, err := w.ctl.Read(b); err != nil {
			// The supervisor is gone (or stop closed the socket): a
			// worker never outlives its supervisor.
			w.quitOnce.Do(w.quit)
			return
		}
		if b[0] == ctlQuit {
			w.retire()
		}
	}
}

func (w *workerListener) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.report(ctlQuit)
	})
	return w.inner.Close()
}

func (w *workerListener) Addr() net.Addr { return w.inner.Addr() }

func (w *workerListener) stop() {
	w.ctl.Close()
	<-w.readDone
}

// workerConn gives the worker's token back when it closes.
type workerConn struct {
	net.Conn
	w    *workerListener
	once sync.Once
}

func (c *workerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.w.token })
	return err
}

// CloseWrite passes a half-close through (SCGI and AJP end responses so).
func (c *workerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
