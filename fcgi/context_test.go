package fcgi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

type baseKey struct{}

// The request context is done once its handler returns, and says so
// through Err and context.Cause alike; values of the base context show.
func TestRequestContextEndsWithRequest(t *testing.T) {
	ctxc := make(chan context.Context, 1)
	tc := serve(t, &Server{
		BaseContext: func(net.Listener) context.Context { return context.WithValue(context.Background(), baseKey{}, "base") },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := r.Context().Err(); err != nil {
				t.Errorf("context done while the handler runs: %v", err)
			}
			ctxc <- r.Context()
		}),
	})
	tc.do(1, reqParams("GET", "/"), []byte{})
	ctx := <-ctxc
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not done after the handler returned")
	}
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err = %v", err)
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Cause = %v, want context.Canceled", err)
	}
	if v := ctx.Value(baseKey{}); v != "base" {
		t.Fatalf("base context value = %v", v)
	}
}

// A context the handler derives follows the request's: it ends when the
// connection closes under the waiting handler (Serve reads the connection
// while a handler runs; ServeFD does not).
func TestDerivedContextFollowsConnection(t *testing.T) {
	waiting := make(chan struct{})
	done := make(chan error, 1)
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Hour)
		defer cancel()
		close(waiting)
		<-ctx.Done()
		done <- ctx.Err()
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/"), []byte{}))
	<-waiting
	tc.c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("derived context ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("derived context not cancelled when the connection closed")
	}
}

// Cancelling the base context ends a running request's context, whose
// deadline is the base's.
func TestRequestContextFollowsBase(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	base, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	type result struct {
		dl      time.Time
		errs    [2]error
		blocked bool
	}
	waiting := make(chan struct{})
	res := make(chan result, 1)
	tc := serve(t, &Server{
		BaseContext: func(net.Listener) context.Context { return base },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var x result
			x.dl, _ = r.Context().Deadline()
			x.errs[0] = r.Context().Err()
			done := r.Context().Done()
			close(waiting)
			<-done
			x.errs[1] = r.Context().Err()
			res <- x
		}),
	})
	tc.write(requestBytes(1, true, reqParams("GET", "/"), []byte{}))
	<-waiting
	cancel()
	select {
	case x := <-res:
		if !x.dl.Equal(deadline) || x.errs[0] != nil || !errors.Is(x.errs[1], context.Canceled) {
			t.Fatalf("deadline %v (want %v), Err before %v, after %v", x.dl, deadline, x.errs[0], x.errs[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request context not done after its base was cancelled")
	}
}
