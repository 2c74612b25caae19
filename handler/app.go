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
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// app is the reverse proxy to the shared, supervised child app (or to an
// upstream that is already running). Each copy of mysite.fcgi has one; they
// find the app through the runtime directory (see runtime.go) and start the
// supervisor (supervise.go) when none runs.
type app struct {
	cfg        config.App
	maxHeader  int // response header block limit (RESP-05)
	log        *slog.Logger
	exe        string // absolute path of our binary, started as the supervisor
	configPath string // absolute
	dir        string // runtime dir; "" with an upstream
	upstream   string // "unix:/p" or "tcp:host:port" for [app] upstream
	timeout    time.Duration
	ready      time.Duration
	logPath    string // [app] log: the supervisor's stderr; "" = ours

	transport *http.Transport
	proxy     *httputil.ReverseProxy

	mu      sync.Mutex
	clients *lockFile // our shared lock on clients.lock, once registered
	addrs   map[string]string
	cached  *state
	cacheID fileID
	closed  bool
	logged  map[string]time.Time // rate limit of our log lines, by kind
}

// fileID tells whether state.json was rewritten since we read it.
type fileID struct {
	ino   uint64
	mtime int64
	size  int64
}

// targetKey is the request-context key of the per-request bookkeeping.
type targetKey struct{}

type proxyReq struct {
	body *watchedBody // the app's response body, to detect a broken copy
}

func newApp(o Options) (*app, error) {
	c := o.Config
	a := &app{
		cfg:     c.App,
		log:     o.Log,
		timeout: c.App.Timeout.Duration,
		ready:   c.App.ReadyTimeout.Duration,
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
	if a.ready <= 0 {
		a.ready = 30 * time.Second
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
		if c.File == "" {
			return nil, errors.New("[app] command needs a config file: the app supervisor reads it")
		}
		var err error
		if a.configPath, err = filepath.Abs(c.File); err != nil {
			return nil, err
		}
		a.exe = o.Executable
		if a.exe == "" {
			if a.exe, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("find own executable: %w", err)
			}
		}
		if a.exe, err = filepath.Abs(a.exe); err != nil {
			return nil, err
		}
		a.dir = runtimeDir(c.Resolve(c.App.RuntimeDir), a.configPath, os.Getenv)
		if err := prepareRuntimeDir(a.dir); err != nil {
			return nil, err
		}
		a.logPath = c.Resolve(c.App.Log)
	}
	a.transport = &http.Transport{
		Proxy:                  nil, // never from HTTP_PROXY: in CGI mode that is a request header
		DialContext:            a.dial,
		MaxIdleConnsPerHost:    1024, // as many as requests in flight: redialing per request halves throughput
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  a.timeout,
		MaxResponseHeaderBytes: int64(a.maxHeader) + 4<<10, // modifyResponse gives the clear error
		DisableCompression:     true,                       // pass Content-Encoding through untouched
	}
	a.proxy = &httputil.ReverseProxy{
		Rewrite:        a.rewrite,
		Transport:      &retryTransport{a: a, rt: a.transport},
		ModifyResponse: a.modifyResponse,
		ErrorHandler:   a.proxyError,
		BufferPool:     &bufferPool{},
		ErrorLog:       slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
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
	a.transport.CloseIdleConnections()
	err := a.clients.close()
	a.clients = nil
	return err
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, err := a.target(r.Context())
	if err != nil {
		a.unavailable(w, r, err)
		return
	}
	// FastCGI cannot carry an upgraded stream (PROXY-03).
	r.Header.Del("Upgrade")
	pr := &proxyReq{}
	out := r.WithContext(context.WithValue(r.Context(), targetKey{}, pr))
	out.URL = cloneURL(r.URL)
	out.URL.Host = host
	a.proxy.ServeHTTP(w, out)
	if pr.body != nil && pr.body.err != nil {
		// The app died mid-response: break the response instead of
		// letting a truncated body look complete (PROXY-07).
		panic(http.ErrAbortHandler)
	}
}

// retryTransport retries a body-less GET or HEAD once on a new app
// instance when the one it was sent to failed because it was being
// replaced (a deploy: the old instance drains and closes its idle
// connections while our pooled connection was being reused).
type retryTransport struct {
	a  *app
	rt http.RoundTripper
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err == nil || req.Context().Err() != nil || (req.Method != http.MethodGet && req.Method != http.MethodHead) ||
		(req.Body != nil && req.Body != http.NoBody) {
		return resp, err
	}
	host, terr := t.a.target(req.Context())
	if terr != nil || host == req.URL.Host {
		return resp, err
	}
	r2 := req.Clone(req.Context())
	r2.URL.Host = host
	return t.rt.RoundTrip(r2)
}

func cloneURL(u *url.URL) *url.URL {
	c := *u
	return &c
}

// rewrite builds the request to the app: the full original path, the mount
// prefix in SCRIPT_NAME (gunicorn) and X-Forwarded-Prefix, the forwarding
// headers from the web server's facts (the gateway already removed the
// client's copies; ReverseProxy removed hop-by-hop headers first).
func (a *app) rewrite(p *httputil.ProxyRequest) {
	in, out := p.In, p.Out
	req := RequestOf(in)
	out.URL.Scheme = "http"
	out.URL.Host = in.URL.Host // the target key set in ServeHTTP
	full := req.ScriptName + req.PathInfo
	out.URL.Path, out.URL.RawPath = full, ""
	if full == in.URL.Path {
		out.URL.RawPath = in.URL.RawPath
	}
	out.URL.RawQuery = in.URL.RawQuery
	out.Host = in.Host
	if out.Host == "" {
		out.Host = "localhost"
	}
	// The Gateway in front of every handler already removed the client's
	// copies of the headers set below (all spellings); ReverseProxy
	// removed the hop-by-hop ones. What remains is to set ours.
	h := out.Header
	ip := in.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	fwd := []string{}
	if ip != "" {
		h.Set("X-Forwarded-For", ip)
		h.Set("X-Real-Ip", ip)
		node := ip
		if strings.Contains(ip, ":") {
			node = "[" + ip + "]"
		}
		fwd = append(fwd, "for="+strconv.Quote(node))
	}
	if in.Host != "" {
		h.Set("X-Forwarded-Host", in.Host)
		fwd = append(fwd, "host="+strconv.Quote(in.Host))
	}
	h.Set("X-Forwarded-Proto", proto)
	fwd = append(fwd, "proto="+proto)
	h.Set("Forwarded", strings.Join(fwd, ";"))
	if req.ScriptName != "" {
		// Written with the underscore on purpose: gunicorn reads the
		// SCRIPT_NAME header (trusted from its forwarded_allow_ips, which
		// includes unix-socket peers and 127.0.0.1).
		h["SCRIPT_NAME"] = []string{req.ScriptName}
		h.Set("X-Forwarded-Prefix", req.ScriptName)
	}
	if u := req.Vars["REMOTE_USER"]; u != "" {
		h.Set("X-Remote-User", u)
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // do not invent Go's
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

func (a *app) modifyResponse(res *http.Response) error {
	h := res.Header
	if err := checkHeaderSize(h, a.maxHeader); err != nil {
		return err
	}
	if !a.cfg.PassSendfile {
		for _, k := range sendfileHeaders {
			h.Del(k)
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
	if pr, ok := res.Request.Context().Value(targetKey{}).(*proxyReq); ok {
		pr.body = &watchedBody{ReadCloser: res.Body}
		res.Body = pr.body
	}
	return nil
}

// watchedBody remembers a read error of the app's response body (anything
// but a clean EOF: the app died or the connection broke).
type watchedBody struct {
	io.ReadCloser
	err error
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
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
	if errors.As(err, &he) || strings.Contains(err.Error(), "server response headers exceeded") {
		a.logOnce("header-size", "%v; answering 502 (RESP-05)", err)
		errorPage(w, http.StatusBadGateway, 0, "Bad gateway", "The application's response headers were too large.")
		return
	}
	var ue *unavailableError
	if errors.As(err, &ue) {
		a.unavailable(w, r, ue)
		return
	}
	a.logOnce("unreachable", "app unreachable: %v", err)
	errorPage(w, http.StatusBadGateway, 0, "Bad gateway", "The application could not be reached or broke the connection.")
}

// unavailableError means the app is not ready: starting too long, or
// failing (crash loop) until RetryAt.
type unavailableError struct {
	cause   string
	retryAt time.Time
}

func (e *unavailableError) Error() string { return "app unavailable: " + e.cause }

func (a *app) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	var ue *unavailableError
	if !errors.As(err, &ue) {
		if r.Context().Err() != nil {
			return // the client went away while waiting
		}
		a.logOnce("start", "app not available: %v", err)
		errorPage(w, http.StatusServiceUnavailable, 5, "Service unavailable", "The application could not be started.")
		return
	}
	retry := 5
	if !ue.retryAt.IsZero() {
		retry = max(1, int(time.Until(ue.retryAt).Seconds()+0.999))
	}
	// The supervisor already logged the cause with its details.
	a.log.Debug("app unavailable", "cause", ue.cause)
	errorPage(w, http.StatusServiceUnavailable, retry, "Service unavailable", "The application is not available right now ("+ue.cause+"). Please try again shortly.")
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
func errorPage(w http.ResponseWriter, status, retryAfter int, title, msg string) {
	h := w.Header()
	for k := range h {
		delete(h, k)
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
	a.mu.Lock()
	registered := a.clients != nil
	a.mu.Unlock()
	if registered {
		if s := a.current(); s != nil && s.Status == statusReady {
			return a.hostFor(s), nil
		}
	}
	s, err := a.await(ctx, "")
	if err != nil {
		return "", err
	}
	return a.hostFor(s), nil
}

// hostFor names an instance: a new instance is a new host, so pooled
// connections to a replaced one are never reused for new requests.
func (a *app) hostFor(s *state) string {
	host := "app-" + strconv.Itoa(s.Instance)
	a.mu.Lock()
	if a.addrs[host] != s.Addr {
		if len(a.addrs) > 0 {
			a.transport.CloseIdleConnections()
			clear(a.addrs)
		}
		a.addrs[host] = s.Addr
	}
	a.mu.Unlock()
	return host
}

// current returns the state, re-read only when state.json changed.
func (a *app) current() *state {
	fi, err := os.Stat(filepath.Join(a.dir, fileState))
	if err != nil {
		return nil
	}
	id := fileID{mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	a.mu.Lock()
	if a.cached != nil && a.cacheID == id {
		s := a.cached
		a.mu.Unlock()
		return s
	}
	a.mu.Unlock()
	s, err := readState(a.dir)
	if err != nil {
		return nil
	}
	a.mu.Lock()
	a.cached, a.cacheID = s, id
	a.mu.Unlock()
	return s
}

// await is the slow path: register as a client, make sure a supervisor
// runs (starting one if we are the first), and wait until the app is ready,
// at most ready_timeout (plus the supervisor's own start).
//
// A ready state whose address is avoid (it just refused us) is waited out:
// the supervisor is about to notice the crash.
func (a *app) await(ctx context.Context, avoid string) (*state, error) {
	deadline := time.Now().Add(a.ready + 5*time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	wait := 5 * time.Millisecond
	var startErr error
	for {
		if ok, err := a.register(); err != nil {
			return nil, err
		} else if ok {
			if !held(filepath.Join(a.dir, fileSupervisorLock)) {
				if startErr = a.startSupervisor(ctx); startErr != nil {
					a.logOnce("supervisor", "%v", startErr)
				}
			} else if s := a.current(); s != nil && alive(s.Supervisor) {
				switch s.Status {
				case statusReady:
					if s.Addr != avoid {
						return s, nil
					}
				case statusBackoff:
					// A crash loop answers at once; a first crash of an
					// app that ran is worth waiting for if the retry
					// comes soon enough.
					if s.Failures >= 2 || s.RetryAt.After(deadline) {
						return nil, &unavailableError{cause: s.Cause, retryAt: s.RetryAt}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			if startErr != nil {
				return nil, startErr
			}
			return nil, &unavailableError{cause: "the app is still starting"}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			wait = min(wait*2, 50*time.Millisecond)
		}
	}
}

// alive reports whether pid exists (it may belong to another user).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// register takes our shared lock on clients.lock for the rest of our life,
// which keeps the supervisor and the app running. It fails (false) while a
// supervisor that found no client holds the lock exclusively to shut down.
func (a *app) register() (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false, errors.New("app handler closed")
	}
	if a.clients != nil {
		return true, nil
	}
	l, err := openLock(filepath.Join(a.dir, fileClientsLock))
	if err != nil {
		return false, fmt.Errorf("register with the app supervisor: %w", err)
	}
	ok, err := l.try(syscall.LOCK_SH)
	if err != nil || !ok {
		l.close()
		return false, err
	}
	a.clients = l
	return true, nil
}

// startSupervisor starts the supervisor unless another copy is doing so
// (start.lock) or one runs already. The first stage returns once the
// supervisor holds its lock.
func (a *app) startSupervisor(ctx context.Context) error {
	l, err := openLock(filepath.Join(a.dir, fileStartLock))
	if err != nil {
		return fmt.Errorf("start app supervisor: %w", err)
	}
	defer l.close()
	if ok, err := l.try(syscall.LOCK_EX); err != nil || !ok {
		return err // another copy is starting it
	}
	if held(filepath.Join(a.dir, fileSupervisorLock)) {
		return nil
	}
	env := appEnv(os.Environ(), a.cfg.EnvAllow, nil)
	env = append(env, envRuntimeDir+"="+a.dir, envExecutable+"="+a.exe)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.exe, "_supervise", "--config", a.configPath)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr // an *os.File: inherited, no pipe to outlive us
	if a.logPath != "" {
		f, err := os.OpenFile(a.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("[app] log: %w", err)
		}
		defer f.Close()
		cmd.Stderr = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start app supervisor (%s _supervise): %w", a.exe, err)
	}
	return nil
}

// dial connects to the instance named by the URL host. When that fails (the
// app was replaced or crashed since we looked), it waits for the current
// instance once: nothing was sent yet, so this retry is safe for any method.
func (a *app) dial(ctx context.Context, _, hostport string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(hostport)
	a.mu.Lock()
	addr := a.addrs[host]
	a.mu.Unlock()
	var d net.Dialer
	if addr != "" {
		network, address := splitAddr(addr)
		c, err := d.DialContext(ctx, network, address)
		if err == nil || a.upstream != "" {
			return c, err
		}
	}
	if a.upstream != "" {
		return nil, fmt.Errorf("no address for %s", host)
	}
	s, err := a.await(ctx, addr)
	if err != nil {
		return nil, err
	}
	a.hostFor(s)
	network, address := splitAddr(s.Addr)
	return d.DialContext(ctx, network, address)
}

// bufferPool lends ReverseProxy its copy buffers: without it every request
// allocates 32 KiB, which dominated the proxy's cost (GC and madvise).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
