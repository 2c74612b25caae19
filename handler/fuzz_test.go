package handler

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzScriptName: whatever SCRIPT_NAME, SCRIPT_URL, REDIRECT_URL and
// PATH_INFO a front end sends, and whatever the path, the prefix repair
// never panics and routes on one path (PARAM-08/09): ScriptName+PathInfo
// is the request path, and ScriptName is "" or a whole-segment prefix of
// it. A forced prefix that is not in the path leaves the path untouched.
func FuzzScriptName(f *testing.F) {
	f.Add("/mysite/a/b", "/mysite", "", "", "/a/b", "", false)
	f.Add("/mysite/a/b", "/mysite.fcgi", "/mysite/a/b", "", "/a/b", "", false)
	f.Add("/a/b", "", "", "/mysite/a/b", "/a/b", "", false)
	f.Add("/x", "/x/y/z", "/x", "", "/very/long/path/info", "", false)
	f.Add("/mysiteX/a", "/mysite", "", "", "", "", false)
	f.Add("/a", "", "", "", "", "/mysite/", true)
	f.Add("/mysite", "", "", "", "", "/mysite", true)
	f.Add("/p\n/x", "/p", "/p\n/x", "", "\n/x", "", false)
	f.Fuzz(func(t *testing.T, path, sn, scriptURL, redirectURL, pathInfo, force string, forced bool) {
		vars := map[string]string{"SCRIPT_NAME": sn, "SCRIPT_URL": scriptURL,
			"REDIRECT_URL": redirectURL, "PATH_INFO": pathInfo}
		var fp *string
		if forced {
			fp = &force
		}
		byMap := &Request{vars: func(*http.Request) map[string]string { return vars }}
		script, info := scriptName(byMap, path, fp)
		byName := &Request{vars: byMap.vars, lookup: func(_ *http.Request, n string) string { return vars[n] }}
		if s2, i2 := scriptName(byName, path, fp); s2 != script || i2 != info {
			t.Fatalf("by name %q + %q, by map %q + %q", s2, i2, script, info)
		}
		if script+info == path {
			if script != "" && path != script && !strings.HasPrefix(path, script+"/") {
				t.Fatalf("prefix %q is not a segment prefix of %q", script, path)
			}
			return
		}
		if !forced || info != path {
			t.Fatalf("path %q split into %q + %q", path, script, info)
		}
	})
}

// FuzzStaticPath: no request path serves a file outside the static root,
// a dotfile, or our own binary and config (STATIC-01..04), and none panics.
func FuzzStaticPath(f *testing.F) {
	for _, p := range []string{"/static/css/site.css", "/static/../secret.txt", "/static/%2e%2e/secret.txt",
		"/static/css/..%2f..%2fsecret.txt", "/static/a%00b", "/static/..%5csecret.txt", "/static/escape.txt",
		"/static/sub/rel.txt", "/root/mysite.fcgi", "/root/mysite.toml", "/static/bin", "/static/.env",
		"/static/.git/config", "/static../secret.txt", "/root/static/hello.txt", "/static//css//site.css"} {
		f.Add(p)
	}
	h, _ := staticSite(f)
	f.Fuzz(func(t *testing.T, p string) {
		r, err := http.NewRequest("GET", "http://x/", nil)
		if err != nil {
			t.Skip()
		}
		r.URL.Path = p
		r.RequestURI = p
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.String()
		for _, secret := range []string{"outside", "#!binary", "[static]", "SECRET=1", "[core]"} {
			if rec.Code == 200 && body == secret {
				t.Fatalf("%q served %q", p, body)
			}
		}
	})
}
