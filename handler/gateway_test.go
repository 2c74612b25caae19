package handler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// With a by-name lookup, the gateway derives the mount prefix without
// building the variables' map; the map is built only when asked for.
func TestGatewayLooksUpVarsByName(t *testing.T) {
	vars := map[string]string{"SCRIPT_NAME": "/site/mysite.fcgi", "REMOTE_USER": "bob"}
	built := 0
	var got *Request
	var user string
	g := &Gateway{
		Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = RequestOf(r)
			user = got.Var("REMOTE_USER")
		}),
		Vars: func(*http.Request) map[string]string { built++; return vars },
		Var:  func(_ *http.Request, name string) string { return vars[name] },
	}
	g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/site/mysite.fcgi/ping", nil))
	if built != 0 {
		t.Fatalf("the map was built %d times for a request that needs none", built)
	}
	if got.ScriptName != "/site/mysite.fcgi" || got.PathInfo != "/ping" || user != "bob" {
		t.Fatalf("ScriptName %q PathInfo %q REMOTE_USER %q", got.ScriptName, got.PathInfo, user)
	}
	if got.Vars()["REMOTE_USER"] != "bob" || built != 1 {
		t.Fatalf("Vars() = %v after %d builds", got.Vars(), built)
	}
}

// A context derived below the gateway still ends with the request's.
func TestGatewayContextFollowsRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	g := &Gateway{Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, stop := context.WithCancel(r.Context())
		defer stop()
		cancel()
		select {
		case <-d.Done():
			done <- d.Err()
		case <-time.After(5 * time.Second):
			done <- nil
		}
	})}
	g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	if err := <-done; err != context.Canceled {
		t.Fatalf("derived context: %v", err)
	}
}
