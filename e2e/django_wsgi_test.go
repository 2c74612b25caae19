package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// djangoWSGIViews are the views TestDjangoWSGIRunnerUnderApacheFcgid asks
// for; %s is what /hello/ says, so a test can change the code.
const djangoWSGIViews = `
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
import os

def hello(request):
    return HttpResponse(%q, content_type='text/plain')

def echo(request):
    return HttpResponse(request.GET.get('q', '') + '|' + request.path + '|' + reverse('echo'), content_type='text/plain')

@csrf_exempt
def form(request):
    return HttpResponse(request.method + ':' + request.POST.get('name', '') + ':' + request.POST.get('n', ''), content_type='text/plain')

def stream(request):
    return StreamingHttpResponse(('chunk%%d;' %% i for i in range(50)), content_type='text/plain')

def boom(request):
    raise RuntimeError('boom from a view')

def whoami(request):
    m = request.META
    return HttpResponse(m.get('REMOTE_ADDR', '-') + '|' + m.get('HTTP_X_FORWARDED_FOR', '-') + '|' + str(os.getpid()), content_type='text/plain')

urlpatterns += [path('hello/', hello), path('echo/', echo, name='echo'), path('form/', form),
                path('stream/', stream), path('boom/', boom), path('whoami/', whoami)]
`

// wsgiRunners returns the PIDs of the WSGI runner's masters (runner
// processes whose parent is not one) running in project.
func wsgiRunners(project string) []int {
	isRunner := func(pid string) bool {
		b, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		return bytes.Contains(b, []byte("wsgi-runner.py"))
	}
	ents, _ := os.ReadDir("/proc")
	var masters []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isRunner(e.Name()) {
			continue
		}
		if cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd"); cwd != project {
			continue // another test's
		}
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 1 && !isRunner(f[1]) {
			masters = append(masters, pid)
		}
	}
	return masters
}

// The recommended Django setup: [app] wsgi = "mysite.wsgi", nothing but
// Django installed, behind Apache + mod_fcgid, mounted at /mysite/.
func TestDjangoWSGIRunnerUnderApacheFcgid(t *testing.T) {
	project := djangoProject(t)
	urls := filepath.Join(project, "mysite", "urls.py")
	orig, err := os.ReadFile(urls)
	if err != nil {
		t.Fatal(err)
	}
	writeViews := func(hello string) {
		t.Helper()
		if err := os.WriteFile(urls, append(append([]byte{}, orig...), fmt.Sprintf(djangoWSGIViews, hello)...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeViews("hello v1")
	root := peertest.Dir(t)
	site := filepath.Join(root, "mysite")
	os.Mkdir(site, 0o755)
	bin := install(t, site, "mysite.fcgi")
	os.WriteFile(filepath.Join(site, ".htaccess"), []byte(htaccessFcgid), 0o644)
	os.WriteFile(filepath.Join(site, "mysite.toml"), []byte(fmt.Sprintf(`[app]
wsgi = "mysite.wsgi"
python = "/usr/bin/python3"
workers = 2
workdir = %q
idle_stop = "1s"
`, project)), 0o644)
	t.Cleanup(func() { // runs after Apache has stopped: the runner follows within idle_stop
		peertest.Eventually(t, 30*time.Second, "the WSGI runner to stop", func() bool { return len(wsgiRunners(project)) == 0 })
	})
	srv := sharedHost(t, root, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.Log())
		}
	})
	// The visitor connects from 127.0.0.2, an address neither Apache nor
	// we use ourselves.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
	base := srv.URL + "/mysite"

	if code, body := peertest.Get(t, c, base+"/hello/"); code != 200 || body != "hello v1" {
		t.Fatalf("GET /hello/: %d %q", code, body)
	}
	// The query string arrives; reverse() and request.path carry the mount prefix.
	if code, body := peertest.Get(t, c, base+"/echo/?q=a%20b%26c"); code != 200 || body != "a b&c|/mysite/echo/|/mysite/echo/" {
		t.Fatalf("GET /echo/: %d %q, want \"a b&c|/mysite/echo/|/mysite/echo/\"", code, body)
	}
	resp, err := c.PostForm(base+"/form/", url.Values{"name": {"Zoë"}, "n": {strings.Repeat("x", 100000)}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "POST:Zoë:" + strings.Repeat("x", 100000); resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("POST /form/: %d, %d bytes (want %d)", resp.StatusCode, len(b), len(want))
	}
	var want strings.Builder
	for i := range 50 {
		fmt.Fprintf(&want, "chunk%d;", i)
	}
	if code, body := peertest.Get(t, c, base+"/stream/"); code != 200 || body != want.String() {
		t.Fatalf("GET /stream/: %d %q", code, body)
	}
	resp, err = c.Head(base + "/hello/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) != 0 {
		t.Fatalf("HEAD /hello/: %d with %d body bytes", resp.StatusCode, len(b))
	}
	// The visitor's address, not a forged X-Forwarded-For, whichever worker answers.
	for range 6 {
		code, body := peertest.Get(t, c, base+"/whoami/", "X-Forwarded-For", "203.0.113.66")
		addr, pid, _ := strings.Cut(body, "|127.0.0.2|")
		if code != 200 || addr != "127.0.0.2" || pid == "" {
			t.Fatalf("REMOTE_ADDR|X-Forwarded-For|pid as Django sees them: %d %q, want 127.0.0.2|127.0.0.2|pid", code, body)
		}
	}
	// A view that raises: Django's 500 page, and the site goes on.
	if code, _ := peertest.Get(t, c, base+"/boom/"); code != 500 {
		t.Fatalf("GET /boom/: %d, want 500", code)
	}
	if code, body := peertest.Get(t, c, base+"/hello/"); code != 200 || body != "hello v1" {
		t.Fatalf("GET /hello/ after a 500: %d %q", code, body)
	}
	masters := wsgiRunners(project)
	if len(masters) != 1 {
		t.Fatalf("runner masters: %v, want exactly one", masters)
	}

	// New code, touch mysite.fcgi: a new runner serves it. (A different
	// length: Python's .pyc is reused when a source's size and mtime in
	// whole seconds are unchanged, and this edit may come within the second
	// the first version was compiled in.)
	writeViews("hello, version 2")
	now := time.Now()
	os.Chtimes(bin, now, now)
	peertest.Eventually(t, 30*time.Second, "the new code to be served after touch", func() bool {
		code, body := peertest.Get(t, c, base+"/hello/")
		return code == 200 && body == "hello, version 2"
	})
	peertest.Eventually(t, 30*time.Second, "one runner, a new one", func() bool {
		m := wsgiRunners(project)
		return len(m) == 1 && m[0] != masters[0]
	})
}
