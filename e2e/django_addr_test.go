package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// Django under gunicorn on a unix socket, behind Apache + mod_fcgid, with
// the README's command: request.META['REMOTE_ADDR'] is the visitor's
// address (gunicorn --proxy-protocol and [app] proxy_protocol), not the
// empty string gunicorn reports for a unix-socket peer, and not what the
// visitor claims in X-Forwarded-For.
func TestDjangoSeesClientAddress(t *testing.T) {
	project := djangoProject(t)
	urls := filepath.Join(project, "mysite", "urls.py")
	f, err := os.OpenFile(urls, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`
from django.http import HttpResponse
def whoami(request):
    m = request.META
    return HttpResponse(m.get('REMOTE_ADDR', '-') + '|' + m.get('HTTP_X_FORWARDED_FOR', '-'), content_type='text/plain')
urlpatterns += [path('whoami/', whoami)]
`)
	f.Close()
	root := peertest.Dir(t)
	site := filepath.Join(root, "mysite")
	os.Mkdir(site, 0o755)
	install(t, site, "mysite.fcgi")
	os.WriteFile(filepath.Join(site, ".htaccess"), []byte(htaccessFcgid), 0o644)
	os.WriteFile(filepath.Join(site, "mysite.toml"), []byte(djangoToml(project, `idle_stop = "1s"`)), 0o644)
	t.Cleanup(func() { // runs after Apache has stopped: gunicorn follows within idle_stop
		peertest.Eventually(t, 30*time.Second, "gunicorn to stop", func() bool { return len(gunicornMasters(t, project)) == 0 })
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
	for range 3 { // several requests: each one's own address, on any worker
		code, body := peertest.Get(t, c, srv.URL+"/mysite/whoami/", "X-Forwarded-For", "203.0.113.66")
		if code != 200 || body != "127.0.0.2|127.0.0.2" {
			t.Fatalf("REMOTE_ADDR|X-Forwarded-For as Django sees them: %d %q, want \"127.0.0.2|127.0.0.2\"", code, body)
		}
	}
}
