package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/daemon"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/serve"
)

// runfcgiHelp is the text of `runfcgi help`. The option names and defaults
// are those of Django's runfcgi; the text says what they do here.
const runfcgiHelp = `Usage: %[1]s runfcgi [key=value ...]

Serve this site as a FastCGI, SCGI or AJP backend for a web server that
connects to it (nginx, lighttpd, Apache's mod_proxy_fcgi, HAProxy), the
way "manage.py runfcgi" did before Django 1.9. Everything it needs is in
this one program. Keys are case-insensitive; a key without "=value" means
true. Values may also come from [server] in %[2]s; the command line wins.

Where to listen (give one of these, or none when a web server starts this
program with a listening socket on its standard input):
  socket=PATH          unix socket to create; a stale one is replaced
  host=ADDR port=N     TCP address, e.g. host=127.0.0.1 port=3033
  protocol=NAME        fcgi (default), scgi or ajp

Who may connect to the unix socket, and who the server runs as:
  listen.owner=USER    owner of the socket (needs root)
  listen.group=GROUP   group of the socket, e.g. the web server's group
                       (needs root, or membership of GROUP)
  listen.mode=MODE     octal mode of the socket; 0660 by default when an
                       owner or group is given, otherwise 0777 minus umask
  chown-socket=U[:G]   the same as listen.owner/listen.group, spelt as uWSGI
  chmod-socket=MODE    the same as listen.mode, spelt as uWSGI
  user=USER            once the socket exists, run as USER (start as root);
                       the socket then belongs to USER and USER's group,
                       and the pidfile is written as USER

How requests are served:
  method=prefork       worker processes, started and retired by a
                       supervisor (the default, as in Django)
  method=threaded      one process serving each request in a goroutine
  maxchildren=N        prefork: at most N workers; threaded: at most N
                       requests at once, others wait (default 50)
  minspare=N           prefork: keep at least N idle workers (default 2)
  maxspare=N           prefork: stop idle workers above N (default 5)
  maxrequests=N        replace a worker (prefork) or restart the process
                       in place (threaded) after N requests; 0 = never

Running in the background:
  daemonize=BOOL       detach from the terminal; by default only when
                       socket= or host= is given. The command returns once
                       the server listens and its pidfile exists.
  pidfile=FILE         write the server's process ID here; removed on exit
  workdir=DIR          working directory of the daemon (default /)
  umask=OCTAL          umask of the daemon, which also gives the socket's
                       mode when listen.mode is not set (default 022)
  outlog=FILE          append the daemon's standard output here
  errlog=FILE          append the daemon's log (standard error) here
  debug=BOOL           show a traceback page when the app panics (never
                       on a public site)
  help                 print this text

Stop a daemon with "kill $(cat FILE)" or "%[1]s stop pidfile=FILE" (which
waits until it has drained). Touching the program or its config, or
SIGHUP, restarts it in place without dropping a connection.

Examples:
  %[1]s runfcgi method=threaded host=127.0.0.1 port=3033
  # as root, with /run/mysite owned by the user mysite:
  %[1]s runfcgi socket=/run/mysite/mysite.sock pidfile=/run/mysite/mysite.pid \
      listen.group=www-data user=mysite
  %[1]s runfcgi protocol=scgi host=127.0.0.1 port=8025 daemonize=false
`

// runfcgiOptions are Django 1.8's FASTCGI_OPTIONS with their defaults.
type runfcgiOptions struct {
	Protocol    string
	Host        string
	Port        string
	Socket      string
	Method      string
	Daemonize   string // "" = daemonize when an address is given
	Workdir     string
	Pidfile     string
	MaxSpare    int
	MinSpare    int
	MaxChildren int
	MaxRequests int
	Debug       bool
	Outlog      string
	Errlog      string
	Umask       int
	Sock        socketOptions // listen.owner/group/mode, chown-/chmod-socket, user
}

var runfcgiKeys = []string{"protocol", "host", "port", "socket", "method", "daemonize", "workdir",
	"pidfile", "maxspare", "minspare", "maxchildren", "maxrequests", "debug", "outlog", "errlog", "umask", "help",
	"listen.owner", "listen.group", "listen.mode", "chown-socket", "chmod-socket", "user"}

func defaultRunfcgi() runfcgiOptions {
	return runfcgiOptions{Protocol: "fcgi", Method: "fork", Workdir: "/", MaxSpare: 5, MinSpare: 2,
		MaxChildren: 50, Umask: 0o022}
}

// fromConfig applies [server] values present in mysite.toml.
func (r *runfcgiOptions) fromConfig(s config.Server) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&r.Protocol, s.Protocol)
	set(&r.Host, s.Host)
	if s.Port != 0 {
		r.Port = strconv.Itoa(s.Port)
	}
	set(&r.Socket, s.Socket)
	set(&r.Method, s.Method)
	set(&r.Workdir, s.Workdir)
	set(&r.Pidfile, s.Pidfile)
	set(&r.Outlog, s.Outlog)
	set(&r.Errlog, s.Errlog)
	if s.Daemonize != nil {
		r.Daemonize = strconv.FormatBool(*s.Daemonize)
	}
	if s.MaxChildren > 0 {
		r.MaxChildren = s.MaxChildren
	}
	if s.MinSpare > 0 {
		r.MinSpare = s.MinSpare
	}
	if s.MaxSpare > 0 {
		r.MaxSpare = s.MaxSpare
	}
	if s.MaxRequests > 0 {
		r.MaxRequests = s.MaxRequests
	}
	if s.Umask != "" {
		if u, err := strconv.ParseUint(s.Umask, 8, 32); err == nil {
			r.Umask = int(u)
		}
	}
	r.Debug = r.Debug || s.Debug
	r.Sock.fromConfig(s)
}

// parseRunfcgi applies key=value arguments: keys are case-insensitive and
// a bare key means true, as with Django; unknown keys and malformed
// numbers are errors rather than ignored. It returns help=true for "help".
// Socket options given here replace both of their spellings from the
// config file.
func parseRunfcgi(r *runfcgiOptions, args []string) (help bool, err error) {
	var sock socketOptions
	for _, a := range args {
		k, v, hasValue := strings.Cut(a, "=")
		k = strings.ToLower(k)
		if !hasValue {
			v = "true"
		}
		num := func(dst *int) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("runfcgi: %s=%s: want a whole number", k, v)
			}
			*dst = n
			return nil
		}
		switch k {
		case "help":
			return true, nil
		case "protocol":
			r.Protocol = v
		case "host":
			r.Host = v
		case "port":
			r.Port = v
		case "socket":
			r.Socket = v
		case "method":
			r.Method = v
		case "daemonize":
			r.Daemonize = v
		case "workdir":
			r.Workdir = v
		case "pidfile":
			r.Pidfile = v
		case "outlog":
			r.Outlog = v
		case "errlog":
			r.Errlog = v
		case "debug":
			r.Debug = v != "false" && v != "no" && v != "f" && v != "0"
		case "maxspare":
			err = num(&r.MaxSpare)
		case "minspare":
			err = num(&r.MinSpare)
		case "maxchildren":
			err = num(&r.MaxChildren)
		case "maxrequests":
			err = num(&r.MaxRequests)
		case "listen.owner":
			sock.Owner = v
		case "listen.group":
			sock.Group = v
		case "listen.mode":
			sock.Mode = v
		case "chown-socket":
			sock.Chown = v
		case "chmod-socket":
			sock.Chmod = v
		case "user":
			sock.User = v
		case "umask":
			u, perr := strconv.ParseUint(v, 8, 32)
			if perr != nil {
				return false, fmt.Errorf("runfcgi: umask=%s: want an octal number such as 022", v)
			}
			r.Umask = int(u)
		default:
			keys := append([]string(nil), runfcgiKeys...)
			sort.Strings(keys)
			return false, fmt.Errorf("runfcgi: unknown option %q (known: %s)", k, strings.Join(keys, ", "))
		}
		if err != nil {
			return false, err
		}
	}
	if err := r.Sock.override(sock); err != nil {
		return false, fmt.Errorf("runfcgi: %w", err)
	}
	return false, nil
}

// resolve checks the combination as Django did and returns the address to
// listen on ("" = fd 0, for a web server that spawns us) and whether to
// daemonize. The messages are ours, except that a mix of socket and
// host/port quotes Django's, which people search for.
func (r *runfcgiOptions) resolve() (addr string, daemonize bool, err error) {
	switch r.Protocol {
	case "fcgi", "scgi", "ajp":
	default:
		return "", false, fmt.Errorf("runfcgi: protocol=%s: want fcgi, scgi or ajp", r.Protocol)
	}
	switch r.Method {
	case "prefork", "fork", "threaded", "thread":
	default:
		return "", false, fmt.Errorf("runfcgi: method=%s: want prefork (worker processes) or threaded (one process)", r.Method)
	}
	switch {
	case r.Host != "" && r.Port != "" && r.Socket == "":
		port, perr := strconv.Atoi(r.Port)
		if perr != nil || port < 1 || port > 65535 {
			return "", false, fmt.Errorf("runfcgi: port=%s: want a port number from 1 to 65535", r.Port)
		}
		addr = fmt.Sprintf("%s:%d", r.Host, port)
		if strings.Contains(r.Host, ":") {
			addr = fmt.Sprintf("[%s]:%d", r.Host, port)
		}
	case r.Socket != "" && r.Host == "" && r.Port == "":
		addr = "unix:" + r.Socket
	case r.Socket == "" && r.Host == "" && r.Port == "":
	default:
		return "", false, errors.New(`runfcgi: give socket=PATH, or host=ADDR with port=N, and not both (Django said "Invalid combination of host, port, socket.")`)
	}
	switch strings.ToLower(r.Daemonize) {
	case "":
		daemonize = addr != ""
	case "true", "yes", "t":
		daemonize = true
	case "false", "no", "f":
	default:
		return "", false, fmt.Errorf("runfcgi: daemonize=%s: want true or false", r.Daemonize)
	}
	if r.MinSpare > r.MaxSpare {
		return "", false, fmt.Errorf("runfcgi: minspare=%d is above maxspare=%d: the idle workers kept cannot be fewer than those wanted", r.MinSpare, r.MaxSpare)
	}
	if r.MaxChildren < 1 {
		return "", false, errors.New("runfcgi: maxchildren must be 1 or more")
	}
	return addr, daemonize, nil
}

func cmdRunfcgi(ctx context.Context, o serve.Options, args []string) error {
	r := defaultRunfcgi()
	exe := serve.Executable(o.Args)
	cfgPath := config.PathFor(exe)
	if cfg, err := config.Load(cfgPath); err == nil {
		r.fromConfig(cfg.Server)
	} else {
		return err
	}
	help, err := parseRunfcgi(&r, args)
	if help {
		fmt.Fprintf(o.Stdout, runfcgiHelp, progName(o.Args), filepath.Base(cfgPath))
		return nil
	}
	seeHelp := "\n(" + progName(o.Args) + " runfcgi help lists the options)"
	if err != nil {
		return usageError{err.Error() + seeHelp}
	}
	addr, daemonize, err := r.resolve()
	if err != nil {
		return usageError{err.Error() + seeHelp}
	}
	if o.SocketAccess, err = r.Sock.access(); err != nil {
		return usageError{"runfcgi: " + err.Error() + seeHelp}
	}
	o.User = r.Sock.User
	o.Protocol, o.Listen, o.Umask = r.Protocol, addr, &r.Umask
	o.Pidfile, o.Debug = r.Pidfile, r.Debug
	o.MaxRequests = r.MaxRequests
	o.Prefork = r.Method == "prefork" || r.Method == "fork"
	o.MaxChildren, o.MinSpare, o.MaxSpare = r.MaxChildren, r.MinSpare, r.MaxSpare
	getenv := serve.Getenv(o.Env)
	if addr == "" && listen.Detect(getenv) != listen.ModeFastCGIStdin && getenv("LISTEN_FDS") == "" {
		return usageError{"runfcgi: nothing to listen on: give socket=PATH or host=ADDR port=N\n(without them the program expects a web server to start it with a listening socket on its standard input, and this one has none)"}
	}
	if fd := getenv(daemon.EnvReadyFD); fd != "" {
		// We are the detached daemon: tell the starter when we listen.
		o.Ready = daemon.ReadyNotifier(fd)
		o.Env = daemon.WithoutDaemonEnv(o.Env)
		return serve.Run(ctx, o)
	}
	// Re-executed by a restart (or a prefork worker): already detached,
	// serving the inherited socket.
	if getenv("FCGISHIM_LISTEN_FD") != "" {
		daemonize = false
	}
	if daemonize {
		pid, err := daemon.Daemonize(daemon.Options{
			Path: exe, Args: o.Args, Env: o.Env, Workdir: r.Workdir, Umask: r.Umask,
			Outlog: r.Outlog, Errlog: r.Errlog,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Stdout, "started %s daemon, pid %d, listening on %s\n", r.Protocol, pid, strings.TrimPrefix(addr, "unix:"))
		return nil
	}
	return serve.Run(ctx, o)
}

// cmdStop stops a daemon like `kill $(cat pidfile)`, then waits until it
// has drained and exited.
func cmdStop(ctx context.Context, o serve.Options, args []string) error {
	var pidfile string
	timeout := 30 * time.Second
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch strings.TrimLeft(k, "-") {
		case "pidfile":
			pidfile = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil {
				return usageError{fmt.Sprintf("stop: timeout=%s: %v", v, err)}
			}
			timeout = d
		default:
			return usageError{fmt.Sprintf("stop: unknown option %q (want pidfile=PATH [timeout=30s])", a)}
		}
	}
	if pidfile == "" {
		return usageError{"stop: need pidfile=PATH"}
	}
	pid, err := daemon.ReadPidfile(pidfile)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	fmt.Fprintf(o.Stdout, "sent SIGTERM to %d, waiting for it to exit…\n", pid)
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running after %s", pid, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling another process's exit
	}
	fmt.Fprintf(o.Stdout, "stopped\n")
	return nil
}
