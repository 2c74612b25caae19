package handler

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// staticSite lays out a document root like a shared host's public_html:
// mysite.fcgi and mysite.toml beside the static directory, a secret outside.
func staticSite(t testing.TB) (http.Handler, string) {
	t.Helper()
	dir := t.TempDir()
	pub := filepath.Join(dir, "public_html")
	st := filepath.Join(pub, "static")
	for _, d := range []string{filepath.Join(st, "css"), filepath.Join(st, ".git"), filepath.Join(st, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(st, "css", "site.css"), "body{color:red}\n")
	write(filepath.Join(st, "hello.txt"), "0123456789abcdefghij")
	write(filepath.Join(st, "noext"), "<html>not sniffed</html>")
	write(filepath.Join(st, ".env"), "SECRET=1")
	write(filepath.Join(st, ".git", "config"), "[core]")
	write(filepath.Join(dir, "secret.txt"), "outside")
	write(filepath.Join(pub, "mysite.fcgi"), "#!binary")
	write(filepath.Join(pub, "mysite.toml"), "[static]\n")
	must(t, os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(st, "escape.txt")))
	must(t, os.Symlink("../../secret.txt", filepath.Join(st, "sub", "rel.txt")))
	must(t, os.Symlink("css/site.css", filepath.Join(st, "inside.css")))
	// Our own files, reachable from the static root by links.
	must(t, os.Symlink("../mysite.fcgi", filepath.Join(st, "bin")))
	// A prefix mapped onto the document root itself must still hide them.
	cfg := &config.Config{
		File: filepath.Join(pub, "mysite.toml"),
		Static: map[string]string{
			"/static/": st,
			"/root":    pub,
		},
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "app:"+r.URL.Path)
	})
	h, err := newStatic(Options{Config: cfg, Process: &Process{}, Executable: filepath.Join(pub, "mysite.fcgi")}, next)
	if err != nil {
		t.Fatal(err)
	}
	return &Gateway{Next: h}, st
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestStaticTable(t *testing.T) {
	h, _ := staticSite(t)
	for _, tc := range []struct {
		method, target string
		code           int
		body, ctype    string
	}{
		{"GET", "/static/css/site.css", 200, "body{color:red}\n", "text/css; charset=utf-8"},
		{"HEAD", "/static/hello.txt", 200, "", "text/plain; charset=utf-8"},
		{"GET", "/static/noext", 200, "<html>not sniffed</html>", "application/octet-stream"},
		{"GET", "/static/inside.css", 200, "body{color:red}\n", "text/css; charset=utf-8"},
		{"GET", "/static//css//site.css", 200, "body{color:red}\n", ""},
		// STATIC-05: no listings.
		{"GET", "/static/", 404, "", ""},
		{"GET", "/static/css/", 404, "", ""},
		{"GET", "/static", 404, "", ""},
		// STATIC-03: dotfiles.
		{"GET", "/static/.env", 404, "", ""},
		{"GET", "/static/.git/config", 404, "", ""},
		{"GET", "/static/css/.", 404, "", ""},
		// STATIC-01: traversal, plain and encoded.
		{"GET", "/static/../secret.txt", 404, "", ""},
		{"GET", "/static/%2e%2e/%2e%2e/secret.txt", 404, "", ""},
		{"GET", "/static/css/..%2f..%2f..%2fsecret.txt", 404, "", ""},
		{"GET", "/static/css%2f..%2f..%2f..%2fsecret.txt", 404, "", ""},
		{"GET", "/static/a%00b", 404, "", ""},
		{"GET", "/static/..%5c..%5csecret.txt", 404, "", ""},
		// STATIC-02: symlinks out of the root.
		{"GET", "/static/escape.txt", 404, "", ""},
		{"GET", "/static/sub/rel.txt", 404, "", ""},
		// STATIC-03: our binary and config, directly and by link.
		{"GET", "/root/mysite.fcgi", 404, "", ""},
		{"GET", "/root/mysite.toml", 404, "", ""},
		{"GET", "/static/bin", 404, "", ""},
		{"GET", "/root/static/hello.txt", 200, "0123456789abcdefghij", ""},
		// STATIC-04: prefix only on a segment boundary.
		{"GET", "/static../secret.txt", 200, "app:/static../secret.txt", ""},
		{"GET", "/staticfoo", 200, "app:/staticfoo", ""},
		{"GET", "/other", 200, "app:/other", ""},
		// Only GET and HEAD.
		{"POST", "/static/hello.txt", 405, "", ""},
		{"DELETE", "/static/nothere", 405, "", ""},
	} {
		req := httptest.NewRequest(tc.method, "/", nil)
		u, err := url.Parse(tc.target) // not req.URL.Parse: it would resolve ".."
		must(t, err)
		req.URL = u
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("%s %s: status %d, want %d (%q)", tc.method, tc.target, rec.Code, tc.code, rec.Body)
			continue
		}
		if tc.code == 200 && tc.method == "GET" && rec.Body.String() != tc.body {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.target, rec.Body, tc.body)
		}
		if tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", tc.method, tc.target, rec.Header().Get("Content-Type"), tc.ctype)
		}
		if tc.code == 404 && strings.Contains(rec.Body.String(), "outside") {
			t.Errorf("%s %s leaked the secret", tc.method, tc.target)
		}
	}
}

func TestStaticConditionalAndRange(t *testing.T) {
	h, st := staticSite(t)
	mod := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(st, "hello.txt"), mod, mod))
	do := func(hdr map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/static/hello.txt", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	full := do(nil)
	etag := full.Header().Get("Etag")
	if full.Code != 200 || etag == "" || full.Header().Get("Last-Modified") != mod.Format(http.TimeFormat) {
		t.Fatalf("status %d Etag %q Last-Modified %q", full.Code, etag, full.Header().Get("Last-Modified"))
	}
	if rec := do(map[string]string{"Range": "bytes=2-5"}); rec.Code != 206 || rec.Body.String() != "2345" || rec.Header().Get("Content-Range") != "bytes 2-5/20" {
		t.Errorf("range: %d %q %q", rec.Code, rec.Body, rec.Header().Get("Content-Range"))
	}
	if rec := do(map[string]string{"Range": "bytes=50-"}); rec.Code != 416 {
		t.Errorf("unsatisfiable range: %d", rec.Code)
	}
	if rec := do(map[string]string{"If-None-Match": etag}); rec.Code != 304 {
		t.Errorf("If-None-Match: %d", rec.Code)
	}
	if rec := do(map[string]string{"If-Modified-Since": mod.Add(time.Hour).Format(http.TimeFormat)}); rec.Code != 304 {
		t.Errorf("If-Modified-Since later: %d", rec.Code)
	}
	if rec := do(map[string]string{"If-Modified-Since": mod.Add(-time.Hour).Format(http.TimeFormat)}); rec.Code != 200 {
		t.Errorf("If-Modified-Since earlier: %d", rec.Code)
	}
	// Many overlapping ranges are not amplified (STATIC-06).
	many := "bytes=" + strings.Repeat("0-19,", 200) + "0-19"
	if rec := do(map[string]string{"Range": many}); rec.Body.Len() > 20*10 {
		t.Errorf("%d ranges gave %d bytes", 201, rec.Body.Len())
	}
}

// The runtime directory's files are never served, even when it lies
// inside a static directory.
func TestStaticHidesRuntimeDir(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	must(t, os.Mkdir(run, 0o700))
	must(t, os.WriteFile(filepath.Join(run, "state.json"), []byte(`{}`), 0o600))
	cfgPath := filepath.Join(dir, "mysite.toml")
	must(t, os.WriteFile(cfgPath, []byte("[app]\nupstream = \"http://127.0.0.1:1\"\n"), 0o600))
	cfg := &config.Config{File: cfgPath, Static: map[string]string{"/": dir},
		App: config.App{Command: []string{"x"}, RuntimeDir: run}}
	h, err := newStatic(Options{Config: cfg, Process: &Process{}}, http.NotFoundHandler())
	must(t, err)
	defer func() {
		if c, ok := h.(interface{ Close(context.Context) error }); ok {
			c.Close(context.Background())
		}
	}()
	for _, p := range []string{"/run/" + "state.json", "/mysite.toml"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != 404 {
			t.Errorf("%s: status %d", p, rec.Code)
		}
	}
}

// shrinkingWriter truncates the file being served at its first write.
type shrinkingWriter struct {
	*httptest.ResponseRecorder
	path string
	done bool
}

func (w *shrinkingWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.done = true
		os.Truncate(w.path, 10)
	}
	return w.ResponseRecorder.Write(p)
}

// STATIC-07: a file that shrinks while it is being served breaks the
// response (the handler aborts) instead of ending a short body as complete.
func TestStaticFileShrinksWhileServed_STATIC07(t *testing.T) {
	h, st := staticSite(t)
	big := filepath.Join(st, "big.bin")
	must(t, os.WriteFile(big, make([]byte, 4<<20), 0o644))
	w := &shrinkingWriter{ResponseRecorder: httptest.NewRecorder(), path: big}
	r := httptest.NewRequest("GET", "/static/big.bin", nil)
	var aborted any
	func() {
		defer func() { aborted = recover() }()
		h.ServeHTTP(w, r)
	}()
	if aborted != http.ErrAbortHandler {
		t.Fatalf("served %d of %s bytes without aborting (recovered %v)", w.Body.Len(), w.Header().Get("Content-Length"), aborted)
	}
}
