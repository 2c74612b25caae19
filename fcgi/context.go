package fcgi

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// reqContext is a request's context. It is done when the request ends or
// is aborted, or when its parent (the connection's context, or the
// request-timeout context under it) is done. It holds the PARAMS stream,
// and its Value finds it for Params. It lives inside the request and
// allocates nothing until a handler asks for Done or derives a cancellable
// context from it: only then does it watch its parent.
type reqContext struct {
	parent context.Context
	raw    string                            // the whole PARAMS stream
	params atomic.Pointer[map[string]string] // built by the first Params

	mu    sync.Mutex
	done  chan struct{} // made by the first Done, or closedChan
	err   error
	watch *ctxWatch // from the first Done or AfterFunc on
}

// ctxWatch is what a request context needs once it is watched: kept out
// of the request itself, which most handlers never make watch.
type ctxWatch struct {
	unwatch func() bool // stops the parent watch; nil if the parent never ends
	afters  []*afterFunc
}

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (x *reqContext) Deadline() (time.Time, bool) { return x.parent.Deadline() }

func (x *reqContext) Value(key any) any {
	if _, ok := key.(paramsKey); ok {
		return x
	}
	return x.parent.Value(key)
}

func (x *reqContext) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
	}
	x.watchLocked()
	return x.done
}

func (x *reqContext) Err() error {
	x.mu.Lock()
	err := x.err
	x.mu.Unlock()
	if err != nil {
		return err
	}
	// The parent's end is seen at once, even before a watch reports it.
	if err := x.parent.Err(); err != nil {
		x.cancel(err)
		return err
	}
	return nil
}

// AfterFunc lets context.WithCancel and friends under a request context
// follow it without a goroutine each (the context package looks for this
// method). f runs in its own goroutine once x is done.
func (x *reqContext) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	x.watchLocked()
	x.watch.afters = append(x.watch.afters, a)
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.err != nil {
			return false
		}
		for i, b := range x.watch.afters {
			if b == a {
				x.watch.afters = append(x.watch.afters[:i], x.watch.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// watchLocked makes the parent's end cancel x, once.
func (x *reqContext) watchLocked() {
	if x.watch != nil || x.err != nil {
		return
	}
	x.watch = &ctxWatch{}
	if x.parent.Done() != nil {
		parent := x.parent
		x.watch.unwatch = context.AfterFunc(parent, func() { x.cancel(parent.Err()) })
	}
}

// cancel ends x with err unless it has ended already.
func (x *reqContext) cancel(err error) {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = err
	if x.done == nil {
		x.done = closedChan
	} else {
		close(x.done)
	}
	w := x.watch
	x.mu.Unlock()
	if w == nil {
		return
	}
	// x.err is set: w is no longer written.
	if w.unwatch != nil {
		w.unwatch()
	}
	for _, a := range w.afters {
		go a.f()
	}
}
