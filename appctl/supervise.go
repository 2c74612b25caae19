package appctl

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/httpsyntax"
	"github.com/fcgishim/fcgishim/reload"
)

// envStage marks the second, detached stage of the supervisor (see Supervise).
const envStage = "FCGISHIM_SUPERVISE_STAGE"

// envReadyHost is the Host the readiness request carries (the site's, from
// the copy that started us); "localhost" without it.
const envReadyHost = "FCGISHIM_READY_HOST"

// envTakeover starts a supervisor that takes over from the one running the
// previous binary (see handOver); its value is the last instance number used.
const envTakeover = "FCGISHIM_SUPERVISE_TAKEOVER"

// fileTakeoverLock is held by a supervisor that is waiting to take over,
// until it holds the supervisor lock: it tells the old one the new binary runs.
const fileTakeoverLock = "takeover.lock"

// Backoff between failed starts: backoffMin doubling up to backoffMax; an
// instance that stayed up stableAfter resets the count.
const (
	backoffMin  = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
	stableAfter = 30 * time.Second
)

// Supervise runs the supervisor of the app configured in configPath (an
// absolute path): the one process per site that starts the [app] command,
// restarts it with backoff, replaces it when the binary or the config
// changes, and stops it once no copy of mysite.fcgi has used it for
// [app] idle_stop. main dispatches "mysite.fcgi _supervise --config PATH"
// here; the copies start it that way on first need. It logs to stderr.
//
// It runs in two stages, like a daemon's double fork: the first (started by
// a copy) starts the second in a new session and returns once that one holds
// the supervisor lock, so the copy gets a clear answer and the long-lived
// supervisor is nobody's child but init's. The second returns when the app is
// stopped: idle, ctx cancelled, or [app] command removed from the config. It
// returns nil at once when another supervisor already runs for the site.
func Supervise(ctx context.Context, configPath string, stderr io.Writer) error {
	configPath, cfg, dir, err := loadSupervised(configPath)
	if err != nil {
		return err
	}
	exe := os.Getenv(envExecutable)
	if os.Getenv(envStage) != "detached" {
		return superviseDetach(ctx, dir, configPath, exe, stderr)
	}
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
	}
	lock, err := openLock(filepath.Join(dir, fileSupervisorLock))
	if err != nil {
		return fmt.Errorf("supervisor lock: %w", err)
	}
	defer lock.close()
	s := newSupervisor(dir, configPath, exe, cfg, stderr, lock)
	if n, ok := os.LookupEnv(envTakeover); ok {
		if err := s.takeOver(n); err != nil {
			return err
		}
	} else if ok, err := lock.try(syscall.LOCK_EX); err != nil || !ok {
		return err // another supervisor runs: nothing to do
	}
	clients, err := openLock(filepath.Join(dir, fileClientsLock))
	if err != nil {
		return fmt.Errorf("clients lock: %w", err)
	}
	defer clients.close()
	s.clients = clients
	return s.run(ctx)
}

// loadSupervised reads the config at configPath (made absolute), which must
// have an [app] command, and prepares its runtime directory: the one the
// copy that started us named, else the rule's.
func loadSupervised(configPath string) (abs string, cfg *config.Config, dir string, err error) {
	if abs, err = filepath.Abs(configPath); err != nil {
		return "", nil, "", err
	}
	if cfg, err = config.Load(abs); err != nil {
		return "", nil, "", err
	}
	if len(cfg.App.Command) == 0 {
		return "", nil, "", fmt.Errorf("%s: no [app] command to supervise", abs)
	}
	dir = os.Getenv(envRuntimeDir)
	if dir == "" {
		dir = RuntimeDir(cfg, os.Getenv)
	}
	if err := prepareRuntimeDir(dir); err != nil {
		return "", nil, "", err
	}
	return abs, cfg, dir, nil
}

// newSupervisor makes the second stage's supervisor; lock is its
// supervisor.lock, not taken yet.
func newSupervisor(dir, configPath, exe string, cfg *config.Config, stderr io.Writer, lock *lockFile) *supervisor {
	readyHost := os.Getenv(envReadyHost)
	if readyHost == "" || !httpsyntax.ValidHost(readyHost) {
		readyHost = "localhost"
	}
	return &supervisor{
		dir: dir, dirID: dirIdentity(dir), configPath: configPath, exe: exe, cfg: cfg, readyHost: readyHost,
		log: stderr, lock: lock,
		exited: make(chan *instance), readied: make(chan readyEvent),
		spawn: make(chan func()),
	}
}

// superviseDetach is the first stage: start the second in its own session
// and wait until it holds the supervisor lock (success) or exits (failure).
func superviseDetach(ctx context.Context, dir, configPath, exe string, stderr io.Writer) error {
	self := exe
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
	}
	cmd := exec.Command(self, "_supervise", "--config", configPath)
	cmd.Env = append(os.Environ(), envStage+"=detached", envRuntimeDir+"="+dir)
	cmd.Dir = "/"
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lockPath := filepath.Join(dir, fileSupervisorLock)
	for {
		if held(lockPath) {
			// Either ours or one that won a race: both serve the site. The
			// second stage is reparented to init when we return; its
			// waiting goroutine dies with this process.
			return nil
		}
		select {
		case err := <-exited:
			if held(lockPath) {
				return nil // it lost a race to a supervisor that now runs
			}
			return fmt.Errorf("supervisor exited at start: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// supervisor owns the app instances. All fields are owned by run's
// goroutine; other goroutines report through the channels.
type supervisor struct {
	dir, configPath, exe string
	readyHost            string // Host of the readiness request
	dirID                uint64 // inode of dir; a new one means dir was removed
	cfg                  *config.Config
	log                  io.Writer // our own lines
	out                  *outLog   // the app's output lines
	lock                 *lockFile // supervisor.lock, held for our life or until handed over
	clients              *lockFile
	socks                []string // the unix sockets of our instances

	// inherited: we took over from the supervisor of the previous binary,
	// whose app serves (and state.json names it) until ours is ready.
	inherited bool

	exited  chan *instance
	readied chan readyEvent
	spawn   chan func() // runs on the thread that stays alive (Pdeathsig)
	wg      sync.WaitGroup

	gen      string    // stamp the current config was read under
	n        int       // instances started so far
	cur      *instance // serving, or starting when nothing serves yet
	next     *instance // replacing cur, until ready
	failures int
	retry    *time.Timer // pending restart after a failure; nil when none
	st       State
}

// instance is one start of the app.
type instance struct {
	n       int
	pid     int
	cmd     *exec.Cmd
	addrs   []string // candidates, "unix:/path" or "tcp:host:port"
	addr    string   // the one that answered
	started time.Time
	ready   time.Time // zero until ready
	done    chan struct{}
	err     error // exit status, after done
	stop    bool  // stopped on purpose: its exit is not a crash
}

type readyEvent struct {
	inst  *instance
	cause string // "" = ready
	err   error  // detail for the log
}

func (s *supervisor) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "fcgishim supervisor[%d]: %s\n", os.Getpid(), fmt.Sprintf(format, args...))
}

// run is the supervisor's life: start the app, follow it (loop) until a
// reason to stop, then stop it, leaving it serving until a successor's app
// is ready when the binary was upgraded.
func (s *supervisor) run(ctx context.Context) error {
	spawnDone := s.startSpawner()
	s.begin()
	reason, succ := s.loop(ctx)
	s.logf("%s: stopping the app", reason)
	moved := s.dirMoved()
	stopDrain, drained := s.drainReports()
	s.stopApps(ctx, succ, moved)
	close(stopDrain)
	<-drained
	close(s.spawn)
	<-spawnDone
	s.out.close()
	s.removeSockets(moved)
	return nil
}

// startSpawner starts the goroutine that starts every app: Pdeathsig fires
// when the thread that started the child exits, not the process
// (golang/go#27505), so it stays locked to its thread for our whole life.
// The returned channel is closed once s.spawn is closed and it has ended.
func (s *supervisor) startSpawner() <-chan struct{} {
	spawnDone := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(spawnDone)
		for f := range s.spawn {
			f()
		}
		// Returning while locked ends this thread: any app still running
		// gets SIGKILL, which is what we want at this point.
	}()
	return spawnDone
}

// begin notes the generation, opens the app's output log, writes the first
// state (unless we inherited a serving app) and starts the first instance.
func (s *supervisor) begin() {
	s.gen = s.stampNow()
	a := s.cfg.App
	a.Log = s.cfg.Resolve(a.Log)
	var err error
	if s.out, err = newOutLog(a, s.log); err != nil {
		s.logf("%v; app output goes to stderr", err)
		s.out, _ = newOutLog(config.App{Command: s.cfg.App.Command}, s.log)
	}
	if !s.inherited {
		s.st = State{Supervisor: os.Getpid(), Status: statusStarting, Generation: s.gen}
		s.save()
	}
	s.cur = s.start()
}

// drainReports takes the instances' reports once nobody handles them any
// more, so their senders finish; close stop to end it, then wait on drained.
func (s *supervisor) drainReports() (stop, drained chan struct{}) {
	stop, drained = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-s.readied:
			case <-s.exited:
			case <-stop:
				return
			}
		}
	}()
	return stop, drained
}

// stopApps stops our instances and waits until every one has exited
// (SIGKILL after stop_grace at worst). With a successor, ours serves until
// the successor's app is ready, then for the handover period, as in a
// replacement; without one the state goes (unless the directory is no
// longer ours).
func (s *supervisor) stopApps(ctx context.Context, succ *successor, moved bool) {
	if succ != nil {
		s.awaitSuccessor(ctx, succ)
		s.stopInstanceAfter(s.cur, handover)
	} else {
		if !moved {
			os.Remove(filepath.Join(s.dir, fileState))
		}
		s.stopInstance(s.cur)
	}
	s.stopInstance(s.next)
	s.wg.Wait()
}

// removeSockets removes our instances' unix sockets, unless the runtime
// directory was replaced (the names may be another supervisor's now).
func (s *supervisor) removeSockets(moved bool) {
	if moved {
		return
	}
	for _, p := range s.socks {
		os.Remove(p)
	}
}

// watch starts watching the files whose change replaces the app: the
// binary, the config, a restart.txt beside the config (Passenger's
// convention) and the [app] env_file. The rule is a copy's (package
// reload): a touch, a rename or a finished copy is a change once it has
// held still; a deleted file is not (a deleted binary keeps serving).
func (s *supervisor) watch() (w *reload.Watcher, envFile string) {
	envFile, _ = envFilePath(s.cfg)
	files := []string{s.exe, s.configPath, filepath.Join(filepath.Dir(s.configPath), "restart.txt")}
	if envFile != "" {
		files = append(files, envFile)
	}
	w, err := reload.New(reload.Options{Files: files, Mode: s.cfg.Server.Watch, PollInterval: s.cfg.Server.PollInterval.Duration})
	if err != nil {
		s.logf("%v; the app is not replaced on changes", err)
		w, _ = reload.New(reload.Options{Mode: "off"})
	}
	return w, envFile
}

// loop handles the events of a running supervisor until it must stop: it
// returns why, and the successor when it handed over to a new binary.
func (s *supervisor) loop(ctx context.Context) (reason string, succ *successor) {
	w, envFile := s.watch()
	defer func() { w.Close() }()
	idle := s.cfg.App.IdleStop.Duration
	if idle <= 0 {
		idle = 15 * time.Second
	}
	tick := time.NewTicker(min(max(idle/5, 20*time.Millisecond), time.Second))
	defer tick.Stop()
	var idleSince time.Time
	for {
		var retry <-chan time.Time
		if s.retry != nil {
			retry = s.retry.C
		}
		select {
		case <-ctx.Done():
			return "stopping", nil
		case inst := <-s.exited:
			s.onExit(inst)
		case ev := <-s.readied:
			s.onReady(ev)
		case <-retry:
			s.retry = nil
			s.restart()
		case path := <-w.C:
			s.gen = s.stampNow()
			if path == s.exe {
				if succ := s.handOver(ctx); succ != nil {
					return "the binary was replaced, its supervisor took over", succ
				}
			}
			if stop := s.changed(); stop != "" {
				return stop, nil
			}
			if f, _ := envFilePath(s.cfg); f != envFile {
				w.Close() // the new config names another env_file
				w, envFile = s.watch()
			}
		case <-tick.C:
			if s.dirMoved() {
				// Removed (a cleaner, a person) or replaced: the copies
				// start a supervisor in a new one; ours is nobody's.
				return "the runtime directory " + s.dir + " was removed", nil
			}
			ok, err := s.clients.try(syscall.LOCK_EX)
			if err != nil || !ok {
				idleSince = time.Time{}
			} else if idleSince.IsZero() {
				idleSince = time.Now()
				s.clients.unlock()
			} else if time.Since(idleSince) >= idle {
				// Keep the lock: a copy arriving now waits until we are
				// gone, then starts a fresh supervisor.
				return "no client left", nil
			} else {
				s.clients.unlock()
			}
		}
	}
}

// stampNow labels the generation in the state (for operators): the files
// watch watches. Whether something changed is the watcher's business.
func (s *supervisor) stampNow() string {
	envFile, _ := envFilePath(s.cfg)
	return stamp(s.exe, s.configPath, filepath.Join(filepath.Dir(s.configPath), "restart.txt"), envFile)
}

// changed handles a change of the files: re-read the config and replace the
// app once. It returns a reason to stop when the config no longer has an app.
func (s *supervisor) changed() (stop string) {
	cfg, err := config.Load(s.configPath)
	if err != nil {
		s.logf("new config not loaded, the app keeps running: %v", err)
		return ""
	}
	if len(cfg.App.Command) == 0 {
		return "no [app] command in the config any more"
	}
	s.cfg = cfg
	s.gen = s.stampNow() // the new config may name another env_file
	s.st.Generation = s.gen
	s.logf("binary or config changed: replacing the app")
	s.failures = 0
	if s.retry != nil {
		s.retry.Stop()
		s.retry = nil
	}
	if s.next != nil {
		s.stopInstance(s.next)
		s.next = nil
	}
	if s.cur == nil || s.cur.ready.IsZero() {
		s.stopInstance(s.cur)
		s.cur = s.start()
		return ""
	}
	s.next = s.start()
	return ""
}

// restart runs when a backoff delay is over.
func (s *supervisor) restart() {
	switch {
	case s.cur == nil:
		s.cur = s.start()
	case s.next == nil && !s.cur.ready.IsZero():
		s.next = s.start() // a replacement that failed before
	}
}

// start launches an instance and its readiness probe. A launch error is
// reported like a failed readiness, so there is one failure path. It never
// returns nil.
func (s *supervisor) start() *instance {
	s.n++
	inst := &instance{n: s.n, done: make(chan struct{}), started: time.Now()}
	if (s.cur == nil || s.cur.ready.IsZero()) && !s.inherited {
		s.st.Status = statusStarting
		s.save()
	}
	err := s.launch(inst)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ev := readyEvent{inst: inst}
		if err != nil {
			ev.cause, ev.err = launchCause(err), err
			close(inst.done)
		} else {
			ev.cause, ev.err = s.probe(inst)
		}
		s.readied <- ev
	}()
	return inst
}

// appVars is what the config adds to the app's environment: the [app]
// env_file (read at every start, so an edit applies on the next one), then
// the [app] env table, which wins on a clash.
func appVars(c *config.Config) (map[string]string, error) {
	path, err := envFilePath(c)
	if err != nil || path == "" {
		return c.App.Env, envFileErr(err)
	}
	vars, err := config.ReadEnvFile(path)
	if err != nil {
		return nil, envFileErr(err)
	}
	maps.Copy(vars, c.App.Env)
	return vars, nil
}

// envFilePath is [app] env_file with "~/" expanded (the home is looked up
// only then).
func envFilePath(c *config.Config) (string, error) {
	home := ""
	if strings.HasPrefix(c.App.EnvFile, "~/") {
		home = homeDir(os.Getenv)
	}
	return c.EnvFilePath(home)
}

// envFileError marks a failure to read [app] env_file.
type envFileError struct{ err error }

func (e *envFileError) Error() string { return e.err.Error() }
func (e *envFileError) Unwrap() error { return e.err }

func envFileErr(err error) error {
	if err == nil {
		return nil
	}
	return &envFileError{err}
}

func launchCause(err error) string {
	var ef *envFileError
	switch {
	case errors.As(err, &ef):
		return "the app's env_file could not be read"
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return "the app's command was not found"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, exec.ErrDot):
		return "the app's command is not executable"
	}
	return "the app could not be started"
}

func (s *supervisor) onReady(ev readyEvent) {
	inst := ev.inst
	if inst.stop {
		return // replaced or stopped meanwhile
	}
	if ev.cause != "" {
		s.stopInstance(inst)
		s.fail(inst, ev.cause, ev.err)
		return
	}
	inst.ready = time.Now()
	var old *instance
	if inst == s.next {
		old = s.cur
		s.cur, s.next = inst, nil
	}
	if inst != s.cur {
		return
	}
	s.inherited = false // from now on the state is ours
	s.st.Supervisor, s.st.Generation = os.Getpid(), s.gen
	s.st.Status, s.st.Addr, s.st.Instance, s.st.PID = statusReady, inst.addr, inst.n, inst.pid
	s.st.Cause, s.st.RetryAt = "", time.Time{}
	s.save()
	s.logf("app %s ready (pid %d, instance %d)", s.name(), inst.pid, inst.n)
	// The state now names the new instance; copies read it before each
	// request. The old one keeps serving what was already sent to it (and
	// requests that raced with the switch) for a handover period, then gets
	// SIGTERM and drains: a replacement loses no request.
	s.stopInstanceAfter(old, handover)
}

// handover is how long a replaced instance keeps accepting after the state
// names its successor.
const handover = 2 * time.Second

func (s *supervisor) onExit(inst *instance) {
	if inst.stop || inst.ready.IsZero() {
		return // on purpose, or not ready yet: the probe reports it
	}
	up := time.Since(inst.ready)
	if up >= stableAfter {
		s.failures = 0
	}
	if inst == s.cur && s.next != nil {
		// A replacement is under way: it takes over when ready.
		s.logf("app %s (pid %d) exited (%v) while being replaced", s.name(), inst.pid, inst.err)
		s.cur, s.next = s.next, nil
		s.st.Status, s.st.Addr, s.st.PID = statusStarting, "", 0
		s.save()
		return
	}
	s.fail(inst, "the app stopped unexpectedly", fmt.Errorf("exited (%v) after %s", inst.err, up.Round(time.Millisecond)))
}

// fail counts a failure of inst and schedules the next try. While an older
// instance still serves, the state keeps pointing at it.
func (s *supervisor) fail(inst *instance, cause string, err error) {
	s.failures++
	delay := backoffMin << min(s.failures-1, 10)
	delay = min(delay, backoffMax)
	s.logf("app %s: %s: %v; retrying in %s", s.name(), cause, err, delay)
	if s.retry != nil {
		s.retry.Stop()
	}
	s.retry = time.NewTimer(delay)
	switch inst {
	case s.next:
		s.next = nil
		return // the current instance keeps serving
	case s.cur:
		s.cur = nil
	}
	if s.cur != nil && !s.cur.ready.IsZero() || s.inherited {
		return // an older instance (perhaps our predecessor's) serves
	}
	s.st.Status, s.st.Addr, s.st.PID = statusBackoff, "", 0
	s.st.Failures, s.st.Cause, s.st.RetryAt = s.failures, cause, time.Now().Add(delay)
	s.save()
}

func (s *supervisor) save() {
	if s.dirMoved() {
		return // the directory belongs to another supervisor now
	}
	if err := writeState(s.dir, &s.st); err != nil {
		s.logf("%v", err)
	}
}

// name is how the app appears in log lines: its program's base name.
func (s *supervisor) name() string {
	return strconv.Quote(filepath.Base(s.cfg.App.Command[0]))
}

// launch starts the process of inst. Its own process group (so the whole
// tree can be signalled), Pdeathsig SIGKILL, an allow-listed environment,
// stdin from /dev/null, output through the line logger.
func (s *supervisor) launch(inst *instance) error {
	a := s.cfg.App
	sock := filepath.Join(s.dir, "app-"+strconv.Itoa(inst.n)+".sock")
	os.Remove(sock)
	s.socks = append(s.socks, sock)
	port := ""
	wantPort, wantSock := false, false
	for _, arg := range a.Command {
		wantPort = wantPort || strings.Contains(arg, "{port}")
		wantSock = wantSock || strings.Contains(arg, "{socket}")
	}
	if wantPort || !wantSock {
		p, err := freePort()
		if err != nil {
			return err
		}
		port = p
		inst.addrs = append(inst.addrs, "tcp:127.0.0.1:"+port)
	}
	if wantSock || !wantPort {
		inst.addrs = append(inst.addrs, "unix:"+sock)
	}
	argv := make([]string, len(a.Command))
	for i, arg := range a.Command {
		argv[i] = strings.NewReplacer("{socket}", sock, "{port}", port).Replace(arg)
	}
	if err := expandWSGI(a, s.dir, argv); err != nil {
		return err
	}
	workdir := s.cfg.Resolve(a.Workdir)
	if workdir == "" {
		workdir = s.cfg.Resolve(".")
	}
	vars, err := appVars(s.cfg)
	if err != nil {
		return err
	}
	env := appEnv(os.Environ(), a.EnvAllow, vars)
	env = append(env, "SOCKET="+sock, "PORT="+port)
	path, err := lookPath(argv[0], workdir, env)
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Dir: workdir, Env: env}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = w, w
	errc := make(chan error, 1)
	s.spawn <- func() { errc <- cmd.Start() }
	err = <-errc
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	inst.cmd, inst.pid = cmd, cmd.Process.Pid
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.out.pump(r, inst.pid)
	}()
	go func() {
		defer s.wg.Done()
		inst.err = cmd.Wait()
		// Take the rest of the group with it (workers of a dead master).
		_ = syscall.Kill(-inst.pid, syscall.SIGKILL)
		if !s.dirMoved() {
			os.Remove(sock)
		}
		close(inst.done)
		s.exited <- inst
	}()
	return nil
}

// lookPath finds the program like a shell would with the child's PATH; a
// relative name with a slash is relative to the workdir.
func lookPath(name, workdir string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(workdir, name)
		}
		fi, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%s: %w", name, fs.ErrPermission)
		}
		return name, nil
	}
	pathEnv := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	denied := false
	for _, d := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(d) {
			continue // never run programs from "." or a relative PATH entry
		}
		p := filepath.Join(d, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode().Perm()&0o111 == 0 {
			denied = true
			continue
		}
		return p, nil
	}
	if denied {
		return "", fmt.Errorf("%s: %w", name, fs.ErrPermission)
	}
	return "", fmt.Errorf("%q in PATH %s: %w", name, pathEnv, exec.ErrNotFound)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// baseEnv is passed from our environment to the supervisor and the app.
var baseEnv = []string{"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR"}

// appEnv builds the allow-listed environment: baseEnv and LC_*, the names in
// allow, then extra (the [app] env table). HTTP_* names are never copied:
// in CGI mode they are request headers (HTTP_PROXY is httpoxy).
func appEnv(environ, allow []string, extra map[string]string) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "HTTP_") {
			continue
		}
		ok := strings.HasPrefix(k, "LC_")
		for _, n := range baseEnv {
			ok = ok || k == n
		}
		for _, n := range allow {
			ok = ok || k == n
		}
		if ok {
			env = append(env, kv)
		}
	}
	if !slicesHasPrefix(env, "PATH=") {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	for k, v := range extra {
		env = append(env, k+"="+v) // later entries win in exec
	}
	return env
}

func slicesHasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// probe waits until inst has answered a readiness request (see readyAt),
// exits, or ready_timeout passes. It returns a cause ("" when ready) and the
// detail for the log.
func (s *supervisor) probe(inst *instance) (string, error) {
	a := s.cfg.App
	timeout := a.ReadyTimeout.Duration
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	until := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	connected := false
	for {
		for _, addr := range inst.addrs {
			ok, conn := readyAt(addr, s.readyHost, a.ReadyPath, until)
			if ok {
				inst.addr = addr
				return "", nil
			}
			connected = connected || conn
		}
		select {
		case <-inst.done:
			if time.Since(inst.started) < 2*time.Second {
				return "the app exited right after it started", fmt.Errorf("exited at once (%v)", inst.err)
			}
			return "the app exited before it was ready", fmt.Errorf("exited (%v)", inst.err)
		case <-deadline.C:
			what := "never opened its socket"
			if connected {
				what = "never answered GET " + cmp.Or(a.ReadyPath, defaultReadyPath)
				if a.ReadyPath != "" {
					what += " below 500"
				}
			}
			return "the app did not become ready in time", fmt.Errorf("%s within %s (addresses %s)", what, timeout, strings.Join(inst.addrs, ", "))
		case <-time.After(wait):
			wait = min(wait*2, 100*time.Millisecond)
		}
	}
}

// defaultReadyPath is asked when [app] ready_path is unset. Any answer
// counts, even a 404 or a 500 (the app's own pages are its business): what
// matters is that a worker has loaded the app and answered, so that no
// visitor's request waits for that.
const defaultReadyPath = "/"

// ReadyUserAgent is the User-Agent of the readiness request, so an app (or
// its access log) can tell it from a visitor.
const ReadyUserAgent = "fcgishim-ready-probe"

// readyAt reports whether the app at addr answers a GET for path with
// Host: host (with path "", defaultReadyPath and any status; else a status
// below 500), and whether it accepted the connection. Accepting is not enough: gunicorn's
// master listens before its workers have imported the app, and the request
// waits for that, until until at most.
func readyAt(addr, host, path string, until time.Time) (ready, connected bool) {
	network, address := SplitAddr(addr)
	c, err := net.DialTimeout(network, address, time.Second)
	if err != nil {
		return false, false
	}
	defer c.Close()
	c.SetDeadline(until)
	req, _ := http.NewRequest("GET", "http://localhost"+cmp.Or(path, defaultReadyPath), nil)
	req.Host = host
	req.Header.Set("User-Agent", ReadyUserAgent)
	req.Close = true
	if err := req.Write(c); err != nil {
		return false, true
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return false, true
	}
	resp.Body.Close()
	return path == "" || resp.StatusCode < 500, true
}

// SplitAddr turns "unix:/p" or "tcp:h:p" into net.Dial arguments.
func SplitAddr(addr string) (network, address string) {
	network, address, _ = strings.Cut(addr, ":")
	return network, address
}

// stopInstance sends SIGTERM to inst's process group and SIGKILL after
// stop_grace. Safe on nil and twice.
func (s *supervisor) stopInstance(inst *instance) { s.stopInstanceAfter(inst, 0) }

// stopInstanceAfter marks inst stopped now and sends SIGTERM after delay
// (at once if it exits first or delay is 0), SIGKILL after stop_grace.
func (s *supervisor) stopInstanceAfter(inst *instance, delay time.Duration) {
	if inst == nil || inst.stop {
		return
	}
	inst.stop = true
	if inst.cmd == nil {
		return
	}
	grace := s.cfg.App.StopGrace.Duration
	if grace <= 0 {
		grace = 10 * time.Second
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if delay > 0 {
			d := time.NewTimer(delay)
			select {
			case <-inst.done:
				d.Stop()
				return
			case <-d.C:
			}
		}
		_ = syscall.Kill(-inst.pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-inst.done:
		case <-t.C:
			s.logf("app %s (pid %d) still running %s after SIGTERM: SIGKILL", s.name(), inst.pid, grace)
			_ = syscall.Kill(-inst.pid, syscall.SIGKILL)
		}
	}()
}

// dirMoved reports whether our runtime directory is gone or another one
// took its path since we started: its files are then not ours to write or
// remove.
func (s *supervisor) dirMoved() bool { return dirIdentity(s.dir) != s.dirID }

// outLog writes the app's output lines, prefixed with its name and pid, to
// the [app] log file or our stderr, at most OutputRate lines a second (with a
// burst of OutputBurst) so a flooding app cannot fill the disk; drops are
// counted and reported.
type outLog struct {
	name    string
	mu      sync.Mutex
	w       io.Writer
	f       *os.File // when we opened the log file
	tokens  float64
	last    time.Time
	dropped int
}

// The app's output is passed on at most OutputRate lines a second, with
// bursts of OutputBurst lines.
const (
	OutputRate  = 200
	OutputBurst = 2000
)

const outMaxLine = 4096

func newOutLog(a config.App, stderr io.Writer) (*outLog, error) {
	o := &outLog{name: filepath.Base(a.Command[0]), w: stderr, tokens: OutputBurst, last: time.Now()}
	if a.Log != "" {
		f, err := os.OpenFile(a.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("app log: %w", err)
		}
		o.w, o.f = f, f
	}
	return o, nil
}

func (o *outLog) close() {
	if o.f != nil {
		o.f.Close()
	}
}

// pump copies lines from r until EOF (when every process holding the pipe
// has exited).
func (o *outLog) pump(r *os.File, pid int) {
	defer r.Close()
	br := bufio.NewReaderSize(r, outMaxLine)
	prefix := fmt.Sprintf("%s[%d]: ", o.name, pid)
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !skipping {
			o.write(prefix, line)
		}
		skipping = errors.Is(err, bufio.ErrBufferFull) // rest of an overlong line
		if err != nil && !skipping {
			return
		}
	}
}

func (o *outLog) write(prefix string, line []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	o.tokens = min(OutputBurst, o.tokens+now.Sub(o.last).Seconds()*OutputRate)
	o.last = now
	if o.tokens < 1 {
		o.dropped++
		return
	}
	o.tokens--
	var b []byte
	if o.dropped > 0 {
		b = fmt.Appendf(b, "%s(%d lines dropped: too much output)\n", prefix, o.dropped)
		o.dropped = 0
	}
	b = append(b, prefix...)
	b = append(b, line...)
	if b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	o.w.Write(b)
}
