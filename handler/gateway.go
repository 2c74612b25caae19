package handler

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Process describes the running program for the info page and the gateway.
type Process struct {
	Mode     string    // fastcgi-stdin, socket-activation, cgi, external, http
	Protocol string    // fastcgi, scgi, ajp, cgi, http
	Started  time.Time // set once per program start, including a re-exec
	Version  string
	Served   atomic.Int64 // requests that have entered the gateway
	InFlight atomic.Int64 // requests in the gateway now
}

// Request is what the gateway learned about one request beyond net/http.
type Request struct {
	// ScriptName is the mount prefix ("" at the site root, "/app" in a
	// subdirectory); PathInfo is the path below it. ScriptName+PathInfo is
	// the path the client asked for.
	ScriptName string
	PathInfo   string

	r      *http.Request
	vars   func(*http.Request) map[string]string
	lookup func(*http.Request, string) string
}

// Vars returns the CGI variables the web server sent; nil over plain HTTP.
// They may carry server secrets (SetEnv): never print their values. The
// map may be built on each call: keep it rather than call again.
func (q *Request) Vars() map[string]string {
	if q.vars == nil {
		return nil
	}
	return q.vars(q.r)
}

// Var returns one CGI variable, "" if it was not sent; it builds no map
// where the protocol can look the name up directly.
func (q *Request) Var(name string) string {
	if q.lookup != nil {
		return q.lookup(q.r, name)
	}
	return q.Vars()[name]
}

type ctxKey struct{}

// RequestOf returns what the gateway stored for r; the zero Request (and
// PathInfo = r.URL.Path) when r did not pass through a gateway.
func RequestOf(r *http.Request) *Request {
	if v, ok := r.Context().Value(ctxKey{}).(*Request); ok {
		return v
	}
	return &Request{PathInfo: r.URL.Path}
}

// gatewayContext carries the Request below the gateway: one allocation for
// both.
type gatewayContext struct {
	context.Context
	req Request
}

func (c *gatewayContext) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		return &c.req
	}
	return c.Context.Value(key)
}

type afterFuncer interface {
	AfterFunc(func()) func() bool
}

// AfterFunc passes on the request context's own AfterFunc (fcgi's has one),
// so that contexts derived below the gateway follow the request's without
// a goroutine each.
func (c *gatewayContext) AfterFunc(f func()) func() bool {
	if a, ok := c.Context.(afterFuncer); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(c.Context, f)
}

// Gateway is the middleware in front of every handler.
type Gateway struct {
	Next http.Handler
	// Vars returns the CGI variables of r (fcgi.Params, scgi.Params, …);
	// nil for protocols without them.
	Vars func(*http.Request) map[string]string
	// Var, when set, returns one CGI variable of r without building Vars'
	// map (fcgi.Param).
	Var func(r *http.Request, name string) string
	// ForceScriptName, when non-nil, is the mount prefix; otherwise it is
	// derived as Django's get_script_name did.
	ForceScriptName *string
	Process         *Process // counts requests; may be nil
	// AfterCount, when set, is called with the new count as each request
	// enters (max-requests recycling).
	AfterCount func(n int64)
}

// trustHeaders are set only by us (from server params) or by a reverse proxy
// we run; a client's copies are removed before any handler sees the request.
var trustHeaders = []string{
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl",
	"X-Real-Ip", "X-Client-Ip", "Script-Name", "X-Script-Name", "Remote-User", "X-Remote-User",
	"Proxy", // httpoxy
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.Process != nil {
		n := g.Process.Served.Add(1)
		g.Process.InFlight.Add(1)
		defer g.Process.InFlight.Add(-1)
		if g.AfterCount != nil {
			g.AfterCount(n)
		}
	}
	stripTrustHeaders(r.Header)
	ctx := &gatewayContext{Context: r.Context()}
	r = r.WithContext(ctx)
	req := &ctx.req
	req.r, req.vars, req.lookup = r, g.Vars, g.Var
	req.ScriptName, req.PathInfo = scriptName(req, r.URL.Path, g.ForceScriptName)
	g.Next.ServeHTTP(w, r)
}

// stripTrustHeaders deletes the trust headers, including spellings with '_'
// for '-' that CGI mangling would make equivalent (CVE-2018-1283 class).
func stripTrustHeaders(h http.Header) {
	for _, k := range trustHeaders {
		h.Del(k)
	}
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		canon := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
		for _, t := range trustHeaders {
			if canon == t {
				delete(h, k)
			}
		}
	}
}

// scriptName computes the mount prefix and the path below it.
//
// Like Django's get_script_name: force wins; else SCRIPT_URL (or
// REDIRECT_URL, set by mod_rewrite) minus a suffix of len(PATH_INFO); else
// SCRIPT_NAME. The result is checked against the request path: a prefix that
// is not one (a rewrite that hides the script, a lying front end) is dropped
// rather than trusted, so ScriptName+PathInfo is always the requested path.
func scriptName(req *Request, path string, force *string) (script, info string) {
	if force != nil {
		script = strings.TrimRight(*force, "/")
	} else if req.vars != nil {
		script = derivedScriptName(req)
	}
	if script != "" && (path == script || strings.HasPrefix(path, script+"/")) {
		return script, path[len(script):]
	}
	if force != nil && script != "" {
		// The forced prefix is not in the path: the front end already
		// stripped it (lighttpd strip-request-uri, nginx location rewrite).
		return script, path
	}
	return "", path
}

func derivedScriptName(req *Request) string {
	var vars map[string]string
	get := req.Var
	if req.lookup == nil { // one map for all the names
		vars = req.Vars()
		get = func(name string) string { return vars[name] }
	}
	url := get("SCRIPT_URL")
	if url == "" {
		url = get("REDIRECT_URL")
	}
	if url != "" {
		pi := get("PATH_INFO")
		if len(pi) <= len(url) && strings.HasSuffix(url, pi) {
			return strings.TrimRight(url[:len(url)-len(pi)], "/")
		}
		return ""
	}
	return strings.TrimRight(get("SCRIPT_NAME"), "/")
}
