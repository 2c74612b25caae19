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
	// Vars are the CGI variables the web server sent; nil over plain HTTP.
	// They may carry server secrets (SetEnv): never print their values.
	Vars map[string]string
	// ScriptName is the mount prefix ("" at the site root, "/app" in a
	// subdirectory); PathInfo is the path below it. ScriptName+PathInfo is
	// the path the client asked for.
	ScriptName string
	PathInfo   string
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

// Gateway is the middleware in front of every handler.
type Gateway struct {
	Next http.Handler
	// Vars returns the CGI variables of r (fcgi.Params, scgi.Params, …);
	// nil for protocols without them.
	Vars func(*http.Request) map[string]string
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
	var vars map[string]string
	if g.Vars != nil {
		vars = g.Vars(r)
	}
	req := &Request{Vars: vars}
	req.ScriptName, req.PathInfo = scriptName(vars, r.URL.Path, g.ForceScriptName)
	g.Next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, req)))
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
func scriptName(vars map[string]string, path string, force *string) (script, info string) {
	if force != nil {
		script = strings.TrimRight(*force, "/")
	} else if vars != nil {
		script = derivedScriptName(vars)
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

func derivedScriptName(vars map[string]string) string {
	url := vars["SCRIPT_URL"]
	if url == "" {
		url = vars["REDIRECT_URL"]
	}
	if url != "" {
		pi := vars["PATH_INFO"]
		if len(pi) <= len(url) && strings.HasSuffix(url, pi) {
			return strings.TrimRight(url[:len(url)-len(pi)], "/")
		}
		return ""
	}
	return strings.TrimRight(vars["SCRIPT_NAME"], "/")
}
