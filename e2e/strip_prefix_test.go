package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// An app that knows nothing of SCRIPT_NAME (Python's http.server, as many
// Node and Go apps) mounted at /mysite/ behind Apache + mod_fcgid: with
// [app] strip_prefix it gets the paths below the mount and its redirects
// land back under /mysite/; with the default it gets the full paths and
// 404s, which is why the option exists.
func TestApacheFcgidStripPrefixPlainHTTPApp(t *testing.T) {
	peertest.Need(t, "/usr/bin/python3")
	root := peertest.Dir(t)
	files := filepath.Join(root, "files")
	os.MkdirAll(filepath.Join(files, "sub"), 0o755)
	os.WriteFile(filepath.Join(files, "hello.txt"), []byte("hello from the app\n"), 0o644)
	os.WriteFile(filepath.Join(files, "sub", "page.txt"), []byte("a page\n"), 0o644)
	docroot := filepath.Join(root, "public_html")
	for _, site := range []struct{ name, extra string }{
		{"mysite", "strip_prefix = true\n"},
		{"plain", ""},
	} {
		dir := filepath.Join(docroot, site.name)
		os.MkdirAll(dir, 0o755)
		install(t, dir, "mysite.fcgi")
		os.WriteFile(filepath.Join(dir, ".htaccess"), []byte(htaccessFcgid), 0o644)
		toml := fmt.Sprintf("[app]\ncommand = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\nworkdir = %q\nidle_stop = \"1s\"\n%s", files, site.extra)
		os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(toml), 0o644)
	}
	srv := sharedHost(t, docroot, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.Log())
		}
	})
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}

	if code, body := peertest.Get(t, c, srv.URL+"/mysite/hello.txt"); code != 200 || body != "hello from the app\n" {
		t.Errorf("stripped /mysite/hello.txt: %d %q", code, body)
	}
	if code, body := peertest.Get(t, c, srv.URL+"/mysite/sub/page.txt"); code != 200 || body != "a page\n" {
		t.Errorf("stripped /mysite/sub/page.txt: %d %q", code, body)
	}
	if code, body := peertest.Get(t, c, srv.URL+"/mysite/"); code != 200 || !strings.Contains(body, `href="hello.txt"`) {
		t.Errorf("stripped /mysite/ (the directory listing): %d %q", code, body)
	}
	// http.server redirects a directory without its slash to "/sub/": the
	// visitor must land on /mysite/sub/, not on the host's /sub/.
	resp, err := c.Get(srv.URL + "/mysite/sub?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/mysite/sub/?x=1" {
		t.Errorf("stripped /mysite/sub: %d Location %q, want 301 to /mysite/sub/?x=1", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The default (for apps that honour SCRIPT_NAME) sends the full path.
	if code, _ := peertest.Get(t, c, srv.URL+"/plain/hello.txt"); code != 404 {
		t.Errorf("default /plain/hello.txt: %d, want the app's 404 for /plain/hello.txt", code)
	}
}
