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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	dirID      uint64 // its inode when we prepared it (under mu)
	upstream   string // "unix:/p" or "tcp:host:port" for [app] upstream
	timeout    time.Duration
	ready      time.Duration
	logPath    string // [app] log: the supervisor's stderr; "" = ours

	pool connPool // idle connections to the app

	// siteHost is the Host of the first request we forwarded: the
	// supervisor we start sends it with its readiness request, so an app
	// that checks Host (Django's ALLOWED_HOSTS) answers it as it would a
	// visitor, instead of logging (and mailing) a DisallowedHost error.
	siteHost atomic.Pointer[string]

	mu        sync.Mutex
	clients   *lockFile // our shared lock on clients.lock, once registered
	addrs     map[string]string
	cached    *state
	cacheID   fileID
	cacheAt   time.Time // when state.json was last looked at
	statePath string
	closed    bool
	logged    map[string]time.Time // rate limit of our log lines, by kind
}

// fileID tells whether state.json was rewritten since we read it.
type fileID struct {
	ino   uint64
	mtime int64
	size  int64
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
		a.dir = RuntimeDir(c, os.Getenv)
		a.statePath = filepath.Join(a.dir, fileState)
		if err := prepareRuntimeDir(a.dir); err != nil {
			return nil, err
		}
		a.dirID = dirIdentity(a.dir)
		a.logPath = c.Resolve(c.App.Log)
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
	err := a.clients.close()
	a.clients = nil
	return err
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if a.siteHost.Load() == nil && r.Host != "" && validHost(r.Host) {
		h := r.Host
		a.siteHost.CompareAndSwap(nil, &h)
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
	key, proxyLine := target, ""
	if a.cfg.ProxyProtocol {
		// The PROXY line names one visitor for the connection's life: it
		// is reused only for that visitor's requests.
		var ip string
		proxyLine, ip = proxyProtocolLine(o.in.RemoteAddr)
		key = target + " " + ip
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
			uc.bw.WriteString(proxyLine)
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
	a.mu.Lock()
	registered := a.clients != nil
	a.mu.Unlock()
	if registered {
		if s := a.current(false); s != nil && s.Status == statusReady {
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
// connections to a replaced one are never reused for new requests. The
// supervisor's pid is part of it: a new supervisor (after its runtime
// directory was re-created) numbers its instances from 1 again.
func (a *app) hostFor(s *state) string {
	host := "app-" + strconv.Itoa(s.Supervisor) + "-" + strconv.Itoa(s.Instance)
	a.mu.Lock()
	if a.addrs[host] != s.Addr {
		if len(a.addrs) > 0 {
			a.pool.closeIdle(false)
			clear(a.addrs)
		}
		a.addrs[host] = s.Addr
	}
	a.mu.Unlock()
	return host
}

// current returns the state, re-read only when state.json changed; unless
// fresh, a state looked at within stateRecheck is used as it is.
func (a *app) current(fresh bool) *state {
	now := time.Now()
	a.mu.Lock()
	if !fresh && a.cached != nil && now.Sub(a.cacheAt) < stateRecheck {
		s := a.cached
		a.mu.Unlock()
		return s
	}
	a.mu.Unlock()
	fi, err := os.Stat(a.statePath)
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
		a.cacheAt = now
		a.mu.Unlock()
		return s
	}
	a.mu.Unlock()
	s, err := readState(a.dir)
	if err != nil {
		return nil
	}
	a.mu.Lock()
	a.cached, a.cacheID, a.cacheAt = s, id, now
	a.mu.Unlock()
	return s
}

// stateRecheck is how long a state read from state.json is used without
// looking again: a stat per request was a tenth of the proxy's cost. A
// replacement is noticed this much later (the old instance serves for the
// 2 s handover), a crash at once (the dial fails and await re-reads).
const stateRecheck = 50 * time.Millisecond

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
		if renewed, err := a.ensureDir(); err != nil {
			return nil, err
		} else if renewed {
			avoid = "" // a new supervisor may well reuse the old address
		}
		if ok, err := a.register(); err != nil {
			return nil, err
		} else if ok {
			if !held(filepath.Join(a.dir, fileSupervisorLock)) {
				if startErr = a.startSupervisor(ctx); startErr != nil {
					a.logOnce("supervisor", "%v", startErr)
				}
			} else if s := a.current(true); s != nil && alive(s.Supervisor) {
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

// ensureDir re-creates the runtime directory when it was removed or
// replaced since we prepared it (a cleaner of /tmp or ~/.cache, a person).
// Our registration and the state we read belong to the old one: they are
// dropped, so the wait that follows starts a supervisor in the new one. The
// old supervisor sees its directory gone and stops its app. It reports
// whether it re-created the directory.
func (a *app) ensureDir() (bool, error) {
	id := dirIdentity(a.dir)
	a.mu.Lock()
	same := id != 0 && id == a.dirID
	a.mu.Unlock()
	if same {
		return false, nil
	}
	if err := prepareRuntimeDir(a.dir); err != nil {
		return false, err
	}
	a.mu.Lock()
	a.dirID = dirIdentity(a.dir)
	a.clients.close()
	a.clients, a.cached = nil, nil
	a.mu.Unlock()
	a.logOnce("runtime dir", "the app's runtime directory %s was removed: re-created it", a.dir)
	return true, nil
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
	if h := a.siteHost.Load(); h != nil {
		env = append(env, envReadyHost+"="+*h)
	}
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
func (a *app) dial(ctx context.Context, host string) (net.Conn, error) {
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
// REMOTE_ADDR from it, naming the client at remoteAddr, and that client's IP.
// For an address that is not an IP (a unix-socket front end) both are empty:
// the app sees no address, as without.
func proxyProtocolLine(remoteAddr string) (line, ip string) {
	host, port, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host, port = remoteAddr, "0"
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "", ""
	}
	addr = addr.WithZone("").Unmap()
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		port = "0"
	} else {
		port = strconv.FormatUint(p, 10)
	}
	if addr.Is4() {
		return "PROXY TCP4 " + addr.String() + " 127.0.0.1 " + port + " 0\r\n", addr.String()
	}
	return "PROXY TCP6 " + addr.String() + " ::1 " + port + " 0\r\n", addr.String()
}
