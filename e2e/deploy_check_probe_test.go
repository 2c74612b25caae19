package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// The README's four .htaccess lines, and the deny install adds for the
// files it writes.
const (
	readmeHtaccess = htaccessFcgid
	denyConfig     = "<Files \"mysite.toml\">\n    Require all denied\n</Files>\n"
)

// `check --url` against a real Apache + mod_fcgid, one directory per seeded
// fault, each with its own <Directory> section; the live line must name the
// cause (issue 9, item 6).
func TestDeployCheckProbe(t *testing.T) {
	good := "Options +ExecCGI\n    AllowOverride All\n    Require all granted"
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html><body>The app's home page</body></html>\n")
	}))
	defer app.Close()
	cases := []struct {
		name     string
		dirConf  string
		htaccess string
		toml     string
		urlPath  string // "" = the site's directory
		want     string // in the [FAIL] live line; "" = no live failure; "warn: ..." = a [warn] live line
		files    map[string]string
	}{
		{"good", good, readmeHtaccess + denyConfig, "[server]\nping_path = \"/-/ping\"\n", "", "", nil},
		{"what install writes", good, "", "[server]\nping_path = \"/-/ping\"\n", "", "", nil},
		{"no ExecCGI (Debian's default Options)", "Options FollowSymLinks\n    AllowOverride All\n    Require all granted", readmeHtaccess + denyConfig, "", "", "ExecCGI is not enabled", nil},
		{"Require in .htaccess", good, readmeHtaccess + denyConfig + "Require all denied\n", "", "", ".htaccess line 8 (Require all denied) denies every request", nil},
		{"AllowOverride None", "Options +ExecCGI\n    AllowOverride None\n    Require all granted", readmeHtaccess, "", "", ".htaccess is ignored (AllowOverride None)", nil},
		{"rewrite missing", good, "AddHandler fcgid-script .fcgi\n" + denyConfig, "", "", "no rewrite sends requests to mysite.fcgi", nil},
		{"config error", good, readmeHtaccess + denyConfig, "[server]\nmaxrequest = 1\n", "", "the config does not load", nil},
		{"config served", good, readmeHtaccess, "[app]\nupstream = \"http://127.0.0.1:1\"\n", "", "mysite.toml is served to anyone", nil},
		{"the app fails", good, readmeHtaccess + denyConfig, "[app]\ncommand = [\"/nonexistent/bin/app\"]\n", "", "the app: ", nil},
		{"wrong URL", good, readmeHtaccess + denyConfig, "", "nosuch/", "nothing at this URL leads to", nil},
		{"a page that is not ours", good, readmeHtaccess + denyConfig, "", "other/", "a page that is not ours", nil},
		{"index.html answers", good, "AddHandler fcgid-script .fcgi\n" + denyConfig, "", "", "index.html in the directory answers instead of mysite.fcgi",
			map[string]string{"index.html": "<html><body>Coming soon</body></html>\n"}},
		{"an app without ping_path", good, readmeHtaccess + denyConfig, "[app]\nupstream = \"" + app.URL + "\"\n", "", "warn: check cannot tell", nil},
	}
	root := peertest.Dir(t)
	var conf strings.Builder
	for i, tc := range cases {
		for name, text := range tc.files {
			os.MkdirAll(filepath.Join(root, fmt.Sprintf("site%d", i)), 0o755)
			os.WriteFile(filepath.Join(root, fmt.Sprintf("site%d", i), name), []byte(text), 0o644)
		}
	}
	os.MkdirAll(filepath.Join(root, "other"), 0o755)
	os.WriteFile(filepath.Join(root, "other", "index.html"), []byte("<html><body><p>Welcome to nginx!</p></body></html>\n"), 0o644)
	for i, tc := range cases {
		dir := filepath.Join(root, fmt.Sprintf("site%d", i))
		os.MkdirAll(dir, 0o755)
		if tc.htaccess == "" { // install's own .htaccess block
			if out, err := deployRun(t, binary(t), "install", dir); err != nil {
				t.Fatalf("install: %v\n%s", err, out)
			}
		} else {
			install(t, dir, "mysite.fcgi")
			os.WriteFile(filepath.Join(dir, ".htaccess"), []byte(tc.htaccess), 0o644)
		}
		os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(tc.toml), 0o644)
		fmt.Fprintf(&conf, "<Directory %s>\n    %s\n</Directory>\n", dir, tc.dirConf)
	}
	h := peertest.Apache(t, []string{"fcgid", "rewrite"}, fmt.Sprintf(`
DocumentRoot %s
FcgidIPCDir {{DIR}}/fcgid
FcgidProcessTableFile {{DIR}}/fcgid_shm
%s`, root, conf.String()))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(root, fmt.Sprintf("site%d", i))
			u := h.URL + "/" + filepath.Base(dir) + "/"
			if tc.urlPath != "" {
				u = h.URL + "/" + tc.urlPath
			}
			out, _ := deployRun(t, filepath.Join(dir, "mysite.fcgi"), "check", dir, "--suexec", "off", "--url", u)
			var live, warned []string
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "[FAIL] live:") {
					live = append(live, l)
				}
				if strings.HasPrefix(l, "[warn] live:") {
					warned = append(warned, l)
				}
			}
			t.Logf("%s", strings.Join(append(live, warned...), "\n"))
			switch {
			case strings.HasPrefix(tc.want, "warn: "):
				if len(live) > 0 || !strings.Contains(strings.Join(warned, "\n"), strings.TrimPrefix(tc.want, "warn: ")) {
					t.Errorf("want only a [warn] live line naming %q:\n%s", tc.want, out)
				}
			case tc.want == "" && len(live) > 0:
				t.Errorf("live failures on a good site:\n%s\n\nApache:\n%s", out, h.Log())
			case tc.want == "" && !strings.Contains(out, "[ok]   live: GET "+u+"-/ping answered 200 OK from mysite.fcgi (the rewrite works)"):
				t.Errorf("no [ok] for the ping path:\n%s", out)
			case tc.want != "" && !strings.Contains(strings.Join(live, "\n"), tc.want):
				t.Errorf("no [FAIL] live line naming %q:\n%s\n\nApache:\n%s", tc.want, out, h.Log())
			}
		})
	}
}
