package shim

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
func Run(ctx context.Context, o Options) (err error) {
	o.fill()
	if o.Ready != nil {
		defer func() { o.Ready(err) }() // no-op once it reported success
	}
	getenv := Getenv(o.Env)
	started := time.Now()
	proc := &handler.Process{Started: started, Version: Version}

	mode := listen.Detect(getenv)
	var listeners []net.Listener
	serveFD0 := false
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
		listeners = []net.Listener{l}
		mode = listen.Mode(getenv(envMode))
		o.Listen = getenv(envListenAddr)
	case o.Listen != "":
		l, err := listen.ListenAccess(o.Listen, *o.Umask, o.SocketAccess)
		if err != nil {
			return err
		}
		listeners = []net.Listener{l}
		mode = listen.ModeExternal
		if o.Protocol == "http" {
			mode = listen.ModeHTTP
		}
	case mode == listen.ModeFastCGIStdin && (getenv(envFD0) == "concurrent" || runtime.GOOS != "linux"):
		l, err := listen.StdinListener()
		if err != nil {
			return err
		}
		listeners = []net.Listener{l}
		o.Protocol = "fcgi"
	case mode == listen.ModeFastCGIStdin:
		// Spawned by the web server: served one connection at a time on
		// fd 0 itself (fcgi.Server.ServeFD), as mod_fcgid sends them.
		serveFD0 = true
		o.Protocol = "fcgi"
	case mode == listen.ModeSocketActivation:
		ls, err := listen.Activated(getenv)
		if err != nil {
			return err
		}
		listeners = ls
	case mode == listen.ModeCGI:
		o.Protocol = "cgi"
	case mode == listen.ModeTerminal || mode == "":
		return Status(o.Stdout, o)
	}
	if o.User != "" {
		if err := daemon.SwitchUser(o.User); err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
	}
	worker := getenv(envWorker) != "" && len(listeners) > 0 // a prefork worker: see prefork.go
	if worker {
		var stopWorker func()
		if ctx, listeners, stopWorker, err = preforkWorker(ctx, getenv, o.Protocol, listeners); err != nil {
			return err
		}
		defer stopWorker()
		o.Pidfile = ""
	}
	proc.Mode = string(mode)
	proc.Protocol = protocolName(o.Protocol)
	log := o.Log.With("mode", proc.Mode)

	if mode == listen.ModeExternal && o.Protocol != "http" {
		for i, l := range listeners {
			al, err := listen.AllowList(l, getenv("FCGI_WEB_SERVER_ADDRS"), func(remote string) {
				log.Warn("connection refused: not in FCGI_WEB_SERVER_ADDRS", "remote", remote)
			})
			if err != nil {
				return err
			}
			listeners[i] = al
		}
	}

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
		s, err := handler.New(handler.Options{Config: cfg, Process: proc, Log: log, Executable: o.Executable})
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

	if o.Debug {
		site = debugPanics(site, log)
	}
	if o.MaxChildren > 0 {
		site = limitConcurrency(site, o.MaxChildren)
	}
	if d := cfg.Limits.SlowRequest.Duration; d > 0 {
		site = logSlow(site, d, log)
	}
	gw := &handler.Gateway{Next: site, Process: proc, ForceScriptName: cfg.Server.ForceScriptName}
	if mode == listen.ModeCGI {
		env := envMap(o.Env)
		gw.Vars = func(*http.Request) map[string]string { return env }
		defer closeSite(context.Background())
		return serveCGI(gw, o.Stdout)
	}

	restartFiles := []string{o.Executable, o.ConfigPath, filepath.Join(filepath.Dir(o.Executable), "restart.txt")}
	watch := cfg.Server.Watch
	if worker {
		watch = "off" // the supervisor watches
	}
	w, err := reload.New(reload.Options{
		Files: restartFiles, Mode: watch,
		PollInterval: cfg.Server.PollInterval.Duration, Log: log,
	})
	if err != nil {
		return err
	}
	defer w.Close()

	grace := cfg.Server.Grace.Duration
	if grace == 0 {
		grace = 2500 * time.Millisecond
	}
	restartNow := make(chan string, 1)
	maxRequests := cfg.Server.MaxRequests
	if o.MaxRequests > 0 {
		maxRequests = o.MaxRequests
	}
	if n := int64(maxRequests); n > 0 { // a worker also counts connections in its listener
		gw.AfterCount = func(count int64) {
			if count == n {
				select {
				case restartNow <- "maxrequests reached":
				default:
				}
			}
		}
	}

	if o.Prefork && !worker && (mode == listen.ModeExternal || mode == listen.ModeSocketActivation) {
		defer closeSite(context.Background())
		return runPrefork(ctx, o, listeners, w.C, grace, maxRequests, cfg.Limits.MaxConns, log)
	}
	srvs := make([]server, 0, len(listeners)+1)
	serveErr := make(chan error, len(listeners)+1)
	for i, l := range listeners {
		srv, vars := newServer(o.Protocol, gw, cfg, log)
		if i == 0 {
			gw.Vars = vars
		}
		srvs = append(srvs, srv)
		go func() { serveErr <- srv.Serve(l) }()
	}
	if serveFD0 {
		srv, vars := newServer(o.Protocol, gw, cfg, log)
		gw.Vars = vars
		srvs = append(srvs, srv)
		go func() { serveErr <- srv.(*fcgi.Server).ServeFD(0) }()
	}
	log.Info("serving", "protocol", proc.Protocol, "watch", w.Backend(), "config", cfgSummary(o.ConfigPath, cfgErr))
	if o.Pidfile != "" {
		if err := daemon.WritePidfile(o.Pidfile, os.Getpid()); err != nil {
			for _, s := range srvs {
				s.Close()
			}
			return err
		}
		defer daemon.RemovePidfile(o.Pidfile, os.Getpid())
	}
	if o.Ready != nil {
		o.Ready(nil)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		for _, s := range srvs {
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("drain incomplete; closing remaining connections", "err", err)
				s.Close()
			}
		}
		_ = closeSite(sctx)
	}

	if d := cfg.Server.MaxLifetime.Duration; d > 0 {
		d += rand.N(d/10 + 1)
		t := time.AfterFunc(d, func() {
			select {
			case restartNow <- "max_lifetime reached":
			default:
			}
		})
		defer t.Stop()
	}

	var reason string
	for reason == "" {
		select {
		case <-ctx.Done():
			shutdown()
			return nil
		case err := <-serveErr:
			if isServerClosed(err) {
				continue
			}
			shutdown()
			return fmt.Errorf("serve: %w", err)
		case s := <-sigs:
			// Under a spawning web server every signal means "stop"
			// (mod_fcgid sends SIGTERM, a hard restart sends SIGHUP to
			// the group). Started by hand, SIGHUP and SIGUSR1 restart.
			if (s == syscall.SIGHUP || s == syscall.SIGUSR1) && (mode == listen.ModeExternal || mode == listen.ModeHTTP || mode == listen.ModeSocketActivation) {
				reason = "signal " + s.String()
				continue
			}
			log.Info("stopping", "signal", s.String())
			go func() { // a second signal while draining changes nothing
				for range sigs {
				}
			}()
			shutdown()
			return nil
		case f := <-w.C:
			if f == o.Executable && !reload.Exists(f) {
				continue // deleted binary: keep serving
			}
			reason = "changed: " + f
		case r := <-restartNow:
			reason = r
		}
	}
	if worker { // the supervisor starts a replacement
		log.Info("worker stopping", "reason", reason)
		shutdown()
		return nil
	}
	return restart(o, mode, listeners, shutdown, log, reason)
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
