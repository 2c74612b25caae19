package fcgi

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// Input states of a request, owned by the reader goroutine.
const (
	stateParams = iota // receiving FCGI_PARAMS
	stateBody          // handler running, FCGI_STDIN feeds the body
	stateDone          // further FCGI_STDIN is discarded
)

// request is one FastCGI request id's lifetime. It is allocated fresh for
// every request, and the handler may keep what it reaches (the
// http.Request, its URL, body and context all live here) after returning:
// nothing in it is reused.
type request struct {
	hreq http.Request // what the handler gets, with ctx as its context
	url  url.URL
	ctx  reqContext
	w    response
	body body // read through bodyReader when there is one

	c           *conn
	pbufp       *[]byte            // PARAMS accumulated so far (pooled)
	stopTimeout context.CancelFunc // releases the request timeout's context

	id       uint16
	role     uint16
	ended    atomic.Bool
	state    uint8 // reader goroutine only
	keepConn bool
	started  bool // handler goroutine launched; set before launch
	inHeader bool // guarded by c.mu
	inBody   bool // guarded by c.mu: FCGI_STDIN expected
}

type paramsKey struct{}

func (s *Server) newRequest(c *conn, id, role uint16, keep bool) *request {
	r := &request{c: c, id: id, role: role, keepConn: keep, inHeader: true}
	r.body.remaining = -1
	r.w.r = r
	return r
}

// claim makes the caller the one writer of FCGI_END_REQUEST for r.
func (r *request) claim() bool { return r.ended.CompareAndSwap(false, true) }

// release returns pooled buffers. Called once, when nothing else uses r.
func (r *request) release() {
	if r.pbufp != nil {
		r.c.s.putParamsBuf(r.pbufp)
		r.pbufp = nil
	}
	r.body.close(r.c.s)
	r.cancel()
}

// cancel ends r's context.
func (r *request) cancel() {
	r.ctx.cancel(context.Canceled)
	if r.stopTimeout != nil {
		r.stopTimeout()
	}
}

// run is the handler goroutine.
func (r *request) run() {
	c := r.c
	defer c.handlers.Done()
	h := c.s.Handler
	if r.role == roleAuthorizer {
		h = c.s.Authorizer
	}
	r.w.start(r.hreq.Method == http.MethodHead)
	panicked := false
	if h == nil {
		r.w.WriteHeader(http.StatusInternalServerError)
	} else {
		panicked = r.serve(h)
	}
	r.body.close(c.s) // from here on, input for r is discarded
	if c.inline {
		c.drainBuffered(r)
	}
	if panicked {
		r.cancel()
		r.w.fail()
		r.w.putHeader()
		r.release()
		return
	}
	r.w.finish()
	r.w.putHeader()
	r.release()
}

func (r *request) serve(h http.Handler) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				r.c.s.log.Error("fcgi: handler panic", "id", r.id, "uri", r.hreq.RequestURI,
					"panic", fmt.Sprint(v), "stack", string(buf))
			}
		}
	}()
	h.ServeHTTP(&r.w, &r.hreq)
	return false
}

// Params returns every CGI variable the web server sent for r (including
// SCRIPT_NAME, PATH_INFO, REMOTE_USER, HTTPS and custom variables), or nil
// if r was not received by this package. If a name was sent twice the last
// value is kept. The map is shared: callers must not modify it.
func Params(r *http.Request) map[string]string {
	st, _ := r.Context().Value(paramsKey{}).(*reqContext)
	if st == nil {
		return nil
	}
	if m := st.params.Load(); m != nil {
		return *m
	}
	m := make(map[string]string, 32)
	for s := st.raw; len(s) > 0; {
		name, value, rest, err := nextPair(s)
		if err != nil {
			break
		}
		m[name] = value
		s = rest
	}
	// Callers racing here build equal maps; all get the one stored first.
	if !st.params.CompareAndSwap(nil, &m) {
		return *st.params.Load()
	}
	return m
}

// Param returns the CGI variable name as the web server sent it for r (the
// last value if it was sent twice), or "" if it was not sent or r was not
// received by this package. Unlike Params, it builds no map.
func Param(r *http.Request, name string) string {
	st, _ := r.Context().Value(paramsKey{}).(*reqContext)
	if st == nil {
		return ""
	}
	var v string
	for s := st.raw; len(s) > 0; {
		n, value, rest, err := nextPair(s)
		if err != nil {
			break
		}
		if n == name {
			v = value
		}
		s = rest
	}
	return v
}

// Bits for parameters whose duplication rejects the request.
func securityBit(name string) uint32 {
	switch name {
	case "REMOTE_ADDR":
		return 1 << 0
	case "REMOTE_PORT":
		return 1 << 1
	case "REMOTE_USER":
		return 1 << 2
	case "REMOTE_HOST":
		return 1 << 3
	case "REMOTE_IDENT":
		return 1 << 4
	case "AUTH_TYPE":
		return 1 << 5
	case "HTTPS":
		return 1 << 6
	case "CONTENT_LENGTH":
		return 1 << 7
	case "SERVER_NAME":
		return 1 << 8
	case "SERVER_PORT":
		return 1 << 9
	case "SERVER_ADDR":
		return 1 << 10
	case "SERVER_PROTOCOL":
		return 1 << 11
	case "SERVER_SOFTWARE":
		return 1 << 12
	case "SERVER_ADMIN":
		return 1 << 13
	}
	return 0
}

// droppedHeader reports HTTP_* params that never become request headers:
// httpoxy, and framing that belongs to CONTENT_LENGTH and FCGI_STDIN.
func droppedHeader(name string) bool {
	switch name {
	case "HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_CONNECTION",
		"HTTP_UPGRADE", "HTTP_TE", "HTTP_EXPECT", "HTTP_KEEP_ALIVE", "HTTP_PROXY_CONNECTION",
		"HTTP_HOST", "HTTP_CONTENT_TYPE", "HTTP_TRAILER":
		return true
	}
	return false
}

func hasCRLFNUL(s string) bool {
	return strings.IndexByte(s, '\r') >= 0 || strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, 0) >= 0
}

type badRequest string

func (e badRequest) Error() string { return "fcgi: " + string(e) }

// build turns the PARAMS stream into r.req. On failure it returns the
// status to answer with; a malformed stream wraps errMalformedPair.
// raw holds the stream; build keeps it and may append to it within its
// capacity, so it must not be modified afterwards.
func (r *request) build(raw []byte) (int, error) {
	r.ctx.raw = unsafe.String(unsafe.SliceData(raw), len(raw))
	status, err := r.parse(r.ctx.raw, raw[len(raw):])
	return status, err
}

// cgiVars holds the params parse reads, as substrings of the PARAMS stream.
type cgiVars struct {
	method, uri, proto, host, serverName, script, pathInfo, query,
	remoteAddr, remotePort, https, clen, ctype string
	haveCL   bool
	nHeaders int // HTTP_* params that become request headers
}

// parse builds r.req from the PARAMS stream raw; spare is room after it for
// RemoteAddr.
func (r *request) parse(raw string, spare []byte) (int, error) {
	var v cgiVars
	if err := v.scan(raw); err != nil {
		return http.StatusBadRequest, err
	}
	method, err := v.requestMethod(r.role)
	if err != nil {
		return http.StatusBadRequest, err
	}
	cl, err := v.contentLength()
	if err != nil {
		return http.StatusBadRequest, err
	}
	major, minor, protoStr, err := protocol(v.proto)
	if err != nil {
		return http.StatusBadRequest, err
	}
	uri, err := v.requestURI(&r.url)
	if err != nil {
		return http.StatusBadRequest, err
	}
	host, remoteAddr := v.hostAndRemote(spare)
	hdr := v.header(raw)
	body, cl, err := r.attachBody(cl)
	if err != nil {
		return http.StatusRequestEntityTooLarge, err
	}
	ctx := r.startContext()
	req := http.Request{
		Method:        method,
		URL:           &r.url,
		Proto:         protoStr,
		ProtoMajor:    major,
		ProtoMinor:    minor,
		Header:        hdr,
		ContentLength: cl,
		Host:          host,
		RemoteAddr:    remoteAddr,
		RequestURI:    uri,
	}
	if body != nil {
		req.Body = body
	} else {
		req.Body = http.NoBody
	}
	if v.https == "on" || v.https == "ON" || v.https == "1" {
		req.TLS = &tls.ConnectionState{}
	}
	// The context can only be set by WithContext, which copies; inlined,
	// its copy stays on the stack and only r.hreq is kept.
	r.hreq = *req.WithContext(&r.ctx)
	if body != nil && r.c.s.cfg.requestTimeout > 0 {
		context.AfterFunc(ctx, r.body.fail)
	}
	return 0, nil
}

// scan walks the PARAMS stream once: it rejects malformed pairs, a repeated
// security-relevant parameter and CR, LF or NUL in an HTTP_* value, keeps
// the values parse needs and counts the params that become headers.
func (v *cgiVars) scan(raw string) error {
	var seen uint32
	for s := raw; len(s) > 0; {
		name, value, rest, err := nextPair(s)
		if err != nil {
			return err
		}
		s = rest
		if bit := securityBit(name); bit != 0 {
			if seen&bit != 0 {
				return badRequest("duplicate parameter " + name)
			}
			seen |= bit
		}
		if strings.HasPrefix(name, "HTTP_") {
			if hasCRLFNUL(value) {
				return badRequest("CR, LF or NUL in " + name)
			}
			if name == "HTTP_HOST" {
				v.host = value
			} else if !droppedHeader(name) {
				v.nHeaders++
			}
			continue
		}
		v.keep(name, value)
	}
	return nil
}

// keep records a non-HTTP_* param that parse reads.
func (v *cgiVars) keep(name, value string) {
	switch name {
	case "REQUEST_METHOD":
		v.method = value
	case "REQUEST_URI":
		v.uri = value
	case "SERVER_PROTOCOL":
		v.proto = value
	case "SERVER_NAME":
		v.serverName = value
	case "SCRIPT_NAME":
		v.script = value
	case "PATH_INFO":
		v.pathInfo = value
	case "QUERY_STRING":
		v.query = value
	case "REMOTE_ADDR":
		v.remoteAddr = value
	case "REMOTE_PORT":
		v.remotePort = value
	case "HTTPS":
		v.https = value
	case "CONTENT_LENGTH":
		v.clen, v.haveCL = value, value != ""
	case "CONTENT_TYPE":
		v.ctype = value
	}
}

// requestMethod checks REQUEST_METHOD; an authorizer without one gets GET.
func (v *cgiVars) requestMethod(role uint16) (string, error) {
	method := v.method
	if method == "" {
		if role != roleAuthorizer {
			return "", badRequest("missing REQUEST_METHOD")
		}
		method = http.MethodGet
	} else if !httpsyntax.ValidToken(method) {
		return "", badRequest("invalid REQUEST_METHOD")
	}
	return method, nil
}

// contentLength parses CONTENT_LENGTH; -1 when it is absent or empty.
func (v *cgiVars) contentLength() (int64, error) {
	var cl int64 = -1
	if v.haveCL {
		var ok bool
		if cl, ok = parseContentLength(v.clen); !ok {
			return 0, badRequest("invalid CONTENT_LENGTH")
		}
	}
	return cl, nil
}

// protocol parses SERVER_PROTOCOL: empty is HTTP/1.1, and mod_include's
// INCLUDED is HTTP/1.0.
func protocol(proto string) (major, minor int, protoStr string, err error) {
	major, minor = 1, 1
	protoStr = "HTTP/1.1"
	switch proto {
	case "", "HTTP/1.1":
	case "INCLUDED":
		major, minor, protoStr = 1, 0, "HTTP/1.0"
	default:
		var ok bool
		if major, minor, ok = http.ParseHTTPVersion(proto); !ok {
			return 0, 0, "", badRequest("invalid SERVER_PROTOCOL")
		}
		protoStr = proto
	}
	return major, minor, protoStr, nil
}

// requestURI returns REQUEST_URI, or one rebuilt from SCRIPT_NAME,
// PATH_INFO and QUERY_STRING, and parses it into u.
func (v *cgiVars) requestURI(u *url.URL) (string, error) {
	uri := v.uri
	if uri == "" {
		uri = v.script + v.pathInfo
		if v.query != "" {
			uri += "?" + v.query
		}
	}
	if hasCRLFNUL(uri) {
		return "", badRequest("CR, LF or NUL in REQUEST_URI")
	}
	if err := parseRequestURI(uri, u); err != nil {
		return "", badRequest("invalid REQUEST_URI")
	}
	return uri, nil
}

// hostAndRemote returns the Host (HTTP_HOST, else SERVER_NAME) and the
// RemoteAddr, joined with REMOTE_PORT into spare when there is one.
func (v *cgiVars) hostAndRemote(spare []byte) (host, remoteAddr string) {
	host, remoteAddr = v.host, v.remoteAddr
	if host == "" {
		host = v.serverName
	}
	if v.remotePort != "" {
		remoteAddr = joinHostPort(spare, remoteAddr, v.remotePort)
	}
	return host, remoteAddr
}

// header builds the request headers from the HTTP_* params of raw, then
// CONTENT_TYPE and CONTENT_LENGTH, with every value in one backing array.
func (v *cgiVars) header(raw string) http.Header {
	n := v.nHeaders + btoi(v.ctype != "") + btoi(v.haveCL)
	if n == 0 {
		return http.Header{}
	}
	hdr := make(http.Header, n)
	vals := make([]string, 0, n)
	if v.nHeaders > 0 {
		for s := raw; len(s) > 0; {
			name, value, rest, _ := nextPair(s)
			s = rest
			if strings.HasPrefix(name, "HTTP_") && !droppedHeader(name) {
				if k := headerKey(name[5:]); k != "" {
					vals = append(vals, value)
					hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
				}
			}
		}
	}
	if v.ctype != "" {
		vals = append(vals, v.ctype)
		hdr["Content-Type"] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if v.haveCL {
		vals = append(vals, v.clen)
		hdr["Content-Length"] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return hdr
}

// attachBody returns the body to read FCGI_STDIN from and the content
// length: none, and 0, for an authorizer or an empty body. It rejects a
// length over MaxBodyBytes.
func (r *request) attachBody(cl int64) (*bodyReader, int64, error) {
	if r.role == roleAuthorizer || cl == 0 {
		return nil, 0, nil
	}
	if limit := r.c.s.cfg.maxBody; limit >= 0 && cl > limit {
		return nil, cl, badRequest("CONTENT_LENGTH over MaxBodyBytes")
	}
	r.body.remaining = cl
	return (*bodyReader)(r), cl, nil
}

// startContext sets up the request's context on the connection's, with the
// request timeout when one is configured, and returns the parent it wraps.
func (r *request) startContext() context.Context {
	ctx := r.c.ctx
	if r.c.s.cfg.requestTimeout > 0 {
		ctx, r.stopTimeout = context.WithTimeout(ctx, r.c.s.cfg.requestTimeout)
	}
	r.ctx.parent = ctx
	return ctx
}

// addrRoom is the room left after the params for RemoteAddr: an IPv4
// address and port fit, a longer address is allocated on its own.
const addrRoom = len("255.255.255.255:65535")

// joinHostPort is net.JoinHostPort, written into spare when it fits there.
// spare must not be written again afterwards.
func joinHostPort(spare []byte, host, port string) string {
	n := len(host) + 1 + len(port)
	if n > cap(spare) || strings.IndexByte(host, ':') >= 0 {
		return net.JoinHostPort(host, port)
	}
	b := append(append(append(spare[:0], host...), ':'), port...)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseContentLength accepts only ^[0-9]+$ within int64.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		d := s[i] - '0'
		if d > 9 {
			return 0, false
		}
		if n > (1<<63-1-int64(d))/10 {
			return 0, false
		}
		n = n*10 + int64(d)
	}
	return n, true
}

// parseRequestURI fills u from a request-target, without allocating for
// plain origin-form targets.
func parseRequestURI(uri string, u *url.URL) error {
	if len(uri) > 0 && uri[0] == '/' && plainURI(uri) {
		path, query, _ := strings.Cut(uri, "?")
		*u = url.URL{Path: path, RawQuery: query}
		return nil
	}
	p, err := url.ParseRequestURI(uri)
	if err != nil {
		return err
	}
	*u = *p
	return nil
}

func plainURI(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return false
		}
	}
	return !strings.HasPrefix(s, "//")
}

// headerKey turns the part after HTTP_ into a canonical header name
// (FOO_BAR → Foo-Bar), "" if it is not a valid name.
func headerKey(s string) string {
	switch s {
	case "USER_AGENT":
		return "User-Agent"
	case "ACCEPT":
		return "Accept"
	case "ACCEPT_ENCODING":
		return "Accept-Encoding"
	case "ACCEPT_LANGUAGE":
		return "Accept-Language"
	case "COOKIE":
		return "Cookie"
	case "REFERER":
		return "Referer"
	case "ORIGIN":
		return "Origin"
	case "CACHE_CONTROL":
		return "Cache-Control"
	case "AUTHORIZATION":
		return "Authorization"
	case "X_FORWARDED_FOR":
		return "X-Forwarded-For"
	case "X_FORWARDED_PROTO":
		return "X-Forwarded-Proto"
	case "X_REAL_IP":
		return "X-Real-Ip"
	case "IF_NONE_MATCH":
		return "If-None-Match"
	case "IF_MODIFIED_SINCE":
		return "If-Modified-Since"
	case "PRAGMA":
		return "Pragma"
	case "UPGRADE_INSECURE_REQUESTS":
		return "Upgrade-Insecure-Requests"
	case "X_REQUESTED_WITH":
		return "X-Requested-With"
	}
	if s == "" {
		return ""
	}
	var buf [64]byte
	b := buf[:0]
	upper := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '-':
			c = '-'
			upper = true
		case !httpsyntax.TokenChar(c):
			return ""
		case upper:
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			upper = false
		default:
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
		}
		b = append(b, c)
	}
	return string(b)
}
