package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/daemon"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/prefork"
	"github.com/fcgishim/fcgishim/reload"
)

// Environment of a prefork worker (besides the listener's, envListenFD=3).
const (
	envWorker            = "FCGISHIM_WORKER"             // "1": serve, do not supervise
	envWorkerMaxRequests = "FCGISHIM_WORKER_MAXREQUESTS" // connections before the worker retires; "" = no limit
	envWorkerMaxConns    = "FCGISHIM_WORKER_MAXCONNS"    // connections a worker serves at once
)

// defaultWorkerConns is a worker's connection limit when [limits] max_conns
// is not set: fcgi.Server's own default, so that a full worker is one
// whose server has stopped accepting.
const defaultWorkerConns = 1024

// runPrefork supervises worker processes sharing the listener (runfcgi
// method=prefork) until a stop signal. Each worker is this program again,
// serving up to maxConns connections at once (0 = defaultWorkerConns), as
// many requests as its server takes on each; it leaves after maxRequests
// requests (0 = no limit). Changes (the watched files) and
// SIGHUP/SIGUSR1 start a new generation from the executable as it is now,
// and the old one retires once the new one serves. The listener stays open
// here throughout, so connections wait in its backlog while no worker
// accepts, instead of being refused.
func runPrefork(ctx context.Context, o Options, listeners []net.Listener, changes <-chan string, grace time.Duration, maxRequests, maxConns int, log *slog.Logger) error {
	defer func() {
		for _, l := range listeners {
			l.Close() // removes a unix socket file
		}
	}()
	if len(listeners) > 1 {
		log.Warn("prefork serves the first listener only", "listeners", len(listeners))
	}
	if maxConns <= 0 {
		maxConns = defaultWorkerConns
	}
	env := workerEnv(o, maxRequests, maxConns)
	pool := &prefork.Supervisor{
		Path: o.Executable, Args: o.Args, Env: env, Listeners: listeners[:1],
		MinSpare: o.MinSpare, MaxSpare: o.MaxSpare, MaxChildren: o.MaxChildren,
		Grace: 2 * grace, Stdout: o.Stdout, Stderr: o.Stderr, Log: log,
	}

	if o.Pidfile != "" {
		if err := daemon.WritePidfile(o.Pidfile, os.Getpid()); err != nil {
			return err
		}
		defer daemon.RemovePidfile(o.Pidfile, os.Getpid())
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	pctx, stop := context.WithCancel(context.Background())
	defer stop()
	reloads := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- pool.Run(pctx, reloads) }()
	log.Info("prefork: serving", "protocol", protocolName(o.Protocol), "minspare", pool.MinSpare,
		"maxspare", pool.MaxSpare, "maxchildren", pool.MaxChildren, "maxrequests", maxRequests, "worker_conns", maxConns)
	if o.Ready != nil {
		o.Ready(nil)
	}

	newGeneration := func(reason string) {
		log.Info("prefork: restarting workers", "reason", reason)
		select {
		case reloads <- struct{}{}:
		default: // one is pending already
		}
	}
	ctxDone := ctx.Done()
	for {
		select {
		case <-ctxDone:
			ctxDone = nil
			stop()
		case s := <-sigs:
			if s == syscall.SIGHUP || s == syscall.SIGUSR1 {
				newGeneration("signal " + s.String())
				continue
			}
			log.Info("prefork: stopping", "signal", s.String())
			stop()
		case path := <-changes:
			if path == o.Executable && !reload.Exists(path) {
				continue // deleted binary: keep serving
			}
			newGeneration("changed: " + path)
		case err := <-done:
			return err
		}
	}
}

// workerEnv is the environment of a prefork worker: ours without what
// concerns only this process (daemon handshake, systemd's variables, a
// previous listener), plus where its listener is and its limits.
func workerEnv(o Options, maxRequests, maxConns int) []string {
	mode := listen.ModeExternal
	if o.Listen == "" {
		mode = listen.ModeSocketActivation
	}
	env := withoutKeys(o.Env, envListenFD, envListenAddr, envMode, envWorker, envWorkerMaxRequests, envWorkerMaxConns,
		daemon.EnvReadyFD, prefork.EnvWorkerFD, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
	env = append(env, envWorker+"=1", envListenFD+"=3", envListenAddr+"="+o.Listen, envMode+"="+string(mode),
		envWorkerMaxConns+"="+strconv.Itoa(maxConns))
	if maxRequests > 0 {
		env = append(env, envWorkerMaxRequests+"="+strconv.Itoa(maxRequests))
	}
	return env
}

// preforkWorker prepares a prefork worker (envWorker set): its listener
// hands out up to envWorkerMaxConns connections at once and reports to the
// supervisor, and the returned context ends when the worker should exit
// (it has accepted maxrequests connections, the supervisor retires it, or
// the supervisor is gone; the caller counts requests too, for connections
// that carry many). stop releases the control socket once serving has
// ended.
func preforkWorker(ctx context.Context, getenv func(string) string, protocol string, listeners []net.Listener) (context.Context, []net.Listener, func(), error) {
	fd, err := strconv.Atoi(getenv(prefork.EnvWorkerFD))
	if err != nil || len(listeners) != 1 {
		return nil, nil, nil, fmt.Errorf("prefork worker: %s=%q with %d listeners: not started by a supervisor", prefork.EnvWorkerFD, getenv(prefork.EnvWorkerFD), len(listeners))
	}
	quota, _ := strconv.Atoi(getenv(envWorkerMaxRequests))
	maxConns, _ := strconv.Atoi(getenv(envWorkerMaxConns))
	// The socket file belongs to the supervisor, and the listener must not
	// leak into the app's processes.
	listen.KeepSocketFile(listeners[0])
	if lfd, err := strconv.Atoi(getenv(envListenFD)); err == nil {
		syscall.CloseOnExec(lfd)
	}
	ctx, cancel := context.WithCancel(ctx)
	wl, stop, err := prefork.WorkerListener(listeners[0], fd, prefork.WorkerOptions{MaxConns: maxConns, Quota: quota, FastCGI: protocol == "fcgi"}, cancel)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, []net.Listener{wl}, func() { stop(); cancel() }, nil
}
