package handler

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/config"
)

// app is the reverse proxy to the shared, supervised child app (or to an
// upstream that is already running). Each copy of mysite.fcgi has one; the
// lifecycle package's Client finds the app's ready instance (starting its
// supervisor when none runs).
type app struct {
	cfg       config.App
	maxHeader int // response header block limit (RESP-05)
	log       *slog.Logger
	upstream  string         // "unix:/p" or "tcp:host:port" for [app] upstream
	ctl       *appctl.Client // the supervised app; nil with an upstream
	timeout   time.Duration

	pool connPool // idle connections to the app

	mu     sync.Mutex
	addrs  map[string]string
	closed bool
	logged map[string]time.Time // rate limit of our log lines, by kind
}

func newApp(o Options) (*app, error) {
	c := o.Config
	a := &app{
		cfg:     c.App,
		log:     o.Log,
		timeout: c.App.Timeout.Duration,
		addrs:   map[string]string{},
		logged:  map[string]time.Time{},
	}
	if a.timeout <= 0 {
		a.timeout = 60 * time.Second
	}
	a.maxHeader = c.Limits.MaxResponseHeaderBytes
	if a.maxHeader <= 0 {
		a.maxHeader = 64 << 10
	}
	if up := c.App.Upstream; up != "" {
		if p, ok := strings.CutPrefix(up, "unix:"); ok {
			a.upstream = "unix:" + c.Resolve(p)
		} else {
			u, err := url.Parse(up)
			if err != nil || u.Host == "" || u.Scheme != "http" {
				return nil, fmt.Errorf("[app] upstream %q: want http://host:port or unix:/path", up)
			}
			host := u.Host
			if u.Port() == "" {
				host = net.JoinHostPort(u.Hostname(), "80")
			}
			a.upstream = "tcp:" + host
		}
		a.addrs["upstream"] = a.upstream
	} else {
		ctl, err := appctl.NewClient(c, o.Executable, a.logOnce)
		if err != nil {
			return nil, err
		}
		a.ctl = ctl
	}
	return a, nil
}

// Close gives up our claim on the shared app (the supervisor stops it once
// no copy holds one for idle_stop). Safe to call twice.
func (a *app) Close(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	a.pool.closeIdle(true)
	if a.ctl == nil {
		return nil
	}
	return a.ctl.Close()
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if a.ctl != nil {
		a.ctl.NoteHost(r.Host)
	}
	target, err := a.target(ctx)
	if err != nil {
		a.unavailable(w, r, err)
		return
	}
	o, err := a.newOutRequest(r)
	var bad errBadRequest
	if errors.As(err, &bad) {
		errorPage(w, http.StatusBadRequest, 0, "Bad request", "The request could not be forwarded: "+err.Error()+".")
		return
	}
	if err != nil {
		return // the client's body broke off
	}
	uc, res, err := a.roundTrip(ctx, target, o)
	if err != nil && o.replayable() && ctx.Err() == nil {
		// The instance it went to was being replaced (a deploy: the old
		// one drains and closes its connections): once more on the
		// current one.
		if t, terr := a.target(ctx); terr == nil && t != target {
			uc, res, err = a.roundTrip(ctx, t, o)
		}
	}
	if err != nil {
		a.proxyError(w, r, err)
		return
	}
	a.copyResponse(w, r, uc, res)
}

// roundTrip sends o on an idle or new connection to target and reads the
// response header. A reused connection that the app had closed while idle
// is retried on a new one when o can be sent again.
func (a *app) roundTrip(ctx context.Context, target string, o *outRequest) (*upConn, *http.Response, error) {
	key := target
	if a.cfg.ProxyProtocol {
		// The PROXY line names one visitor for the connection's life: it
		// is reused only for that visitor's requests. The line itself is
		// built only for a new connection.
		host, _, err := net.SplitHostPort(o.in.RemoteAddr)
		if err != nil {
			host = o.in.RemoteAddr
		}
		key = target + " " + host
	}
	for attempt := 0; ; attempt++ {
		var uc *upConn
		if attempt == 0 {
			uc = a.pool.get(key, !o.replayable())
		}
		if uc == nil {
			c, err := a.dial(ctx, target)
			if err != nil {
				return nil, nil, err
			}
			uc = newUpConn(c, key)
			if a.cfg.ProxyProtocol {
				uc.bw.WriteString(proxyProtocolLine(o.in.RemoteAddr))
			}
		}
		res, err := a.exchange(ctx, uc, o)
		if err == nil {
			return uc, res, nil
		}
		if uc.reused && attempt == 0 && errors.Is(err, errNoResponse) && o.replayable() && ctx.Err() == nil {
			continue
		}
		return nil, nil, err
	}
}

// exchange writes o on uc (a body from another goroutine, so that an app
// answering before it has read all of it is heard) and reads the response
// header within [app] timeout. The caller ends uc with a.finish.
func (a *app) exchange(ctx context.Context, uc *upConn, o *outRequest) (*http.Response, error) {
	uc.stop = context.AfterFunc(ctx, func() { uc.conn.SetDeadline(time.Unix(1, 0)) })
	a.writeHead(uc.bw, o)
	if o.length != 0 {
		uc.werr, uc.body = make(chan error, 1), o.in.Body
		go func() { uc.werr <- writeBody(uc.bw, o) }()
	} else if err := uc.bw.Flush(); err != nil {
		a.finish(uc, false)
		return nil, fmt.Errorf("%w: %v", errNoResponse, err)
	}
	uc.conn.SetReadDeadline(time.Now().Add(a.timeout))
	limit := a.maxHeader + 4<<10
	uc.lr.limit, uc.lr.n, uc.lr.max = true, limit, a.maxHeader
	buffered := uc.br.Buffered()
	var res *http.Response
	var err error
	for range 5 {
		res, err = http.ReadResponse(uc.br, o.in)
		if err != nil || res.StatusCode >= 200 {
			break
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			err = errors.New("app switched protocols")
			break
		}
		// 1xx (100 Continue, 103 Early Hints): CGI cannot pass them on.
	}
	if err == nil && res.StatusCode < 200 {
		err = errors.New("app sent only 1xx responses")
	}
	nothing := uc.lr.n == limit && buffered == 0
	uc.lr.limit = false
	if err != nil {
		a.finish(uc, false)
		if nothing && !isTimeout(err) {
			return nil, fmt.Errorf("%w: %v", errNoResponse, err)
		}
		return nil, err
	}
	uc.conn.SetReadDeadline(time.Time{})
	if ctx.Err() != nil {
		// The context ended just now and its deadline was cleared above:
		// set it again, or the body copy would not notice.
		uc.conn.SetDeadline(time.Unix(1, 0))
	}
	return res, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// finish waits for the body writer and returns uc to the pool, or closes it
// when it cannot carry another request.
func (a *app) finish(uc *upConn, reusable bool) {
	if uc.werr != nil {
		select {
		case err := <-uc.werr:
			reusable = reusable && err == nil
		default:
			// The app answered without reading the whole body, or
			// failed: stop the writer, which may be waiting for the
			// client's next bytes, before the request is done with.
			reusable = false
			uc.conn.Close()
			uc.body.Close()
			<-uc.werr
		}
		uc.werr, uc.body = nil, nil
	}
	if uc.stop != nil && !uc.stop() {
		reusable = false // the request's context ended: the deadline is spent
	}
	uc.stop = nil
	if reusable {
		a.pool.put(uc)
	} else {
		uc.conn.Close()
	}
}

// copyResponse passes the app's response on: its header (minus hop-by-hop
// fields and what the web server must not act on), then the body, flushed
// as it comes when it is a stream. A body the app breaks off breaks the
// response too (PROXY-07), so a truncated page never looks complete.
func (a *app) copyResponse(w http.ResponseWriter, r *http.Request, uc *upConn, res *http.Response) {
	if err := a.checkResponse(res); err != nil {
		a.finish(uc, false)
		a.proxyError(w, r, err)
		return
	}
	dst := w.Header()
	conn := connectionTokens(res.Header)
	for k, vs := range res.Header {
		if hopHeaders[k] && k != "Content-Length" || conn[k] {
			continue
		}
		dst[k] = vs
	}
	if a.cfg.StripPrefix {
		prefix := RequestOf(r).ScriptName
		for _, k := range []string{"Location", "Content-Location"} {
			if v := dst.Get(k); v != "" {
				dst.Set(k, prefixLocation(v, prefix, r.Host))
			}
		}
		if cs := dst["Set-Cookie"]; len(cs) > 0 {
			out := make([]string, len(cs))
			for i, c := range cs {
				out[i] = prefixCookiePath(c, prefix)
			}
			dst["Set-Cookie"] = out
		}
	}
	w.WriteHeader(res.StatusCode)
	var rc *http.ResponseController
	if res.ContentLength < 0 || strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		rc = http.NewResponseController(w)
		rc.Flush()
	}
	buf := copyBuffers.get()
	var rerr, werr error
	for {
		n, err := res.Body.Read(*buf)
		if n > 0 {
			if _, werr = w.Write((*buf)[:n]); werr != nil {
				break
			}
			if rc != nil {
				rc.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	copyBuffers.put(buf)
	a.finish(uc, rerr == nil && werr == nil && !res.Close)
	if rerr != nil {
		panic(http.ErrAbortHandler)
	}
}

// sendfileHeaders ask the web server to serve a file; from the app they
// would let it read any file the web server can, so they are dropped unless
// [app] pass_sendfile.
var sendfileHeaders = []string{"X-Sendfile", "X-Lighttpd-Send-File", "X-Lighttpd-Send-Tempfile"}

// maxHeaderLine is the longest response header line Apache accepts from a
// CGI or FastCGI script (MAX_STRING_LEN); a longer one is its opaque
// "Premature end of script headers" 500.
const maxHeaderLine = 8 << 10

// headerTooLargeError is a response header block from the app that the web
// server would reject (RESP-05).
type headerTooLargeError struct{ what string }

func (e *headerTooLargeError) Error() string { return "app response header too large: " + e.what }

// checkHeaderSize reports a header line over maxHeaderLine or a block over
// max bytes, counted as the CGI header we send.
func checkHeaderSize(h http.Header, max int) error {
	total := 0
	for k, vs := range h {
		for _, v := range vs {
			n := len(k) + 2 + len(v) + 2
			if n > maxHeaderLine {
				return &headerTooLargeError{fmt.Sprintf("%s line of %d bytes (limit %d)", k, n, maxHeaderLine)}
			}
			total += n
		}
	}
	if total > max {
		return &headerTooLargeError{fmt.Sprintf("%d bytes of headers (limit %d)", total, max)}
	}
	return nil
}

// checkResponse refuses a header block the web server would reject and
// drops what the app must not ask of the web server.
func (a *app) checkResponse(res *http.Response) error {
	h := res.Header
	if err := checkHeaderSize(h, a.maxHeader); err != nil {
		return err
	}
	if !a.cfg.PassSendfile {
		for _, k := range sendfileHeaders {
			delete(h, k)
		}
		for k := range h {
			if strings.HasPrefix(k, "X-Accel-") {
				delete(h, k)
			}
		}
	}
	if h.Get("Content-Type") == "" && res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusNotModified && res.ContentLength != 0 {
		h.Set("Content-Type", "application/octet-stream") // never let a front end guess html
	}
	return nil
}

// proxyError answers when the round trip failed before a response: 504 on
// a header timeout, 502 when the app could not be reached or broke the
// connection. A client that went away gets nothing.
func (a *app) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		a.logOnce("timeout", "app did not answer within %s: %v", a.timeout, err)
		errorPage(w, http.StatusGatewayTimeout, 0, "Gateway timeout", "The application did not answer in time.")
		return
	}
	var he *headerTooLargeError
	if errors.As(err, &he) {
		a.logOnce("header-size", "%v; answering 502 (RESP-05)", err)
		errorPage(w, http.StatusBadGateway, 0, "Bad gateway", "The application's response headers were too large.")
		return
	}
	var ue *appctl.UnavailableError
	if errors.As(err, &ue) {
		a.unavailable(w, r, ue)
		return
	}
	a.logOnce("unreachable", "app unreachable: %v", err)
	errorPage(w, http.StatusBadGateway, 0, "Bad gateway", "The application could not be reached or broke the connection.")
}

func (a *app) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	var ue *appctl.UnavailableError
	if !errors.As(err, &ue) {
		if r.Context().Err() != nil {
			return // the client went away while waiting
		}
		a.logOnce("start", "app not available: %v", err)
		errorPage(w, http.StatusServiceUnavailable, 5, "Service unavailable", "The application could not be started.")
		return
	}
	retry := 5
	if !ue.RetryAt.IsZero() {
		retry = max(1, int(time.Until(ue.RetryAt).Seconds()+0.999))
	}
	// The supervisor already logged the cause with its details.
	a.log.Debug("app unavailable", "cause", ue.Cause)
	errorPage(w, http.StatusServiceUnavailable, retry, "Service unavailable", "The application is not available right now ("+ue.Cause+"). Please try again shortly.")
}

// logOnce logs at most one line per kind every 10 seconds.
func (a *app) logOnce(kind, format string, args ...any) {
	a.mu.Lock()
	last := a.logged[kind]
	now := time.Now()
	ok := now.Sub(last) >= 10*time.Second
	if ok {
		a.logged[kind] = now
	}
	a.mu.Unlock()
	if ok {
		a.log.Warn(fmt.Sprintf(format, args...))
	}
}

// errorPage writes a short page: no paths, no environment, no command line.
// Headers set before, from the app or a handler, are dropped, except the
// ones the status itself calls for (Allow, WWW-Authenticate).
func errorPage(w http.ResponseWriter, status, retryAfter int, title, msg string) {
	h := w.Header()
	for k := range h {
		if k != "Allow" && k != "Www-Authenticate" {
			delete(h, k)
		}
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>%d %s</title></head>\n"+
		"<body><h1>%s</h1><p>%s</p></body></html>\n", status, html.EscapeString(title), html.EscapeString(title), html.EscapeString(msg))
}

// target returns the URL host naming the app instance to use, starting the
// supervisor or waiting for the app as needed.
func (a *app) target(ctx context.Context) (string, error) {
	if a.upstream != "" {
		return "upstream", nil
	}
	inst, err := a.ctl.Ready(ctx)
	if err != nil {
		return "", err
	}
	return a.hostFor(inst), nil
}

// hostFor names an instance by its Name: a new instance is a new host, so
// pooled connections to a replaced one are never reused for new requests.
func (a *app) hostFor(inst appctl.Instance) string {
	host := inst.Name
	a.mu.Lock()
	if a.addrs[host] != inst.Addr {
		if len(a.addrs) > 0 {
			a.pool.closeIdle(false)
			clear(a.addrs)
		}
		a.addrs[host] = inst.Addr
	}
	a.mu.Unlock()
	return host
}

// dial connects to the instance named by the URL host. When that fails (the
// app was replaced or crashed since we looked), it waits for the current
// instance once: nothing was sent yet, so this retry is safe for any method.
func (a *app) dial(ctx context.Context, host string) (net.Conn, error) {
	a.mu.Lock()
	addr := a.addrs[host]
	a.mu.Unlock()
	var d net.Dialer
	if addr != "" {
		network, address := appctl.SplitAddr(addr)
		c, err := d.DialContext(ctx, network, address)
		if err == nil || a.upstream != "" {
			return c, err
		}
	}
	if a.upstream != "" {
		return nil, fmt.Errorf("no address for %s", host)
	}
	inst, err := a.ctl.Await(ctx, addr)
	if err != nil {
		return nil, err
	}
	a.hostFor(inst)
	network, address := appctl.SplitAddr(inst.Addr)
	return d.DialContext(ctx, network, address)
}

// appURL is the path the app is sent: the full path the client asked for,
// or with [app] strip_prefix the path below the mount prefix ("/" for the
// mount itself). The client's escaping is kept where it still applies.
func (a *app) appURL(in *http.Request, req *Request) url.URL {
	full := req.ScriptName + req.PathInfo
	if !a.cfg.StripPrefix || req.ScriptName == "" {
		u := url.URL{Path: full}
		if full == in.URL.Path {
			u.RawPath = in.URL.RawPath
		}
		return u
	}
	u := url.URL{Path: req.PathInfo}
	switch {
	case req.PathInfo == in.URL.Path: // the front end had stripped it already
		u.RawPath = in.URL.RawPath
	case full == in.URL.Path:
		u.RawPath = stripRawPrefix(in.URL.RawPath, req.ScriptName)
	}
	if u.Path == "" {
		u.Path, u.RawPath = "/", ""
	}
	return u
}

// stripRawPrefix removes from an escaped path the segments that unescape
// to prefix; "" (use the unescaped path) when it cannot tell where they end.
func stripRawPrefix(raw, prefix string) string {
	for i := 1; i <= len(raw); i++ {
		if i < len(raw) && raw[i] != '/' {
			continue
		}
		if p, err := url.PathUnescape(raw[:i]); err == nil && p == prefix {
			return raw[i:]
		}
	}
	return ""
}

// prefixLocation puts the mount prefix back on a Location (or
// Content-Location) from an app that was sent stripped paths, when it points
// into the site: a path ("/next/") or an absolute URL on the request's host.
// Relative references already resolve under the prefix; one that is already
// under the prefix, or on another host, is left as it is.
func prefixLocation(v, prefix, host string) string {
	if prefix == "" {
		return v
	}
	under := func(p string) bool {
		return p == prefix || strings.HasPrefix(p, prefix+"/") || strings.HasPrefix(p, prefix+"?") || strings.HasPrefix(p, prefix+"#")
	}
	if strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "//") {
		if under(v) {
			return v
		}
		return prefix + v
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.User != nil || host == "" || !strings.EqualFold(u.Host, host) {
		return v
	}
	head := len(u.Scheme) + len("://") + len(u.Host)
	if len(v) < head || !strings.EqualFold(v[len(u.Scheme)+3:head], u.Host) {
		return v
	}
	rest := v[head:]
	if rest == "" || rest[0] == '?' || rest[0] == '#' {
		rest = "/" + rest
	}
	if under(rest) {
		return v
	}
	return v[:head] + prefix + rest
}

// prefixCookiePath puts the mount prefix in front of the Path attribute of
// a Set-Cookie value from an app that was sent stripped paths (Path=/a
// becomes Path=/mysite/a, Path=/ becomes Path=/mysite/), so the browser sends
// the cookie back to the pages the app meant, and only to this site.
func prefixCookiePath(c, prefix string) string {
	if prefix == "" {
		return c
	}
	parts := strings.Split(c, ";")
	for i, p := range parts[1:] {
		name, val, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "path") {
			continue
		}
		v := strings.TrimSpace(val)
		if !strings.HasPrefix(v, "/") || v == prefix || strings.HasPrefix(v, prefix+"/") {
			continue
		}
		if v == "/" {
			v = ""
		}
		parts[i+1] = name + "=" + prefix + v
		if v == "" {
			parts[i+1] += "/"
		}
	}
	return strings.Join(parts, ";")
}

// proxyProtocolLine is the PROXY protocol v1 header that starts a
// connection to the app for apps (gunicorn --proxy-protocol) that take
// REMOTE_ADDR from it, naming the client at remoteAddr. For an address that
// is not an IP (a unix-socket front end) it is empty: the app sees no
// address, as without.
func proxyProtocolLine(remoteAddr string) string {
	host, port, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host, port = remoteAddr, "0"
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	addr = addr.WithZone("").Unmap()
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		port = "0"
	} else {
		port = strconv.FormatUint(p, 10)
	}
	if addr.Is4() {
		return "PROXY TCP4 " + addr.String() + " 127.0.0.1 " + port + " 0\r\n"
	}
	return "PROXY TCP6 " + addr.String() + " ::1 " + port + " 0\r\n"
}
