package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

const readBufSize = 8 << 10

// lingerTimeout bounds how long a connection we are done with keeps reading
// after its half-close (see lingerClose).
const lingerTimeout = 2 * time.Second

// conn is one FastCGI connection. Its serve goroutine is the only reader;
// handler goroutines write through writeFor under wmu.
type conn struct {
	s      *Server
	rwc    net.Conn
	br     *bufio.Reader
	hb     [headerLen]byte
	ctx    context.Context
	cancel context.CancelFunc
	values []byte // reader-owned scratch for FCGI_GET_VALUES

	wmu  sync.Mutex // serializes writes to rwc
	wbuf []byte     // guarded by wmu: replies built by the reader goroutine

	mu       sync.Mutex
	reqs     map[uint16]*request // open ids
	active   int                 // requests begun and not yet fully written
	inHeader int                 // requests still receiving FCGI_PARAMS
	inBody   int                 // requests whose FCGI_STDIN has not ended
	begun    int                 // requests accepted on this connection so far
	draining bool                // close when active reaches 0
	closed   bool
	linger   bool // half-closed: reading only to discard until EOF
	cutShort bool // a request ended before all its input arrived: more may come

	// inline: the connection is served by ServeFD's loop, one request at
	// a time; handlers run on the reading goroutine and pull their body
	// from the connection (fillBody). rerr is a read error met there.
	inline  bool
	rerr    error
	pending *request // inline: to run once its last record is consumed

	handlers sync.WaitGroup
}

func (s *Server) newConn(base context.Context, rwc net.Conn) *conn {
	c := &conn{s: s, rwc: rwc, reqs: make(map[uint16]*request)}
	c.ctx, c.cancel = context.WithCancel(base)
	return c
}

// serve reads records until the connection fails or is closed, then
// cancels the open requests and waits for their handlers.
func (c *conn) serve() {
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.rwc, readBufSize)
	} else {
		c.br.Reset(c.rwc)
	}
	c.mu.Lock()
	c.setDeadlineLocked()
	c.mu.Unlock()
	err := c.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("fcgi: connection ended", "remote", c.rwc.RemoteAddr(), "err", err)
	}
	c.rwc.Close()
	c.cancel()
	c.mu.Lock()
	c.closed = true
	for _, r := range c.reqs {
		r.body.fail()
	}
	c.mu.Unlock()
	c.handlers.Wait()
	c.mu.Lock()
	for _, r := range c.reqs {
		r.release()
	}
	clear(c.reqs)
	c.mu.Unlock()
	c.s.trackConn(c, false)
	<-c.s.sem
}

func (c *conn) readLoop() error {
	for c.rerr == nil {
		if err := c.readRecord(); err != nil {
			return err
		}
	}
	return c.rerr
}

// readRecord reads and handles one record.
func (c *conn) readRecord() error {
	if _, err := io.ReadFull(c.br, c.hb[:]); err != nil {
		return err
	}
	var h header
	h.decode(c.hb[:])
	if h.Version != version1 {
		return fmt.Errorf("fcgi: record version %d", h.Version)
	}
	if err := c.record(&h); err != nil {
		return err
	}
	var err error
	if h.PaddingLength > 0 {
		_, err = c.br.Discard(int(h.PaddingLength))
	}
	if r := c.pending; r != nil {
		c.pending = nil
		if err != nil {
			c.failInline(err) // it runs with its context cancelled, as it would have
		}
		r.run()
	}
	return err
}

// fillBody reads records for an inline handler that waits for its body,
// until one of them makes progress (any record does: STDIN feeds the body
// or ends it, anything else is handled as the read loop would). Within a
// request timeout, the read gives up at its deadline.
func (c *conn) fillBody(r *request) error {
	if c.rerr != nil {
		return c.rerr
	}
	if dl, ok := r.ctx.Deadline(); ok && c.br.Buffered() == 0 {
		if w, ok := c.rwc.(readWaiter); ok {
			// Wait without consuming, so that a request timeout fails
			// the body and leaves the stream intact for the answer.
			if err := w.waitReadable(dl); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					c.failInline(err)
				}
				return err
			}
		}
	}
	if err := c.readRecord(); err != nil {
		c.failInline(err)
		return err
	}
	return nil
}

// drainBuffered consumes the rest of r's input that has already arrived
// (typically the empty FCGI_STDIN behind the params of a GET), without
// waiting: an inline handler returns before the reader sees it, and an
// answer with input outstanding would end in a half-close and a wait for
// the web server's EOF (lingerClose) instead of a plain close.
func (c *conn) drainBuffered(r *request) {
	for c.rerr == nil {
		c.mu.Lock()
		in := r.inBody
		c.mu.Unlock()
		if !in || c.br.Buffered() < headerLen {
			return
		}
		hb, _ := c.br.Peek(headerLen)
		var h header
		h.decode(hb)
		if h.Version != version1 || h.Type != typeStdin || h.ID != r.id ||
			c.br.Buffered() < headerLen+int(h.ContentLength)+int(h.PaddingLength) {
			return
		}
		if err := c.readRecord(); err != nil {
			c.failInline(err)
			return
		}
	}
}

// readWaiter is a connection that can wait for input without reading it.
type readWaiter interface {
	waitReadable(deadline time.Time) error
}

// failInline ends an inline connection after a read error met while the
// handler runs, as the read loop's end would: the handler's context is
// cancelled and its writes fail.
func (c *conn) failInline(err error) {
	c.rerr = err
	c.rwc.Close()
	c.cancel()
}

func (c *conn) record(h *header) error {
	n := int(h.ContentLength)
	if h.ID == 0 {
		return c.management(h.Type, n)
	}
	switch h.Type {
	case typeBeginRequest:
		return c.begin(h.ID, n)
	case typeParams:
		return c.params(h.ID, n)
	case typeStdin:
		return c.stdin(h.ID, n)
	case typeAbortRequest:
		if err := c.skip(n); err != nil {
			return err
		}
		if r := c.lookup(h.ID); r != nil {
			c.abort(r)
		}
		return nil
	default:
		// FCGI_DATA and anything else addressed to a request are ignored.
		return c.skip(n)
	}
}

func (c *conn) skip(n int) error {
	_, err := c.br.Discard(n)
	return err
}

// chunk returns the next up to n content bytes, valid until the next read.
func (c *conn) chunk(n int) ([]byte, error) {
	b, err := c.br.Peek(min(n, readBufSize))
	if err != nil {
		return nil, err
	}
	c.br.Discard(len(b))
	return b, nil
}

func (c *conn) lookup(id uint16) *request {
	c.mu.Lock()
	r := c.reqs[id]
	c.mu.Unlock()
	return r
}

// writeReply writes a record built by fn on the reader goroutine.
func (c *conn) writeReply(fn func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = fn(c.wbuf[:0])
	return c.writeLocked(c.wbuf)
}

// writeLocked writes b under wmu within WriteTimeout: a web server that
// stops reading cannot hold a handler (and wmu) forever.
func (c *conn) writeLocked(b []byte) error {
	if d := c.s.cfg.writeTimeout; d > 0 {
		c.rwc.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := c.rwc.Write(b)
	return err
}

func (c *conn) management(t recType, n int) error {
	switch t {
	case typeBeginRequest:
		return errors.New("fcgi: FCGI_BEGIN_REQUEST with request id 0")
	case typeGetValues:
		c.values = c.values[:0]
		for n > 0 {
			b, err := c.chunk(n)
			if err != nil {
				return err
			}
			c.values = append(c.values, b...)
			n -= len(b)
		}
		return c.writeReply(c.appendValues)
	default:
		if err := c.skip(n); err != nil {
			return err
		}
		return c.writeReply(func(b []byte) []byte { return appendUnknownType(b, t) })
	}
}

// appendValues answers the names asked for in c.values and no others.
func (c *conn) appendValues(b []byte) []byte {
	var content []byte
	var seen [3]bool
	for s := string(c.values); len(s) > 0; {
		name, _, rest, err := nextPair(s)
		if err != nil {
			break
		}
		s = rest
		switch name {
		case "FCGI_MAX_CONNS":
			if !seen[0] {
				content = appendPair(content, name, strconv.Itoa(c.s.cfg.maxConns))
			}
			seen[0] = true
		case "FCGI_MAX_REQS":
			if !seen[1] {
				content = appendPair(content, name, strconv.Itoa(c.s.cfg.maxReqs))
			}
			seen[1] = true
		case "FCGI_MPXS_CONNS":
			if !seen[2] {
				mpx := "1"
				if c.s.cfg.maxReqs == 1 || c.inline {
					mpx = "0"
				}
				content = appendPair(content, name, mpx)
			}
			seen[2] = true
		}
	}
	return appendRecord(b, typeGetValuesResult, 0, content)
}

func (c *conn) begin(id uint16, n int) error {
	if n != 8 {
		return fmt.Errorf("fcgi: FCGI_BEGIN_REQUEST body of %d bytes", n)
	}
	b, err := c.br.Peek(8)
	if err != nil {
		return err
	}
	role := uint16(b[0])<<8 | uint16(b[1])
	keep := b[2]&flagKeepConn != 0
	c.br.Discard(8)

	c.mu.Lock()
	if _, dup := c.reqs[id]; dup {
		c.mu.Unlock()
		return fmt.Errorf("fcgi: FCGI_BEGIN_REQUEST for active request id %d", id)
	}
	if c.linger {
		// We half-closed after the last answer and the web server sent
		// this before it saw our EOF: no answer can go out. Closing makes
		// it retry on a new connection (nginx does, for a request on a
		// cached connection), where FCGI_OVERLOADED would be its 502.
		c.mu.Unlock()
		return errLateRequest
	}
	// While draining, a request that reaches a connection still open is
	// served (the connection closes after it): refusing it would fail it.
	var status uint8 = statusRequestComplete
	maxReqs := c.s.cfg.maxReqs
	if c.inline {
		maxReqs = 1
	}
	switch {
	case len(c.reqs) >= maxReqs:
		status = statusOverloaded
	case role == roleResponder:
	case role == roleAuthorizer && c.s.Authorizer != nil:
	default:
		status = statusUnknownRole
	}
	if status != statusRequestComplete {
		if !keep {
			c.draining = true
		}
		closeNow := c.draining && c.active == 0
		c.mu.Unlock()
		err := c.writeReply(func(b []byte) []byte { return appendEndRequest(b, id, 0, status) })
		if closeNow && err == nil {
			c.lingerClose()
		}
		return err
	}
	r := c.s.newRequest(c, id, role, keep)
	c.reqs[id] = r
	c.begun++
	c.active++
	c.inHeader++
	if c.inHeader == 1 {
		c.setDeadlineLocked()
	}
	c.mu.Unlock()
	return nil
}

// setDeadlineLocked sets the read deadline for the connection's state:
// HeaderTimeout while a request is receiving PARAMS, IdleTimeout while a
// request waits for its next FCGI_STDIN record (FCGI-17) or with no request
// open, none while requests run with their input complete.
func (c *conn) setDeadlineLocked() {
	if c.closed || c.linger {
		return
	}
	var d time.Duration
	switch {
	case c.inHeader > 0:
		d = c.s.cfg.headerTimeout
	case c.inline && c.begun == 0:
		// Inline, a connection that has not begun a request holds up
		// every other: the shorter of the header and idle timeouts.
		d = c.s.cfg.headerTimeout
		if i := c.s.cfg.idleTimeout; i > 0 && (d <= 0 || i < d) {
			d = i
		}
	case c.inBody > 0 || c.active == 0:
		d = c.s.cfg.idleTimeout
	}
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	c.rwc.SetReadDeadline(t)
}

func (c *conn) params(id uint16, n int) error {
	r := c.lookup(id)
	if r == nil || r.state != stateParams {
		return c.skip(n)
	}
	if n == 0 {
		return c.endParams(r)
	}
	var have int
	if r.pbufp != nil {
		have = len(*r.pbufp)
	}
	if have+n > c.s.cfg.maxParams {
		if err := c.skip(n); err != nil {
			return err
		}
		c.s.log.Warn("fcgi: FCGI_PARAMS too large", "id", id, "limit", c.s.cfg.maxParams)
		c.respondError(r, 431)
		return errors.New("fcgi: FCGI_PARAMS too large")
	}
	if r.pbufp == nil {
		r.pbufp = c.s.getParamsBuf()
	}
	for n > 0 {
		b, err := c.chunk(n)
		if err != nil {
			return err
		}
		*r.pbufp = append(*r.pbufp, b...)
		n -= len(b)
	}
	return nil
}

func (c *conn) endParams(r *request) error {
	// One allocation holds the params and, after them, RemoteAddr.
	var pooled []byte
	if r.pbufp != nil {
		pooled = *r.pbufp
	}
	buf := make([]byte, len(pooled), len(pooled)+addrRoom)
	copy(buf, pooled)
	if r.pbufp != nil {
		c.s.putParamsBuf(r.pbufp)
		r.pbufp = nil
	}
	status, err := r.build(buf)
	c.mu.Lock()
	r.inHeader = false
	c.inHeader--
	if err == nil && r.hreq.Body != http.NoBody {
		r.inBody = true
		c.inBody++
	}
	c.setDeadlineLocked()
	c.mu.Unlock()
	if err != nil {
		c.s.log.Warn("fcgi: bad request", "id", r.id, "err", err)
		c.respondError(r, status)
		if errors.Is(err, errMalformedPair) {
			return err // the stream can no longer be trusted
		}
		return nil
	}
	if r.hreq.Body == http.NoBody {
		r.state = stateDone
	} else {
		r.state = stateBody
	}
	r.started = true
	c.handlers.Add(1)
	if c.inline {
		c.pending = r // run by readRecord after this record's padding
		return nil
	}
	go r.run()
	return nil
}

func (c *conn) stdin(id uint16, n int) error {
	r := c.lookup(id)
	if r == nil || r.state == stateDone {
		return c.skip(n)
	}
	if r.state == stateParams {
		return fmt.Errorf("fcgi: FCGI_STDIN before end of FCGI_PARAMS for id %d", id)
	}
	if n == 0 {
		r.body.endInput()
		r.state = stateDone
		c.mu.Lock()
		if r.inBody {
			r.inBody = false
			c.inBody--
		}
		c.setDeadlineLocked()
		c.mu.Unlock()
		return nil
	}
	for n > 0 {
		b, err := c.chunk(n)
		if err != nil {
			return err
		}
		r.body.put(c.s, b) // may wait for the handler to read
		n -= len(b)
	}
	// The body timeout counts from now: waiting in put for a slow handler
	// is not the web server's delay.
	c.mu.Lock()
	c.setDeadlineLocked()
	c.mu.Unlock()
	return nil
}

// abort handles FCGI_ABORT_REQUEST: one FCGI_END_REQUEST now, nothing more
// for this request afterwards, its context cancelled.
func (c *conn) abort(r *request) {
	if !r.claim() {
		return
	}
	r.cancel()
	r.body.fail()
	r.state = stateDone
	c.wmu.Lock()
	started := c.unlink(r)
	c.finishWrite(r, appendEndRequest(nil, r.id, 0, statusRequestComplete), false)
	if !started {
		r.release()
	}
}

// respondError answers r without running a handler. The caller is the
// reader goroutine.
func (c *conn) respondError(r *request, status int) {
	if !r.claim() {
		return
	}
	r.state = stateDone
	c.wmu.Lock()
	c.unlink(r)
	c.finishWrite(r, appendErrorResponse(nil, r.id, status), false)
	r.release()
}

// unlink frees r's id; it must be called after winning r.claim, with wmu
// held until FCGI_END_REQUEST is written (finishWrite), so that a peer
// reusing the id at once finds it free, yet the new request's records can
// only follow the old one's END_REQUEST. It reports whether r's handler was
// started.
func (c *conn) unlink(r *request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reqs[r.id] == r {
		delete(c.reqs, r.id)
	}
	if r.inHeader || r.inBody {
		c.cutShort = true
	}
	if r.inHeader {
		r.inHeader = false
		c.inHeader--
	}
	if r.inBody {
		r.inBody = false
		c.inBody--
	}
	if !r.keepConn {
		c.draining = true
	}
	return r.started
}

// finishWrite writes r's last bytes (ending with FCGI_END_REQUEST unless
// abrupt) and releases wmu, which the caller holds since unlink; then it
// retires r and closes the connection if it is draining and this was its
// last request. abrupt closes the connection without END.
func (c *conn) finishWrite(r *request, b []byte, abrupt bool) {
	var err error
	if !abrupt {
		err = c.writeLocked(b)
	}
	c.wmu.Unlock()
	c.mu.Lock()
	c.active--
	closeNow := abrupt || err != nil
	done := !closeNow && c.draining && c.active == 0
	if c.active == 0 && !closeNow && !done {
		c.setDeadlineLocked()
	}
	linger := done && c.cutShort
	c.mu.Unlock()
	switch {
	case closeNow, done && !linger:
		c.rwc.Close()
	case linger:
		c.lingerClose()
	}
}

// lingerClose ends a connection whose last request was answered before all
// its input arrived: it half-closes, so the web server reads EOF after
// FCGI_END_REQUEST, and lets the read loop discard what is still in flight
// (typically the empty FCGI_STDIN that ends a body the handler did not wait
// for) until EOF or lingerTimeout. Closing with unread input would make the
// kernel send a reset, which can destroy the response before the web server
// reads it. With all input read, a plain close is safe and frees the
// connection (a prefork worker's only one) at once.
func (c *conn) lingerClose() {
	cw, ok := c.rwc.(interface{ CloseWrite() error })
	if !ok {
		c.rwc.Close()
		return
	}
	c.mu.Lock()
	c.linger = true
	c.mu.Unlock()
	if cw.CloseWrite() != nil {
		c.rwc.Close()
		return
	}
	c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
}

// writeFor writes STDOUT records for r unless r has ended (aborted).
func (c *conn) writeFor(r *request, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if r.ended.Load() {
		return errRequestEnded
	}
	if err := c.writeLocked(b); err != nil {
		c.rwc.Close()
		return err
	}
	return nil
}

// shutdown starts draining: idle connections close now, busy ones after
// their last request. A connection that has not yet begun any request is
// not idle: the web server connected to send one (mod_fcgid connects, then
// writes), and it gets served; the header timeout bounds the wait.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.draining = true
	idle := c.active == 0 && c.begun > 0
	c.mu.Unlock()
	if idle {
		c.rwc.Close()
	}
}

var (
	errRequestEnded = errors.New("fcgi: request already ended")
	errLateRequest  = errors.New("fcgi: request after the connection was half-closed")
)
