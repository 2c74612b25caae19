package prefork

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/listen"
)

// Supervisor supervises worker processes that share listening sockets, the
// process model of runfcgi method=prefork (flup's preforkserver) adapted to
// workers that serve many connections at once: a worker is idle (no
// connection open), busy (serving, and able to take more) or full (at its
// connection limit, none of them idle). One worker accepts new connections
// at a time and the others stand by (see steer). The supervisor keeps at
// least MinSpare workers able to take connections (idle or busy), retires
// idle ones beyond MaxSpare, starts at most MaxChildren in all, replaces
// workers that exit (with back-off when they fail at start), and on reload
// starts a new generation and retires the old one once the new one is ready.
// The workers are Path run with Args and Env, Listeners as fd 3 onwards, and
// their control socket as the next descriptor, named by EnvWorkerFD; see
// WorkerListener for their side. The listeners stay open here, unused, so
// that connections queue while no worker accepts.
type Supervisor struct {
	Path      string
	Args      []string // argv, Args[0] included
	Env       []string
	Listeners []net.Listener

	MinSpare    int // workers able to take connections (idle or busy) wanted; 0 = 1
	MaxSpare    int // idle workers kept; 0 = MinSpare (at least)
	MaxChildren int // worker processes at most; 0 = 50
	// Grace is how long a retiring worker may finish its connections before
	// it gets SIGTERM, and then how long it may drain before SIGKILL; 0 =
	// 5s.
	Grace time.Duration

	Stdout, Stderr io.Writer // nil = discard
	Log            *slog.Logger

	// OnChange, when set, is called from Run's goroutine after every state
	// change with the counts of live, idle and busy (or full) workers.
	OnChange func(live, idle, busy int)
}

type workerState byte

const (
	stateStarting workerState = iota
	stateIdle                 // accepting, no connection
	stateBusy                 // accepting, some connections
	stateFull                 // at its connection limit
	stateQuitting             // accepts no more; exits soon
)

type worker struct {
	id, gen  int
	pid      int
	cmd      *exec.Cmd
	ctl      net.Conn
	cancel   context.CancelFunc // SIGTERM, then SIGKILL after Grace
	state    workerState
	ready    bool      // has reported accepting once
	active   bool      // told to accept
	retired  bool      // we asked it to retire
	deadline time.Time // SIGTERM at this time when retired
}

type workerEvent struct {
	w      *worker
	state  byte // a control byte, or 0 for "exited"
	exited bool
	err    error
}

// Run supervises workers until ctx is done, then retires them all and
// returns once every worker has exited. A value on reload starts a new
// generation (the executable may have been replaced).
//
// Each turn of the loop counts the workers, starts and retires what the
// counts call for, lets one worker accept, then waits for one thing to
// happen: ctx done, a reload, a retired worker's deadline or spawn back-off
// passing, or a worker reporting or exiting.
func (p *Supervisor) Run(ctx context.Context, reload <-chan struct{}) error {
	p.fill()
	files, err := p.dupListeners()
	if err != nil {
		return err
	}
	defer closeAll(files)
	r := &supervision{
		p:       p,
		files:   files,
		events:  make(chan workerEvent, 16),
		quit:    make(chan struct{}),
		workers: map[*worker]bool{},
	}
	defer close(r.quit)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		now := time.Now()
		c := r.count()
		if !r.stopping {
			r.startSpares(now, &c)
			r.retireExtraIdle(now, c)
			r.retireOldGeneration(now, c)
		}
		if !r.stopping {
			steer(r.workers, r.gen)
		}
		if p.OnChange != nil {
			p.OnChange(c.live, c.idle, c.busy)
		}
		if r.stopping && len(r.workers) == 0 {
			return nil
		}
		tc := r.armTimer(timer, now, c)

		var done <-chan struct{}
		if !r.stopping {
			done = ctx.Done()
		}
		select {
		case <-done:
			r.stop()
		case _, ok := <-reload:
			if !ok {
				reload = nil
				continue
			}
			r.newGeneration()
		case <-tc:
			r.terminateOverdue()
		case ev := <-r.events:
			r.handle(ev)
		}
	}
}

// supervision is the state of one Run: the workers, their generations and
// the start back-off. Only Run's goroutine touches it.
type supervision struct {
	p       *Supervisor
	files   []*os.File // the listeners, as every worker inherits them
	events  chan workerEvent
	quit    chan struct{} // closed when Run returns
	workers map[*worker]bool

	nextID, gen, failures int
	nextSpawn             time.Time // no start before this (back-off)
	stopping              bool      // ctx is done; everyone is retiring
}

// census counts the workers at the start of a turn of Run's loop.
type census struct {
	live, idle, busy  int // all generations: OnChange's numbers
	avail             int // current generation, not retired, starting or able to take connections
	curIdle, curReady int // of those, idle / ready and not full
}

// dupListeners duplicates every listener's descriptor for the workers.
func (p *Supervisor) dupListeners() ([]*os.File, error) {
	files := make([]*os.File, len(p.Listeners))
	for i, l := range p.Listeners {
		f, err := listen.Dup(l)
		if err != nil {
			closeAll(files[:i])
			return nil, fmt.Errorf("prefork: %w", err)
		}
		files[i] = f
	}
	return files, nil
}

// closeAll closes files, last first.
func closeAll(files []*os.File) {
	for i := len(files) - 1; i >= 0; i-- {
		files[i].Close()
	}
}

// count takes the census; the balance counts only the current
// generation's accepting workers.
func (r *supervision) count() census {
	var c census
	for w := range r.workers {
		c.live++
		switch {
		case w.state == stateBusy || w.state == stateFull:
			c.busy++
		case w.state == stateIdle && !w.retired:
			c.idle++
		}
		if w.gen != r.gen || w.retired {
			continue
		}
		switch w.state {
		case stateStarting:
			c.avail++
		case stateIdle:
			c.avail++
			c.curReady++
			c.curIdle++
		case stateBusy:
			c.avail++
			c.curReady++
		}
	}
	return c
}

// startSpares starts workers until MinSpare can take connections, within
// MaxChildren and unless a failed start holds the next one back.
func (r *supervision) startSpares(now time.Time, c *census) {
	p := r.p
	for c.avail < p.MinSpare && c.live < p.MaxChildren && !now.Before(r.nextSpawn) {
		if err := r.spawn(); err != nil {
			p.Log.Error("prefork: cannot start a worker", "err", err)
			r.failures++
			r.nextSpawn = now.Add(backoff(r.failures))
			break
		}
		c.avail++
		c.live++
	}
}

// retireExtraIdle retires idle workers of the current generation beyond
// MaxSpare (never below MinSpare accepting ones), those standing by first.
func (r *supervision) retireExtraIdle(now time.Time, c census) {
	p := r.p
	extra := min(c.curIdle-p.MaxSpare, c.avail-p.MinSpare)
	for _, active := range []bool{false, true} {
		for w := range r.workers {
			if extra > 0 && w.gen == r.gen && w.state == stateIdle && !w.retired && w.active == active {
				r.retire(w, now)
				extra--
			}
		}
	}
}

// retireOldGeneration retires the old generation once the new one serves,
// or at once when it holds the slots the new one needs.
func (r *supervision) retireOldGeneration(now time.Time, c census) {
	p := r.p
	if c.curReady >= min(p.MinSpare, p.MaxChildren) || (c.avail < p.MinSpare && c.live >= p.MaxChildren) {
		for w := range r.workers {
			if w.gen != r.gen {
				r.retire(w, now)
			}
		}
	}
}

// armTimer sets timer for the earliest of: a retired worker's SIGTERM, a
// spawn after back-off; it returns the channel to wait on, nil for none.
func (r *supervision) armTimer(timer *time.Timer, now time.Time, c census) <-chan time.Time {
	var wake time.Time
	for w := range r.workers {
		if w.retired && w.cancel != nil && (wake.IsZero() || w.deadline.Before(wake)) {
			wake = w.deadline
		}
	}
	if !r.stopping && c.avail < r.p.MinSpare && r.nextSpawn.After(now) && (wake.IsZero() || r.nextSpawn.Before(wake)) {
		wake = r.nextSpawn
	}
	timer.Stop()
	var tc <-chan time.Time
	if !wake.IsZero() {
		timer.Reset(max(time.Until(wake), 0))
		tc = timer.C
	}
	return tc
}

// retire asks w to stop accepting and exit once its connections are done;
// after Grace it gets SIGTERM (terminateOverdue).
func (r *supervision) retire(w *worker, now time.Time) {
	if w.retired {
		return
	}
	w.retired = true
	w.deadline = now.Add(r.p.Grace)
	w.ctl.Write([]byte{ctlQuit}) // an exited worker cannot read it; its exit event follows
}

// spawn starts a worker of the current generation.
func (r *supervision) spawn() error {
	r.nextID++
	w := &worker{id: r.nextID, gen: r.gen}
	if err := r.p.start(w, r.files, r.events, r.quit); err != nil {
		return err
	}
	r.workers[w] = true
	r.p.Log.Debug("prefork: worker started", "worker", w.pid, "generation", w.gen)
	return nil
}

// stop retires every worker; Run returns once they have all exited.
func (r *supervision) stop() {
	r.stopping = true
	r.p.Log.Info("prefork: stopping workers", "workers", len(r.workers))
	for w := range r.workers {
		r.retire(w, time.Now())
	}
}

// newGeneration makes the workers started from now on the current ones;
// the others retire once these serve (retireOldGeneration).
func (r *supervision) newGeneration() {
	r.gen++
	r.failures, r.nextSpawn = 0, time.Time{}
	r.p.Log.Info("prefork: starting a new generation of workers", "generation", r.gen)
}

// terminateOverdue sends SIGTERM to retired workers past their deadline.
func (r *supervision) terminateOverdue() {
	now := time.Now()
	for w := range r.workers {
		if w.retired && w.cancel != nil && !now.Before(w.deadline) {
			r.p.Log.Info("prefork: worker still busy after retiring; sending SIGTERM", "worker", w.pid)
			w.cancel()
			w.cancel = nil
		}
	}
}

// handle applies a worker's report or exit.
func (r *supervision) handle(ev workerEvent) {
	w := ev.w
	if !r.workers[w] {
		return
	}
	if ev.exited {
		r.exited(w, ev.err)
		return
	}
	switch ev.state {
	case ctlIdle:
		w.state, w.ready = stateIdle, true
		r.failures = 0
	case ctlBusy:
		w.state, w.ready = stateBusy, true
		r.failures = 0
	case ctlFull:
		w.state, w.ready = stateFull, true
	case ctlQuit:
		w.state = stateQuitting
	}
}

// exited forgets w; a worker that failed before serving delays the next
// start (back-off), one that was not asked to go is replaced next turn.
func (r *supervision) exited(w *worker, err error) {
	p := r.p
	delete(r.workers, w)
	w.ctl.Close()
	if w.cancel != nil {
		w.cancel()
	}
	switch {
	case w.retired || w.state == stateQuitting:
		r.failures = 0
	case !w.ready:
		r.failures++
		r.nextSpawn = time.Now().Add(backoff(r.failures))
		p.Log.Error("prefork: worker exited before serving", "worker", w.pid, "err", err, "retry_in", backoff(r.failures))
	default:
		p.Log.Warn("prefork: worker exited unexpectedly; replacing it", "worker", w.pid, "err", err)
	}
}

// steer lets one worker of the current generation accept new connections
// at a time, so that the load stays on as few processes as it needs: two
// Go processes sharing it cost about 40% more CPU per request than one
// (measured behind nginx, info page). The others stand by, spare capacity
// ready at once: when the accepting one is full, quits or exits, the next
// takes over (one already serving first, then the oldest). Extra accepting
// workers that have gone idle stand by again.
func steer(workers map[*worker]bool, gen int) {
	var open []*worker // may take connections now
	accepting := 0
	for w := range workers {
		if w.gen == gen && !w.retired && w.ready && (w.state == stateIdle || w.state == stateBusy) {
			open = append(open, w)
			if w.active {
				accepting++
			}
		}
	}
	slices.SortFunc(open, func(a, b *worker) int {
		if (a.state == stateBusy) != (b.state == stateBusy) {
			if a.state == stateBusy {
				return -1
			}
			return 1
		}
		return a.id - b.id
	})
	if accepting == 0 && len(open) > 0 {
		open[0].setActive(true)
		return
	}
	for i := len(open) - 1; i >= 0 && accepting > 1; i-- {
		if w := open[i]; w.active && w.state == stateIdle {
			w.setActive(false)
			accepting--
		}
	}
}

func (w *worker) setActive(on bool) {
	w.active = on
	c := byte(ctlStandBy)
	if on {
		c = ctlAccept
	}
	w.ctl.Write([]byte{c}) // an exited worker cannot read it; its exit event follows
}

func (p *Supervisor) fill() {
	if p.MinSpare < 1 {
		p.MinSpare = 1
	}
	if p.MaxSpare < p.MinSpare {
		p.MaxSpare = p.MinSpare
	}
	if p.MaxChildren < 1 {
		p.MaxChildren = 50
	}
	if p.Grace <= 0 {
		p.Grace = 5 * time.Second
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
}

// backoff is the wait before starting a worker again after n failed starts.
func backoff(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// start runs a worker with its control socket and the goroutines that
// report its state changes and its exit on events.
func (p *Supervisor) start(w *worker, files []*os.File, events chan<- workerEvent, quit <-chan struct{}) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("prefork: control socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "prefork-control")
	theirs := os.NewFile(uintptr(fds[1]), "prefork-control-worker")
	defer theirs.Close()
	ctl, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return fmt.Errorf("prefork: control socket: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, p.Path, p.Args[1:]...)
	cmd.Args[0] = p.Args[0]
	cmd.Env = append(append([]string(nil), p.Env...), EnvWorkerFD+"="+strconv.Itoa(3+len(files)))
	cmd.ExtraFiles = append(append([]*os.File(nil), files...), theirs)
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = p.Grace
	if err := cmd.Start(); err != nil {
		cancel()
		ctl.Close()
		return fmt.Errorf("prefork: start worker: %w", err)
	}
	w.cmd, w.ctl, w.cancel, w.pid = cmd, ctl, cancel, cmd.Process.Pid

	send := func(ev workerEvent) bool {
		select {
		case events <- ev:
			return true
		case <-quit:
			return false
		}
	}
	readDone := make(chan struct{})
	go func() { // ends at EOF: the worker exited, or Run closed ctl
		defer close(readDone)
		b := make([]byte, 64)
		for {
			n, err := ctl.Read(b)
			for _, c := range b[:n] {
				if !send(workerEvent{w: w, state: c}) {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		// Report its last state changes first. EOF follows the exit
		// unless the worker leaked its control socket to a child of its
		// own; the deadline only bounds that case.
		select {
		case <-readDone:
		case <-time.After(time.Second):
		}
		send(workerEvent{w: w, exited: true, err: err})
	}()
	return nil
}
