package prefork

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// EnvWorkerFD names a prefork worker's control socket descriptor.
const EnvWorkerFD = "FCGISHIM_WORKER_FD"

// Bytes on the control socket, one per change of a worker's state. flup's
// workers serve one connection at a time and know two states, idle and
// busy; ours serve many connections at once, so "busy" means "serving, and
// able to take more", and a worker that can take no more says so.
const (
	ctlIdle = 'i' // worker → supervisor: accepting, no connection open
	ctlBusy = 'b' // worker → supervisor: accepting, some connections open
	ctlFull = 'f' // worker → supervisor: at its connection limit, none of them idle
	ctlQuit = 'q' // worker → supervisor: accepts no more and will exit;
	// supervisor → worker: retire (finish the open connections, then exit)
	ctlAccept  = 'a' // supervisor → worker: take new connections
	ctlStandBy = 's' // supervisor → worker: take none until told to (the default)
)

// WorkerOptions are a prefork worker's limits. Zero values mean no limit.
type WorkerOptions struct {
	// MaxConns is how many connections the worker serves at once; at the
	// limit it stops accepting (the others, or a new worker, do) until one
	// closes.
	MaxConns int
	// FastCGI says the connections carry FastCGI: the worker then tells
	// which have a request in flight, and at MaxConns closes the one idle
	// longest instead of counting as full (see prefork_evict.go).
	FastCGI bool
	// Quota is how many connections the worker accepts in its life; after
	// the last one it retires (runfcgi maxrequests: every connection
	// carries at least one request, so this bounds the requests of a
	// web server that opens one connection per request).
	Quota int
}

// WorkerListener wraps a prefork worker's share l of the supervisor's
// listener: while the supervisor lets it accept (it starts standing by),
// it hands out up to o.MaxConns connections at once, reports the
// worker's state (idle, busy, full) on the control socket fd, and stops
// accepting after o.Quota connections, or when Retire is called, or when
// the supervisor says to retire. quit is called once when the worker
// should exit: it accepts no more and its server should drain, or the
// supervisor is gone. stop closes the control socket; call it after serving
// ends.
//
// Retiring never closes a connection that was accepted but not yet read
// (a server's Shutdown would): it is handed out, then Accept fails.
func WorkerListener(l net.Listener, fd int, o WorkerOptions, quit func()) (wl *Worker, stop func(), err error) {
	f := os.NewFile(uintptr(fd), "prefork-control")
	c, err := net.FileConn(f) // a close-on-exec duplicate
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("prefork worker: control socket fd %d: %w", fd, err)
	}
	w := &Worker{inner: l, ctl: c, opts: o, quit: quit, gate: make(chan struct{}),
		done: make(chan struct{}), retired: make(chan struct{}), readDone: make(chan struct{})}
	if o.MaxConns > 0 {
		w.slots = make(chan struct{}, o.MaxConns)
	}
	if o.FastCGI {
		w.conns = make(map[*workerConn]struct{})
	}
	go w.readControl()
	return w, w.stop, nil
}

// Worker is the listener of a prefork worker; see WorkerListener.
type Worker struct {
	inner net.Listener
	ctl   net.Conn
	opts  WorkerOptions
	quit  func()

	slots    chan struct{} // one per open connection; nil = no limit
	done     chan struct{} // closed by Close
	retired  chan struct{} // closed when it accepts no more
	readDone chan struct{}

	mu       sync.Mutex
	gate     chan struct{}            // closed while it may accept
	active   bool                     // gate is closed
	conns    map[*workerConn]struct{} // open ones, when FastCGI
	open     int                      // connections open
	accepted int                      // connections accepted so far
	retiring bool                     // accept no more
	last     byte                     // last state reported

	idleTimer *time.Timer // reports idle after idleDelay
	limited   atomic.Bool // open >= MaxConns: reads and writes rebalance
	recheck   *time.Timer // rebalances while at the limit
	rearm     bool        // recheck is not pending

	closeOnce, quitOnce sync.Once
}

func (w *Worker) Accept() (net.Conn, error) {
	w.mu.Lock()
	w.reportLocked() // the first time: ready
	w.mu.Unlock()
	for {
		err := w.awaitTurn()
		if err == nil {
			err = w.takeSlot()
		}
		if err == errRetired || err == nil && w.isRetiring() {
			if err == nil {
				w.releaseSlot()
			}
			return nil, w.finish()
		}
		if err != nil {
			return nil, err
		}
		c, err := w.inner.Accept()
		if err != nil {
			w.releaseSlot()
			if w.isRetiring() { // Retire closed inner
				return nil, w.finish()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) { // told to stand by
				continue
			}
			return nil, err
		}
		return w.admit(c), nil
	}
}

// awaitTurn waits until the supervisor lets the worker accept, or it
// retires (errRetired) or closes.
func (w *Worker) awaitTurn() error {
	w.mu.Lock()
	gate := w.gate
	w.mu.Unlock()
	select {
	case <-gate:
		return nil
	case <-w.retired:
		return errRetired
	case <-w.done:
		return net.ErrClosed
	}
}

// setActive lets the worker accept or stops it; a pending accept is cut
// short by a deadline in the past.
func (w *Worker) setActive(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on == w.active {
		return
	}
	w.active = on
	d, ok := w.inner.(interface{ SetDeadline(time.Time) error })
	if on {
		if ok {
			d.SetDeadline(time.Time{})
		}
		close(w.gate)
		return
	}
	w.gate = make(chan struct{})
	if ok {
		d.SetDeadline(time.Now())
	}
}

// admit counts a new connection, and at the limit picks an idle one to
// close to keep room for the next.
func (w *Worker) admit(c net.Conn) net.Conn {
	wc := &workerConn{Conn: c, w: w}
	var victim *workerConn
	w.mu.Lock()
	w.open++
	w.accepted++
	if w.opts.Quota > 0 && w.accepted >= w.opts.Quota {
		w.retireLocked() // this is the last one
	}
	if w.conns != nil {
		wc.flight = newFlight(time.Now())
		w.conns[wc] = struct{}{}
		if w.atLimitLocked() { // keep room for the next one
			victim = w.evictLocked(wc)
		}
	}
	w.reportLocked()
	limited := w.limited.Load()
	w.mu.Unlock()
	if victim != nil {
		victim.Conn.Close() // the server sees it end and closes its side
	}
	if limited && victim == nil && w.conns != nil {
		w.rebalance() // starts the rechecks
	}
	return wc
}

var errRetired = errors.New("prefork worker: retired")

// takeSlot waits until fewer than MaxConns connections are open, or until
// the worker retires (errRetired) or closes.
func (w *Worker) takeSlot() error {
	select {
	case <-w.done:
		return net.ErrClosed
	case <-w.retired:
		return errRetired
	default:
	}
	if w.slots == nil {
		return nil
	}
	select {
	case w.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case w.slots <- struct{}{}:
		return nil
	case <-w.retired:
		return errRetired
	case <-w.done:
		return net.ErrClosed
	}
}

func (w *Worker) releaseSlot() {
	if w.slots != nil {
		<-w.slots
	}
}

// finish is Accept's end once retiring: it asks the worker to quit and
// waits for Close.
func (w *Worker) finish() error {
	w.mu.Lock()
	w.reportLocked()
	w.mu.Unlock()
	w.quitOnce.Do(w.quit)
	<-w.done
	return net.ErrClosed
}

func (w *Worker) isRetiring() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.retiring
}

// Retire stops accepting: a pending Accept returns (or hands out the
// connection it already has first), and quit is called. For a worker that
// has served its share of requests.
func (w *Worker) Retire() {
	w.mu.Lock()
	w.retireLocked()
	w.mu.Unlock()
	w.inner.Close()
}

func (w *Worker) retireLocked() {
	if !w.retiring {
		w.retiring = true
		close(w.retired)
	}
	w.reportLocked()
}

// idleDelay is how long a worker must have had no connection open before
// it reports idle. The supervisor needs "idle" only to retire workers
// beyond maxspare, which can wait; without the delay, a web server that
// opens a connection per request would make the worker report busy and
// idle for nearly every request.
const idleDelay = 500 * time.Millisecond

// reportLocked sends the worker's state if it changed (idle only once it
// has lasted idleDelay). Once it has said it quits, it says nothing more.
func (w *Worker) reportLocked() {
	var state byte
	switch {
	case w.retiring:
		state = ctlQuit
	case w.atLimitLocked() && (w.conns == nil || w.longestIdleLocked(nil, false) == nil):
		// Whether Accept waits or the server stops calling it (its own
		// limit may be the same). One with an idle connection to close
		// is not full.
		state = ctlFull
	case w.open == 0:
		state = ctlIdle
	default:
		state = ctlBusy
	}
	if state == ctlIdle && w.last != 0 && w.last != ctlIdle {
		if w.idleTimer == nil {
			w.idleTimer = time.AfterFunc(idleDelay, w.reportIdle)
		} else {
			w.idleTimer.Reset(idleDelay)
		}
		state = ctlBusy // until the timer says otherwise
	}
	w.sendLocked(state)
}

// reportIdle reports idle if no connection was opened since the timer was
// set (Reset re-arms a timer that has fired; stale runs find open > 0).
func (w *Worker) reportIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open == 0 && !w.retiring {
		w.sendLocked(ctlIdle)
	}
}

func (w *Worker) sendLocked(state byte) {
	if w.last == state || w.last == ctlQuit {
		return
	}
	w.last = state
	w.ctl.Write([]byte{state}) // fails only when the supervisor is gone; readControl handles that
}

func (w *Worker) readControl() {
	defer close(w.readDone)
	b := make([]byte, 1)
	for {
		if _, err := w.ctl.Read(b); err != nil {
			// The supervisor is gone (or stop closed the socket): a
			// worker never outlives its supervisor.
			w.quitOnce.Do(w.quit)
			return
		}
		switch b[0] {
		case ctlQuit:
			w.Retire()
		case ctlAccept:
			w.setActive(true)
		case ctlStandBy:
			w.setActive(false)
		}
	}
}

func (w *Worker) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.mu.Lock()
		w.retireLocked()
		w.mu.Unlock()
	})
	return w.inner.Close()
}

func (w *Worker) Addr() net.Addr { return w.inner.Addr() }

func (w *Worker) stop() {
	w.mu.Lock()
	if w.idleTimer != nil {
		w.idleTimer.Stop()
	}
	if w.recheck != nil {
		w.recheck.Stop()
	}
	w.mu.Unlock()
	w.ctl.Close()
	<-w.readDone
}

func (w *Worker) atLimitLocked() bool {
	at := w.opts.MaxConns > 0 && w.open >= w.opts.MaxConns
	w.limited.Store(at)
	return at
}

// recheckEvery is how often a worker at its limit looks for connections
// waiting in the backlog while its own are silent.
const recheckEvery = 25 * time.Millisecond

// rebalance runs at the limit when a connection's requests change, and
// every recheckEvery: it closes the connection idle longest if connections
// wait to be accepted, and reports the state (full only while every
// connection has a request in flight).
func (w *Worker) rebalance() {
	var victim *workerConn
	w.mu.Lock()
	if w.atLimitLocked() && w.conns != nil {
		if waiting(w.inner) {
			victim = w.evictLocked(nil)
		}
		if w.recheck == nil {
			w.recheck = time.AfterFunc(recheckEvery, w.onRecheck)
		} else if w.rearm {
			w.recheck.Reset(recheckEvery)
		}
		w.rearm = false
	}
	w.reportLocked()
	w.mu.Unlock()
	if victim != nil {
		victim.Conn.Close()
	}
}

func (w *Worker) onRecheck() {
	w.mu.Lock()
	w.rearm = true
	done := w.retiring
	w.mu.Unlock()
	if !done {
		w.rebalance()
	}
}

// evictLocked picks the connection idle longest (not except) to close;
// the caller closes it after unlocking.
func (w *Worker) evictLocked(except *workerConn) *workerConn {
	victim := w.longestIdleLocked(except, true)
	if victim != nil {
		delete(w.conns, victim) // chosen once; closed() counts it
	}
	return victim
}

func (w *Worker) closed(c *workerConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.open--
	w.reportLocked()
	w.mu.Unlock()
	w.releaseSlot()
}

// workerConn gives its slot back when it closes, and follows FastCGI
// records when flight is set.
type workerConn struct {
	net.Conn
	w      *Worker
	flight *flight
	once   sync.Once
}

func (c *workerConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.flight != nil && n > 0 {
		c.flight.read(b[:n])
		if c.w.limited.Load() {
			c.w.rebalance()
		}
	}
	return n, err
}

func (c *workerConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.flight != nil && n > 0 {
		c.flight.wrote(b[:n])
		if c.w.limited.Load() {
			c.w.rebalance()
		}
	}
	return n, err
}

func (c *workerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.w.closed(c) })
	return err
}

// CloseWrite passes a half-close through (SCGI and AJP end responses so).
func (c *workerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
