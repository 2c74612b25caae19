package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/shim"
	"github.com/fcgishim/fcgishim/spawn"
)

// runfcgiHelp is Django 1.8's runfcgi help, with mysite.fcgi for manage.py.
const runfcgiHelp = `Usage: %[1]s runfcgi [options] [fcgi settings]

Run this project as a fastcgi (or some other protocol supported
by flup) application. To do this, the flup package from
http://www.saddi.com/software/flup/ is required.  [fcgishim: not any more;
everything is built in.]

runfcgi [options] [fcgi settings]

Optional Fcgi settings: (setting=value)
  protocol=PROTOCOL    fcgi, scgi, ajp, ... (default fcgi)
  host=HOSTNAME        hostname to listen on.
  port=PORTNUM         port to listen on.
  socket=FILE          UNIX socket to listen on.
  method=IMPL          prefork or threaded (default prefork).
  maxrequests=NUMBER   number of requests a child handles before it is
                       killed and a new child is forked (0 = no limit).
  maxspare=NUMBER      max number of spare processes / threads.
  minspare=NUMBER      min number of spare processes / threads.
  maxchildren=NUMBER   hard limit number of processes / threads.
  daemonize=BOOL       whether to detach from terminal.
  pidfile=FILE         write the spawned process-id to this file.
  workdir=DIRECTORY    change to this directory when daemonizing.
  debug=BOOL           set to true to enable flup tracebacks.
  outlog=FILE          write stdout to this file.
  errlog=FILE          write stderr to this file.
  umask=UMASK          umask to use when daemonizing, in octal notation (default 022).

Examples:
  Run a "standard" fastcgi process on a file-descriptor
  (for Web servers which spawn your processes for you)
    $ %[1]s runfcgi method=threaded

  Run a scgi server on a TCP host/port
    $ %[1]s runfcgi protocol=scgi method=prefork host=127.0.0.1 port=8025

  Run a fastcgi server on a UNIX domain socket (posix platforms only)
    $ %[1]s runfcgi method=prefork socket=/tmp/fcgi.sock

  Run a fastCGI as a daemon and write the spawned PID in a file
    $ %[1]s runfcgi socket=/tmp/fcgi.sock method=prefork \
        daemonize=true pidfile=/var/run/django-fcgi.pid

Values may also come from [server] in mysite.toml; the command line wins.
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
}

var runfcgiKeys = []string{"protocol", "host", "port", "socket", "method", "daemonize", "workdir",
	"pidfile", "maxspare", "minspare", "maxchildren", "maxrequests", "debug", "outlog", "errlog", "umask", "help"}

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
}

// parseRunfcgi applies key=value arguments the way Django did (keys are
// case-insensitive; a bare key means true), but rejects unknown keys and
// malformed numbers instead of ignoring them. It returns help=true for
// "help".
func parseRunfcgi(r *runfcgiOptions, args []string) (help bool, err error) {
	for _, a := range args {
		k, v, hasValue := strings.Cut(a, "=")
		k = strings.ToLower(k)
		if !hasValue {
			v = "true"
		}
		num := func(dst *int) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("ERROR: %s=%s is not a number.", k, v)
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
		case "umask":
			u, perr := strconv.ParseUint(v, 8, 32)
			if perr != nil {
				return false, fmt.Errorf("ERROR: umask=%s is not an octal number.", v)
			}
			r.Umask = int(u)
		default:
			keys := append([]string(nil), runfcgiKeys...)
			sort.Strings(keys)
			return false, fmt.Errorf("ERROR: unknown option %q (known: %s).", k, strings.Join(keys, ", "))
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// resolve checks the combination as Django did and returns the address to
// listen on ("" = fd 0, for a web server that spawns us) and whether to
// daemonize. The messages are Django's.
func (r *runfcgiOptions) resolve() (addr string, daemonize bool, err error) {
	switch r.Protocol {
	case "fcgi", "scgi", "ajp":
	default:
		return "", false, fmt.Errorf("ERROR: protocol must be one of fcgi, scgi or ajp, not %q.", r.Protocol)
	}
	switch r.Method {
	case "prefork", "fork", "threaded", "thread":
	default:
		return "", false, errors.New("ERROR: Implementation must be one of prefork or thread.")
	}
	switch {
	case r.Host != "" && r.Port != "" && r.Socket == "":
		port, perr := strconv.Atoi(r.Port)
		if perr != nil || port < 1 || port > 65535 {
			return "", false, fmt.Errorf("ERROR: port=%s is not a port number.", r.Port)
		}
		addr = fmt.Sprintf("%s:%d", r.Host, port)
		if strings.Contains(r.Host, ":") {
			addr = fmt.Sprintf("[%s]:%d", r.Host, port)
		}
	case r.Socket != "" && r.Host == "" && r.Port == "":
		addr = "unix:" + r.Socket
	case r.Socket == "" && r.Host == "" && r.Port == "":
	default:
		return "", false, errors.New("Invalid combination of host, port, socket.")
	}
	switch strings.ToLower(r.Daemonize) {
	case "":
		daemonize = addr != ""
	case "true", "yes", "t":
		daemonize = true
	case "false", "no", "f":
	default:
		return "", false, errors.New("ERROR: Invalid option for daemonize parameter.")
	}
	if r.MinSpare > r.MaxSpare {
		return "", false, fmt.Errorf("ERROR: minspare=%d is larger than maxspare=%d.", r.MinSpare, r.MaxSpare)
	}
	if r.MaxChildren < 1 {
		return "", false, errors.New("ERROR: maxchildren must be at least 1.")
	}
	return addr, daemonize, nil
}

func cmdRunfcgi(ctx context.Context, o shim.Options, args []string) error {
	r := defaultRunfcgi()
	exe := shim.Executable(o.Args)
	cfgPath := config.PathFor(exe)
	if cfg, err := config.Load(cfgPath); err == nil {
		r.fromConfig(cfg.Server)
	} else {
		return err
	}
	help, err := parseRunfcgi(&r, args)
	if help {
		fmt.Fprintf(o.Stdout, runfcgiHelp, progName(o.Args))
		return nil
	}
	if err != nil {
		return usageError{err.Error()}
	}
	addr, daemonize, err := r.resolve()
	if err != nil {
		return usageError{fmt.Sprintf(runfcgiHelp, progName(o.Args)) + "\n" + err.Error()}
	}
	o.Protocol, o.Listen, o.Umask = r.Protocol, addr, &r.Umask
	o.Pidfile, o.Debug = r.Pidfile, r.Debug
	o.MaxRequests = r.MaxRequests
	o.Prefork = r.Method == "prefork" || r.Method == "fork"
	o.MaxChildren, o.MinSpare, o.MaxSpare = r.MaxChildren, r.MinSpare, r.MaxSpare
	getenv := shim.Getenv(o.Env)
	if addr == "" && spawn.Detect(getenv) != spawn.ModeFastCGIStdin && getenv("LISTEN_FDS") == "" {
		return usageError{"runfcgi: no host/port or socket given and fd 0 is not a listening socket\n(a web server that spawns FastCGI programs passes one; otherwise give socket=PATH or host=… port=…)"}
	}
	if fd := getenv(spawn.EnvReadyFD); fd != "" {
		// We are the detached daemon: tell the starter when we listen.
		o.Ready = spawn.ReadyNotifier(fd)
		o.Env = spawn.WithoutDaemonEnv(o.Env)
		return shim.Run(ctx, o)
	}
	// Re-executed by a restart (or a prefork worker): already detached,
	// serving the inherited socket.
	if getenv("FCGISHIM_LISTEN_FD") != "" {
		daemonize = false
	}
	if daemonize {
		pid, err := spawn.Daemonize(spawn.DaemonOptions{
			Path: exe, Args: o.Args, Env: o.Env, Workdir: r.Workdir, Umask: r.Umask,
			Outlog: r.Outlog, Errlog: r.Errlog,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Stdout, "started %s daemon, pid %d, listening on %s\n", r.Protocol, pid, strings.TrimPrefix(addr, "unix:"))
		return nil
	}
	return shim.Run(ctx, o)
}

// cmdStop stops a daemon like `kill $(cat pidfile)`, then waits until it
// has drained and exited.
func cmdStop(ctx context.Context, o shim.Options, args []string) error {
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
	pid, err := spawn.ReadPidfile(pidfile)
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
