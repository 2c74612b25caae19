package handler

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// The client side of the proxy: a lean HTTP/1.1 client for one app. It does
// what net/http.Transport did for us at half the CPU per request (measured
// with bench/proxy.sh and BenchmarkProxy): the handler's goroutine writes
// the request and reads the response itself, with no per-connection reader
// and writer goroutines to hand each request over to, and idle connections
// wait in a stack per app instance.

const (
	maxIdle     = 1024 // as many as requests in flight: redialing per request halves throughput
	idleTimeout = 30 * time.Second
	// checkIdleAfter: a connection idle longer than this is checked for a
	// close by the app before reuse (apps drop idle keep-alive connections:
	// gunicorn after 2 s, Node after 5 s). Shorter idle connections are
	// checked only for a request that could not be sent again.
	checkIdleAfter = 500 * time.Millisecond
)

// upConn is one connection to the app.
type upConn struct {
	conn   net.Conn
	key    string // its pool: the app instance, and the visitor its PROXY line named
	lr     limitedReader
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool
	stop   func() bool // stops the request context's watch (context.AfterFunc)
	werr   chan error  // the body writer's result, while one runs
	body   io.Closer   // the request body the writer reads
	raw    *rawIO      // nil: reads and writes go through conn
}

// limitedReader fails a read past n bytes while limit is set: the response
// header block of a broken or hostile app cannot grow without bound.
type limitedReader struct {
	r     io.Reader
	n     int
	limit bool
	max   int // for the message
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.limit {
		if l.n <= 0 {
			return 0, &headerTooLargeError{fmt.Sprintf("more than %d bytes of headers", l.max)}
		}
		if len(p) > l.n {
			p = p[:l.n]
		}
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

func newUpConn(c net.Conn, key string) *upConn {
	uc := &upConn{conn: c, key: key}
	var rw io.ReadWriter = c
	if r := newRawIO(c); r != nil {
		uc.raw, rw = r, r
	}
	uc.lr.r = rw
	uc.br = bufio.NewReaderSize(&uc.lr, 4<<10)
	uc.bw = bufio.NewWriterSize(rw, 4<<10)
	return uc
}

// rawIO reads and writes a connection to the app with plain non-blocking
// system calls through its syscall.RawConn, waiting in Go's poller (so
// deadlines and Close work as on the net.Conn). The net.Conn's own Read and
// Write tell the scheduler about each call (entersyscall/exitsyscall), which
// wakes the runtime's monitor thread when the process was idle and lets it
// hand our P to another thread if the call is slow to return on a busy
// machine: on the proxy's two short calls per request that was CPU spent
// for nothing, since a non-blocking socket call never blocks.
type rawIO struct {
	rc   syscall.RawConn
	conn net.Conn // for the errors, which read like the net.Conn's
	// The read and the write side each have their own: the body writer
	// runs beside the response reader.
	rp, wp     []byte
	rn, wn     int
	rerr, werr syscall.Errno
	readFn     func(fd uintptr) bool
	writeFn    func(fd uintptr) bool
}

func newRawIO(c net.Conn) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc, conn: c}
	r.readFn = r.tryRead
	r.writeFn = r.tryWrite
	return r
}

func (r *rawIO) tryRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		if e == syscall.EINTR {
			continue
		}
		r.rn, r.rerr = int(n), e
		return e != syscall.EAGAIN
	}
}

func (r *rawIO) tryWrite(fd uintptr) bool {
	for r.wn < len(r.wp) {
		b := r.wp[r.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			r.werr = e
			return true
		}
	}
	return true
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerr = p, 0, 0
	err := r.rc.Read(r.readFn)
	r.rp = nil
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case r.rerr != 0:
		return 0, r.opError("read", r.rerr)
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n := r.wn
	r.wp = nil
	if err == nil && r.werr != 0 {
		err = r.werr
	}
	if err != nil {
		err = r.opError("write", err)
	}
	return n, err
}

func (r *rawIO) opError(op string, err error) error {
	e := &net.OpError{Op: op, Err: err}
	if a := r.conn.RemoteAddr(); a != nil {
		e.Net, e.Addr = a.Network(), a
	}
	return e
}

// alive reports whether the app has not closed (or written on) the idle
// connection, without blocking: one recv(MSG_PEEK|MSG_DONTWAIT).
func (uc *upConn) alive() bool {
	if uc.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	sc, ok := uc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// Nothing to read is the only good answer: 0 bytes is EOF, and
		// bytes nobody asked for mean the stream is out of step.
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}

// connPool holds idle connections, most recently used last, per key. At
// most maxIdle wait in all, and none longer than idleTimeout: a timer reaps
// them while any wait, so a key that is never asked for again (a visitor
// who left, a replaced app instance) holds no descriptor for long.
type connPool struct {
	mu     sync.Mutex
	idle   map[string][]*upConn
	n      int         // idle connections in all keys
	reaper *time.Timer // runs while n > 0
	closed bool
}

// get returns an idle connection of key that the app has not closed, or
// nil. check asks for the liveness check even on a recently used one.
func (p *connPool) get(key string, check bool) *upConn {
	now := time.Now()
	for {
		p.mu.Lock()
		s := p.idle[key]
		if len(s) == 0 {
			p.mu.Unlock()
			return nil
		}
		uc := s[len(s)-1]
		s[len(s)-1] = nil
		p.setKey(key, s[:len(s)-1])
		p.n--
		p.mu.Unlock()
		idle := now.Sub(uc.idleAt)
		if idle < idleTimeout && (!check && idle < checkIdleAfter || uc.alive()) {
			uc.reused = true
			return uc
		}
		uc.conn.Close()
	}
}

// setKey stores s as key's idle list, forgetting a key left empty.
func (p *connPool) setKey(key string, s []*upConn) {
	if len(s) == 0 {
		delete(p.idle, key)
		return
	}
	p.idle[key] = s
}

// put makes uc available for reuse, or closes it when the pool is full or
// closed.
func (p *connPool) put(uc *upConn) {
	uc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || p.n >= maxIdle {
		p.mu.Unlock()
		uc.conn.Close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]*upConn{}
	}
	p.idle[uc.key] = append(p.idle[uc.key], uc)
	p.n++
	if p.reaper == nil {
		p.reaper = time.AfterFunc(idleTimeout, p.reap)
	}
	p.mu.Unlock()
}

// reap closes the connections that have waited idleTimeout or longer, and
// comes back for the rest while any remain.
func (p *connPool) reap() {
	now := time.Now()
	var stale []*upConn
	p.mu.Lock()
	next := time.Duration(-1)
	for key, s := range p.idle {
		i := 0
		for i < len(s) && now.Sub(s[i].idleAt) >= idleTimeout {
			i++
		}
		stale = append(stale, s[:i]...)
		clear(s[:i])
		p.setKey(key, s[i:])
		if i < len(s) {
			if d := idleTimeout - now.Sub(s[i].idleAt); next < 0 || d < next {
				next = d
			}
		}
	}
	p.n -= len(stale)
	switch {
	case next < 0 || p.closed:
		p.reaper = nil
	case p.reaper == nil: // closeIdle dropped it while this ran
		p.reaper = time.AfterFunc(next, p.reap)
	default:
		p.reaper.Reset(next)
	}
	p.mu.Unlock()
	for _, uc := range stale {
		uc.conn.Close()
	}
}

// count returns the number of idle connections.
func (p *connPool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// closeIdle closes every idle connection; with final, later ones too.
func (p *connPool) closeIdle(final bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.n = nil, 0
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaper = nil
	}
	if final {
		p.closed = true
	}
	p.mu.Unlock()
	for _, s := range idle {
		for _, uc := range s {
			uc.conn.Close()
		}
	}
}

// hopHeaders are meaningful for one connection only (RFC 9110 7.6.1), or
// are framing we redo; they never cross the proxy in either direction.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true,
}

// setHeaders are the request headers the proxy sets itself from the web
// server's facts; a copy in the incoming request is never forwarded (the
// Gateway removed the client's already: this is the second lock).
var setHeaders = map[string]bool{
	"Host": true, "Expect": true, "X-Forwarded-For": true, "X-Real-Ip": true, "X-Forwarded-Host": true,
	"X-Forwarded-Proto": true, "Forwarded": true, "X-Forwarded-Prefix": true, "X-Remote-User": true,
}

// connectionTokens returns the header names listed in Connection.
func connectionTokens(h http.Header) map[string]bool {
	vs := h["Connection"]
	if len(vs) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, v := range vs {
		for _, f := range strings.Split(v, ",") {
			if f = http.CanonicalHeaderKey(strings.TrimSpace(f)); f != "" {
				m[f] = true
			}
		}
	}
	return m
}

// validTarget reports whether s can go on the request line: no space or
// control byte (the query is passed through as the web server sent it).
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// writeValue writes a field value with each control byte other than HTAB
// (CR and LF above all) turned into a space: a value is one line of
// VCHAR, SP, HTAB and obs-text (RFC 9110 5.5).
func writeValue(w *bufio.Writer, v string) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			b := []byte(v)
			for j, c := range b {
				if c < ' ' && c != '\t' || c == 0x7f {
					b[j] = ' '
				}
			}
			w.Write(b)
			return
		}
	}
	w.WriteString(v)
}

func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	writeValue(w, v)
	w.WriteString("\r\n")
}

// outRequest is what the proxy sends for one incoming request.
type outRequest struct {
	in     *http.Request
	req    *Request // the web server's facts about in
	uri    string   // request-target
	host   string
	length int64     // body length; -1 = chunked; 0 = none
	body   io.Reader // when length != 0
}

// errBadRequest is an incoming request the proxy cannot put on the wire.
type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

// newOutRequest checks what goes on the request line and frames the body.
func (a *app) newOutRequest(in *http.Request) (*outRequest, error) {
	if !httpsyntax.ValidToken(in.Method) {
		return nil, errBadRequest("invalid method")
	}
	req := RequestOf(in)
	u := a.appURL(in, req)
	if !strings.HasPrefix(u.Path, "/") {
		u.Path, u.RawPath = "/"+u.Path, "" // origin-form (RFC 9112 3.2.1)
	}
	u.RawQuery = in.URL.RawQuery
	o := &outRequest{in: in, req: req, uri: u.RequestURI(), host: in.Host}
	if !validTarget(o.uri) {
		return nil, errBadRequest("invalid request target")
	}
	if o.host == "" {
		o.host = "localhost"
	}
	if !httpsyntax.ValidHost(o.host) {
		return nil, errBadRequest("invalid Host")
	}
	switch {
	case in.ContentLength > 0:
		o.length, o.body = in.ContentLength, in.Body
	case in.ContentLength < 0 && in.Body != nil && in.Body != http.NoBody:
		// No CONTENT_LENGTH: usually no body at all (a GET, whose empty
		// FCGI_STDIN is already on its way), sometimes a stream. One read
		// tells which, so a GET is not sent chunked.
		var b [1]byte
		var n int
		var err error
		for n == 0 && err == nil {
			n, err = in.Body.Read(b[:])
		}
		switch {
		case n > 0:
			o.length, o.body = -1, io.MultiReader(bytes.NewReader(b[:n]), in.Body)
		case err != io.EOF:
			return nil, err
		}
	}
	return o, nil
}

// replayable reports whether o may be sent again after a failure that left
// the app's handling of it unknown: an idempotent method with no body.
func (o *outRequest) replayable() bool {
	switch o.in.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return o.length == 0
	}
	return false
}

// writeHead writes the request line and header: the client's fields minus
// hop-by-hop ones, then the forwarding facts from the web server.
func (a *app) writeHead(w *bufio.Writer, o *outRequest) {
	in := o.in
	w.WriteString(in.Method)
	w.WriteByte(' ')
	w.WriteString(o.uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(o.host)
	w.WriteString("\r\n")
	conn := connectionTokens(in.Header)
	for k, vs := range in.Header {
		// Compared in canonical form: a map filled by hand may hold
		// "Content-length". A name with "_" is dropped, as nginx and
		// Apache do: to a CGI or WSGI app, X_Forwarded_For would be
		// X-Forwarded-For.
		ck := http.CanonicalHeaderKey(k)
		if hopHeaders[ck] || setHeaders[ck] || conn[ck] || !httpsyntax.ValidToken(k) || strings.IndexByte(k, '_') >= 0 {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	req := o.req
	ip := in.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	var fwd strings.Builder
	if ip != "" {
		writeField(w, "X-Forwarded-For", ip)
		writeField(w, "X-Real-Ip", ip)
		node := ip
		if strings.Contains(ip, ":") {
			node = "[" + ip + "]"
		}
		fwd.WriteString("for=" + strconv.Quote(node) + ";")
	}
	if in.Host != "" {
		writeField(w, "X-Forwarded-Host", in.Host)
		fwd.WriteString("host=" + strconv.Quote(in.Host) + ";")
	}
	writeField(w, "X-Forwarded-Proto", proto)
	fwd.WriteString("proto=" + proto)
	writeField(w, "Forwarded", fwd.String())
	if req.ScriptName != "" {
		// Written with the underscore on purpose: gunicorn reads the
		// SCRIPT_NAME header (trusted from its forwarded_allow_ips, which
		// includes unix-socket peers and 127.0.0.1). It means "the path
		// starts with this", so not with [app] strip_prefix.
		if !a.cfg.StripPrefix {
			writeField(w, "SCRIPT_NAME", req.ScriptName)
		}
		writeField(w, "X-Forwarded-Prefix", req.ScriptName)
	}
	if u := req.Var("REMOTE_USER"); u != "" {
		writeField(w, "X-Remote-User", u)
	}
	switch {
	case o.length > 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(o.length, 10))
		w.WriteString("\r\n")
	case o.length < 0:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case in.Method == http.MethodPost || in.Method == http.MethodPut || in.Method == http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n")
	}
	w.WriteString("\r\n")
}

// writeBody sends o's body: exactly length bytes, or chunked. A short body
// (the client went away) is an error: the connection must not be reused.
// Each piece goes out as it comes (the first with the request header), so
// the app sees a slow upload as it arrives and can answer it early.
func writeBody(w *bufio.Writer, o *outRequest) error {
	buf := copyBuffers.get()
	defer copyBuffers.put(buf)
	var err error
	if o.length > 0 {
		var n int64
		n, err = copyBuf(w, io.LimitReader(o.body, o.length), *buf, w.Flush)
		if err == nil && n < o.length {
			err = io.ErrUnexpectedEOF
		}
	} else {
		cw := httputil.NewChunkedWriter(w)
		if _, err = copyBuf(cw, o.body, *buf, w.Flush); err == nil {
			if err = cw.Close(); err == nil {
				_, err = w.WriteString("\r\n")
			}
		}
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// copyBuf copies with buf (no ReaderFrom or WriterTo that would allocate
// their own), calling flush after each piece.
func copyBuf(w io.Writer, r io.Reader, buf []byte, flush func() error) (int64, error) {
	var n int64
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			if err := flush(); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// bufferPool lends the proxy its 32 KiB copy buffers: allocating one per
// request dominated the proxy's cost (GC and madvise).
type bufferPool struct{ p sync.Pool }

var copyBuffers bufferPool

func (b *bufferPool) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, 32<<10)
	return &buf
}

func (b *bufferPool) put(buf *[]byte) { b.p.Put(buf) }

// errNoResponse is a connection that ended before any response byte.
var errNoResponse = errors.New("app closed the connection without a response")
