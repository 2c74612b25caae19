package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/ajp"
	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/daemon"
	"github.com/fcgishim/fcgishim/fcgi"
	"github.com/fcgishim/fcgishim/handler"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/reload"
	"github.com/fcgishim/fcgishim/scgi"
)

// Version is reported by the info page; the build may set it with -ldflags.
var Version = "dev"

// Environment variables carrying a listener across a re-exec.
const (
	envListenFD   = "FCGISHIM_LISTEN_FD"
	envListenAddr = "FCGISHIM_LISTEN_ADDR"
	envMode       = "FCGISHIM_MODE"
	// envFD0=concurrent serves fd 0 with the concurrent server (a goroutine
	// per connection) instead of one connection at a time: for a web
	// server that spawns on fd 0 and sends one process many requests at
	// once, which mod_fcgid never does. (ServeFD is Linux only.)
	envFD0 = "FCGISHIM_FD0"
)

// Options configure Run. Zero values work: detection decides the mode and
// the config beside the executable decides the handler.
type Options struct {
	// Handler is the app. nil = built from the config (static dirs, the
	// supervised [app], or the info page).
	Handler http.Handler
	// Config is used as is when set; otherwise ConfigPath (or the
	// executable's name with ".toml") is loaded.
	Config     *config.Config
	ConfigPath string
	// Executable is the path this program was started as; "" = argv[0]
	// made absolute. Touching or replacing it restarts the program.
	Executable string

	// Listen serves Protocol on an explicit address ("host:port",
	// "unix:/path") instead of what detection finds; Mode is then
	// "external", or "http" for Protocol "http".
	Listen   string
	Protocol string // fcgi (default), scgi, ajp, http
	Umask    *int   // for unix sockets; nil = 0o077 (private)
	// SocketAccess sets the owner, group and mode of a unix socket at
	// Listen (php-fpm's listen.owner/group/mode); zero = from Umask.
	SocketAccess listen.SocketAccess
	// User, when set, is who the process runs as once it listens (it must
	// start as root, or already be that user); "" = stay as started.
	User string

	// runfcgi-style process options. Zero values: no pidfile, no limit.
	Pidfile     string // written once listening, removed on exit
	Debug       bool   // a handler panic shows a traceback page (never by default)
	MaxRequests int    // restart after this many requests; 0 = config's maxrequests
	MaxChildren int    // concurrent requests (threaded); 0 = unlimited
	Prefork     bool   // worker processes instead of goroutines (runfcgi method=prefork)
	MinSpare    int
	MaxSpare    int
	// Ready, when set, is called once: nil when serving, or the error that
	// stopped the start (the daemon handshake).
	Ready func(error)

	Args   []string  // argv for a re-exec; nil = os.Args
	Env    []string  // nil = os.Environ()
	Stdout io.Writer // nil = os.Stdout (the terminal status; the CGI response)
	Stderr io.Writer // nil = os.Stderr (the web server's error log)
	Log    *slog.Logger
}

func (o *Options) fill() {
	if o.Args == nil {
		o.Args = os.Args
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(o.Stderr, nil)).With("pid", os.Getpid())
	}
	if o.Executable == "" {
		o.Executable = Executable(o.Args)
	}
	if o.ConfigPath == "" {
		o.ConfigPath = config.PathFor(o.Executable)
	}
	if o.Protocol == "" {
		o.Protocol = "fcgi"
	}
	if o.Umask == nil {
		private := 0o077
		o.Umask = &private
	}
}

// Executable returns the path the program was started as, made absolute. It
// prefers argv[0] over /proc/self/exe: after a rename-deploy the latter
// names the old, deleted file, and a symlinked mysite.fcgi would be lost.
func Executable(args []string) string {
	if len(args) > 0 && strings.Contains(args[0], "/") {
		if p, err := filepath.Abs(args[0]); err == nil {
			return p
		}
	}
	p, err := os.Executable()
	if err != nil && len(args) > 0 {
		return args[0]
	}
	return p
}

// Main serves h as Run does, with the mode detected from how the process was
// started, and exits. Flags: --http ADDR (local preview), --listen ADDR and
// --protocol fcgi|scgi|ajp (an external server).
func Main(h http.Handler) {
	o := Options{Handler: h}
	args := os.Args[1:]
	if listen.Detect(os.Getenv) != listen.ModeCGI { // CGI: argv is the query string
		for i := 0; i+1 < len(args); i++ {
			switch strings.TrimLeft(args[i], "-") {
			case "http":
				o.Listen, o.Protocol = args[i+1], "http"
			case "listen":
				o.Listen = args[i+1]
			case "protocol":
				o.Protocol = args[i+1]
			}
		}
	}
	ctx := context.Background()
	if err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Run serves until a stop signal, a restart (which re-executes the program
// and so does not return on success), or an error.
//
// The steps: find the listeners (openListeners), switch user, become a
// prefork worker if the supervisor started us, guard an external listener
// with FCGI_WEB_SERVER_ADDRS, load the site and wrap it in the gateway, then
// either answer one CGI request, hand the listeners to the prefork
// supervisor, or serve them until a stop (shutdown) or a reason to restart.
func Run(ctx context.Context, o Options) (err error) {
	o.fill()
	if o.Ready != nil {
		defer func() { o.Ready(err) }() // no-op once it reported success
	}
	r := &run{o: o, getenv: Getenv(o.Env), proc: &handler.Process{Started: time.Now(), Version: Version}}

	if err := r.openListeners(); err != nil {
		return err
	}
	if r.statusOnly {
		return Status(r.o.Stdout, r.o)
	}
	if err := r.switchUser(); err != nil {
		return err
	}
	r.worker = r.getenv(envWorker) != "" && len(r.listeners) > 0 // a prefork worker: see prefork.go
	if r.worker {
		var stopWorker func()
		if ctx, r.listeners, stopWorker, err = preforkWorker(ctx, r.getenv, r.o.Protocol, r.listeners); err != nil {
			return err
		}
		defer stopWorker()
		r.o.Pidfile = ""
	}
	r.proc.Mode = string(r.mode)
	r.proc.Protocol = protocolName(r.o.Protocol)
	r.log = r.o.Log.With("mode", r.proc.Mode)
	if err := r.allowList(); err != nil {
		return err
	}

	gw := r.gateway(r.loadSite())
	if r.mode == listen.ModeCGI {
		return r.serveCGI(gw)
	}

	w, err := r.watch()
	if err != nil {
		return err
	}
	defer w.Close()
	r.limits(gw)

	if r.o.Prefork && !r.worker && (r.mode == listen.ModeExternal || r.mode == listen.ModeSocketActivation) {
		return r.supervise(ctx, w)
	}
	r.startServers(gw)
	r.log.Info("serving", "protocol", r.proc.Protocol, "watch", w.Backend(), "config", cfgSummary(r.o.ConfigPath, r.cfgErr))
	if r.o.Pidfile != "" {
		if err := r.writePidfile(); err != nil {
			return err
		}
		defer daemon.RemovePidfile(r.o.Pidfile, os.Getpid())
	}
	if r.o.Ready != nil {
		r.o.Ready(nil)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	if t := r.lifetimeTimer(); t != nil {
		defer t.Stop()
	}

	reason, err := r.waitForRestart(ctx, sigs, w)
	if reason == "" {
		return err
	}
	if r.worker { // the supervisor starts a replacement
		r.log.Info("worker stopping", "reason", reason)
		r.shutdown()
		return nil
	}
	return restart(r.o, r.mode, r.listeners, r.shutdown, r.log, reason)
}

// run is the state of one Run, filled in step by step.
type run struct {
	o      Options
	getenv func(string) string
	proc   *handler.Process
	log    *slog.Logger

	mode       listen.Mode
	listeners  []net.Listener
	serveFD0   bool // serve fd 0 itself, one connection at a time
	statusOnly bool // started from a terminal: print the status and stop
	worker     bool // a prefork worker, started by the supervisor

	cfg       *config.Config
	cfgErr    error
	closeSite func(context.Context) error

	grace       time.Duration
	maxRequests int
	restartNow  chan string // maxrequests or max_lifetime reached

	srvs     []server
	serveErr chan error
}

// openListeners finds out how the process was started and opens or adopts
// the listeners that follow: one passed across a restart, an explicit
// address, fd 0 (concurrently, or served in place), systemd's; none for CGI.
func (r *run) openListeners() error {
	o, getenv := &r.o, r.getenv
	r.mode = listen.Detect(getenv)
	switch {
	case getenv(envListenFD) != "":
		fd, err := strconv.Atoi(getenv(envListenFD))
		if err != nil {
			return fmt.Errorf("%s=%q: %w", envListenFD, getenv(envListenFD), err)
		}
		l, err := listen.InheritedListener(fd)
		if err != nil {
			return err
		}
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(true)
		}
		r.listeners = []net.Listener{l}
		r.mode = listen.Mode(getenv(envMode))
		o.Listen = getenv(envListenAddr)
	case o.Listen != "":
		l, err := listen.ListenAccess(o.Listen, *o.Umask, o.SocketAccess)
		if err != nil {
			return err
		}
		r.listeners = []net.Listener{l}
		r.mode = listen.ModeExternal
		if o.Protocol == "http" {
			r.mode = listen.ModeHTTP
		}
	case r.mode == listen.ModeFastCGIStdin && (getenv(envFD0) == "concurrent" || runtime.GOOS != "linux"):
		l, err := listen.StdinListener()
		if err != nil {
			return err
		}
		r.listeners = []net.Listener{l}
		o.Protocol = "fcgi"
	case r.mode == listen.ModeFastCGIStdin:
		// Spawned by the web server: served one connection at a time on
		// fd 0 itself (fcgi.Server.ServeFD), as mod_fcgid sends them.
		r.serveFD0 = true
		o.Protocol = "fcgi"
	case r.mode == listen.ModeSocketActivation:
		ls, err := listen.Activated(getenv)
		if err != nil {
			return err
		}
		r.listeners = ls
	case r.mode == listen.ModeCGI:
		o.Protocol = "cgi"
	case r.mode == listen.ModeTerminal || r.mode == "":
		r.statusOnly = true
	}
	return nil
}

// switchUser becomes o.User, if set, now that the sockets exist.
func (r *run) switchUser() error {
	if r.o.User != "" {
		if err := daemon.SwitchUser(r.o.User); err != nil {
			for _, l := range r.listeners {
				l.Close()
			}
			return err
		}
	}
	return nil
}

// allowList limits an external FastCGI/SCGI/AJP listener to the addresses
// in FCGI_WEB_SERVER_ADDRS.
func (r *run) allowList() error {
	if r.mode == listen.ModeExternal && r.o.Protocol != "http" {
		for i, l := range r.listeners {
			al, err := listen.AllowList(l, r.getenv("FCGI_WEB_SERVER_ADDRS"), func(remote string) {
				r.log.Warn("connection refused: not in FCGI_WEB_SERVER_ADDRS", "remote", remote)
			})
			if err != nil {
				return err
			}
			r.listeners[i] = al
		}
	}
	return nil
}

// loadSite reads the config and builds what serves the site: the embedding
// program's handler, the configured site, or an error page while the
// config (or the site) is broken.
func (r *run) loadSite() http.Handler {
	o, log := &r.o, r.log
	cfg, cfgErr := o.Config, error(nil)
	if cfg == nil {
		cfg, cfgErr = config.Load(o.ConfigPath)
	}
	var site http.Handler
	var closeSite func(context.Context) error
	switch {
	case cfgErr != nil:
		log.Error("config error; serving an error page until the config is fixed", "err", cfgErr)
		site = configErrorPage(cfgErr)
		cfg = &config.Config{}
	case o.Handler != nil:
		site = o.Handler
	default:
		s, err := handler.New(handler.Options{Config: cfg, Process: r.proc, Log: log, Executable: o.Executable})
		if err != nil {
			log.Error("cannot serve the site", "err", err)
			site = configErrorPage(err)
		} else {
			site, closeSite = s, s.Close
		}
	}
	if closeSite == nil {
		closeSite = func(context.Context) error { return nil }
	}
	r.cfg, r.cfgErr, r.closeSite = cfg, cfgErr, closeSite
	return site
}

// gateway wraps site in the options' middleware and the gateway that
// repairs SCRIPT_NAME/PATH_INFO.
func (r *run) gateway(site http.Handler) *handler.Gateway {
	o, cfg, log := &r.o, r.cfg, r.log
	if o.Debug {
		site = debugPanics(site, log)
	}
	if o.MaxChildren > 0 {
		site = limitConcurrency(site, o.MaxChildren)
	}
	if d := cfg.Limits.SlowRequest.Duration; d > 0 {
		site = logSlow(site, d, log)
	}
	return &handler.Gateway{Next: site, Process: r.proc, ForceScriptName: cfg.Server.ForceScriptName}
}

// serveCGI answers the one CGI request, with the process environment as
// its variables.
func (r *run) serveCGI(gw *handler.Gateway) error {
	env := envMap(r.o.Env)
	gw.Vars = func(*http.Request) map[string]string { return env }
	defer r.closeSite(context.Background())
	return serveCGI(gw, r.o.Stdout)
}

// supervise hands the listeners to prefork worker processes (runPrefork)
// instead of serving them here.
func (r *run) supervise(ctx context.Context, w *reload.Watcher) error {
	defer r.closeSite(context.Background())
	return runPrefork(ctx, r.o, r.listeners, w.C, r.grace, r.maxRequests, r.cfg.Limits.MaxConns, r.log)
}

// watch starts watching the binary, the config and restart.txt (a prefork
// worker leaves that to its supervisor).
func (r *run) watch() (*reload.Watcher, error) {
	o, cfg := &r.o, r.cfg
	restartFiles := []string{o.Executable, o.ConfigPath, filepath.Join(filepath.Dir(o.Executable), "restart.txt")}
	watch := cfg.Server.Watch
	if r.worker {
		watch = "off" // the supervisor watches
	}
	return reload.New(reload.Options{
		Files: restartFiles, Mode: watch,
		PollInterval: cfg.Server.PollInterval.Duration, Log: r.log,
	})
}

// limits sets the drain grace and the request count after which the
// process restarts.
func (r *run) limits(gw *handler.Gateway) {
	cfg := r.cfg
	r.grace = cfg.Server.Grace.Duration
	if r.grace == 0 {
		r.grace = 2500 * time.Millisecond
	}
	restartNow := make(chan string, 1)
	r.restartNow = restartNow
	r.maxRequests = cfg.Server.MaxRequests
	if r.o.MaxRequests > 0 {
		r.maxRequests = r.o.MaxRequests
	}
	if n := int64(r.maxRequests); n > 0 { // a worker also counts connections in its listener
		gw.AfterCount = func(count int64) {
			if count == n {
				select {
				case restartNow <- "maxrequests reached":
				default:
				}
			}
		}
	}
}

// startServers serves the protocol on every listener, and on fd 0 itself
// when it is served in place; their errors arrive on r.serveErr.
func (r *run) startServers(gw *handler.Gateway) {
	r.srvs = make([]server, 0, len(r.listeners)+1)
	r.serveErr = make(chan error, len(r.listeners)+1)
	for i, l := range r.listeners {
		srv, vars := newServer(r.o.Protocol, gw, r.cfg, r.log)
		if i == 0 {
			gw.Vars, gw.Var = vars, varOf(r.o.Protocol)
		}
		r.srvs = append(r.srvs, srv)
		go func() { r.serveErr <- srv.Serve(l) }()
	}
	if r.serveFD0 {
		srv, vars := newServer(r.o.Protocol, gw, r.cfg, r.log)
		gw.Vars, gw.Var = vars, varOf(r.o.Protocol)
		r.srvs = append(r.srvs, srv)
		go func() { r.serveErr <- srv.(*fcgi.Server).ServeFD(0) }()
	}
}

// writePidfile writes o.Pidfile; when it cannot, the servers close.
func (r *run) writePidfile() error {
	if err := daemon.WritePidfile(r.o.Pidfile, os.Getpid()); err != nil {
		for _, s := range r.srvs {
			s.Close()
		}
		return err
	}
	return nil
}

// shutdown drains every server within the grace period, closing what is
// still open after it, then closes the site.
func (r *run) shutdown() {
	sctx, cancel := context.WithTimeout(context.Background(), r.grace)
	defer cancel()
	for _, s := range r.srvs {
		if err := s.Shutdown(sctx); err != nil {
			r.log.Warn("drain incomplete; closing remaining connections", "err", err)
			s.Close()
		}
	}
	_ = r.closeSite(sctx)
}

// lifetimeTimer asks for a restart after max_lifetime (plus up to a tenth,
// so that copies started together do not restart together); nil when unset.
func (r *run) lifetimeTimer() *time.Timer {
	d := r.cfg.Server.MaxLifetime.Duration
	if d <= 0 {
		return nil
	}
	d += rand.N(d/10 + 1)
	return time.AfterFunc(d, func() {
		select {
		case r.restartNow <- "max_lifetime reached":
		default:
		}
	})
}

// waitForRestart serves until there is a reason to restart, which it
// returns, or until a stop (ctx done, a stop signal, a server failing),
// when it has already shut down and returns "" and Run's result.
func (r *run) waitForRestart(ctx context.Context, sigs chan os.Signal, w *reload.Watcher) (string, error) {
	var reason string
	for reason == "" {
		select {
		case <-ctx.Done():
			r.shutdown()
			return "", nil
		case err := <-r.serveErr:
			if isServerClosed(err) {
				continue
			}
			r.shutdown()
			return "", fmt.Errorf("serve: %w", err)
		case s := <-sigs:
			// Under a spawning web server every signal means "stop"
			// (mod_fcgid sends SIGTERM, a hard restart sends SIGHUP to
			// the group). Started by hand, SIGHUP and SIGUSR1 restart.
			if (s == syscall.SIGHUP || s == syscall.SIGUSR1) && (r.mode == listen.ModeExternal || r.mode == listen.ModeHTTP || r.mode == listen.ModeSocketActivation) {
				reason = "signal " + s.String()
				continue
			}
			r.log.Info("stopping", "signal", s.String())
			go func() { // a second signal while draining changes nothing
				for range sigs {
				}
			}()
			r.shutdown()
			return "", nil
		case f := <-w.C:
			if f == r.o.Executable && !reload.Exists(f) {
				continue // deleted binary: keep serving
			}
			reason = "changed: " + f
		case why := <-r.restartNow:
			reason = why
		}
	}
	return reason, nil
}

// restart drains, then replaces this program with a fresh copy of the
// (possibly new) executable in the same process. Listening sockets stay
// open throughout (fd 0 and systemd's fds are never closed by us; an
// explicit listener is passed by fd number), so connections arriving
// meanwhile wait in the kernel's backlog instead of being refused.
func restart(o Options, mode listen.Mode, listeners []net.Listener, shutdown func(), log *slog.Logger, reason string) error {
	env := withoutKeys(o.Env, envListenFD, envListenAddr, envMode)
	var keep *os.File
	if mode == listen.ModeExternal || mode == listen.ModeHTTP {
		f, err := listen.File(listeners[0])
		if err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		keep = f
		listen.KeepSocketFile(listeners[0])
		env = append(env, fmt.Sprintf("%s=%d", envListenFD, f.Fd()), envListenAddr+"="+o.Listen, envMode+"="+string(mode))
	}
	log.Info("restarting", "reason", reason)
	shutdown()
	err := syscall.Exec(o.Executable, o.Args, env)
	runtime.KeepAlive(keep) // its finalizer would close the listening socket's last descriptor
	return fmt.Errorf("restart: exec %s: %w", o.Executable, err)
}

// server is what fcgi, scgi, ajp and net/http servers have in common.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

func newServer(protocol string, h http.Handler, cfg *config.Config, log *slog.Logger) (server, func(*http.Request) map[string]string) {
	lim := cfg.Limits
	switch protocol {
	case "scgi":
		return &scgi.Server{Handler: h, ErrorLog: log, MaxHeaderBytes: lim.MaxHeaderBytes, MaxBodyBytes: lim.MaxBodyBytes,
			HeaderTimeout: lim.HeaderTimeout.Duration, IdleTimeout: lim.IdleTimeout.Duration}, scgi.Params
	case "ajp":
		return &ajp.Server{Handler: h, ErrorLog: log, Secret: cfg.Server.Secret, MaxBodyBytes: lim.MaxBodyBytes,
			HeaderTimeout: lim.HeaderTimeout.Duration, IdleTimeout: lim.IdleTimeout.Duration}, ajp.Params
	case "http":
		return &http.Server{Handler: h, ReadHeaderTimeout: orDefault(lim.HeaderTimeout.Duration, 30*time.Second),
			IdleTimeout: orDefault(lim.IdleTimeout.Duration, 120*time.Second), MaxHeaderBytes: lim.MaxHeaderBytes,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, nil
	default:
		return &fcgi.Server{Handler: h, ErrorLog: log, MaxConns: lim.MaxConns, MaxReqsPerConn: lim.MaxReqsPerConn,
			MaxParamsBytes: lim.MaxParamsBytes, MaxBodyBytes: lim.MaxBodyBytes, HeaderTimeout: lim.HeaderTimeout.Duration,
			IdleTimeout: lim.IdleTimeout.Duration, RequestTimeout: lim.RequestTimeout.Duration, WriteTimeout: lim.WriteTimeout.Duration}, fcgi.Params
	}
}

// varOf returns the protocol's lookup of one CGI variable, which builds no
// map; nil where it has none.
func varOf(protocol string) func(*http.Request, string) string {
	switch protocol {
	case "scgi", "ajp", "http":
		return nil
	}
	return fcgi.Param
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func protocolName(p string) string {
	if p == "fcgi" {
		return "fastcgi"
	}
	return p
}

// serveCGI answers the one request of a CGI invocation on stdout.
func serveCGI(h http.Handler, stdout io.Writer) error {
	req, err := cgi.Request()
	if err == nil && req.Body == nil { // no CONTENT_LENGTH: a GET
		req.Body = http.NoBody
	}
	if err != nil {
		fmt.Fprint(stdout, "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad CGI request\n")
		return fmt.Errorf("cgi: %w", err)
	}
	return serveOneCGI(h, req, stdout)
}

// Getenv returns a lookup function over env ("KEY=value" strings), the
// environment a program was given rather than the process's own.
func Getenv(env []string) func(string) string {
	m := envMap(env)
	return func(k string) string { return m[k] }
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func withoutKeys(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

func cfgSummary(path string, err error) string {
	if err != nil {
		return "error"
	}
	if _, serr := os.Stat(path); serr != nil {
		return "none (" + path + " not found)"
	}
	return path
}

func isServerClosed(err error) bool {
	for _, target := range []error{fcgi.ErrServerClosed, scgi.ErrServerClosed, ajp.ErrServerClosed, http.ErrServerClosed} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
