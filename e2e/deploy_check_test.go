package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// checkSite installs the binary into a fresh directory, lets break change
// it, runs `check` and returns its output and whether it failed.
func checkSite(t *testing.T, brk func(site string)) (string, bool) {
	t.Helper()
	site := filepath.Join(peertest.Dir(t), "site") // the web server's user may enter its parents
	if out, err := deployRun(t, binary(t), "install", site); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if brk != nil {
		brk(site)
	}
	out, err := deployRun(t, filepath.Join(site, "mysite.fcgi"), "check", site, "--suexec", "off") // not the host's guess: a dev machine may lack /etc/apache2
	if strings.Contains(out, "\x1b[") {
		t.Errorf("color codes when stdout is not a terminal:\n%s", out)
	}
	return out, err != nil
}

func TestDeployCheckGoodInstallPasses(t *testing.T) {
	out, failed := checkSite(t, nil)
	if failed || strings.Contains(out, "[FAIL]") || !strings.Contains(out, "0 failed") {
		t.Fatalf("check of a fresh install failed:\n%s", out)
	}
	for _, want := range []string{"[ok]   binary", "[ok]   config", ".htaccess line", "restart on change", "FcgidMaxRequestLen", "self-test: GET / through FastCGI answered 200 OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestDeployCheckFailures(t *testing.T) {
	write := func(name, text string) func(string) {
		return func(site string) {
			if err := os.WriteFile(filepath.Join(site, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name string
		brk  func(site string)
		want []string // all in one [FAIL] item and its fix
	}{
		{"group-writable binary", func(site string) { os.Chmod(filepath.Join(site, "mysite.fcgi"), 0o775) },
			[]string{"[FAIL] binary", "group- or world-writable (mode 0775)", "suEXEC", "fix: chmod 755"}},
		{"unknown config key", write("mysite.toml", "[server]\nwatch = \"auto\"\nmaxrequest = 10\n"),
			[]string{"[FAIL] config", "mysite.toml:3", `key "server.maxrequest"`, "unknown key", `did you mean "maxrequests"`, "fix: edit", "line 3"}},
		{"bad TOML syntax", write("mysite.toml", "[app]\ncommand = [\"gunicorn\"\nworkdir = \"/tmp\"\n"),
			[]string{"[FAIL] config", "mysite.toml:", "fix: edit", "line "}},
		{"missing app command", write("mysite.toml", "[app]\ncommand = [\"no-such-program-fcgishim\", \"--bind\", \"unix:{socket}\"]\n"),
			[]string{"[FAIL] app command", "no-such-program-fcgishim", "not found in PATH", "line 2 of", "fix: install it"}},
		{"missing WSGI interpreter", write("mysite.toml", "[app]\nwsgi = \"mysite.wsgi\"\npython = \"no-such-python-fcgishim\"\n"),
			[]string{"[FAIL] app python (runs the WSGI runner)", "no-such-python-fcgishim", "not found in PATH", "line 3 of", "fix: install Python 3", "app.python"}},
		{".htaccess without the handler", write(".htaccess", "RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n"),
			[]string{"[FAIL]", ".htaccess has no AddHandler/SetHandler for mysite.fcgi", "fix:"}},
		{".htaccess rewrite loop", write(".htaccess", "AddHandler fcgid-script .fcgi\nRewriteEngine On\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n"),
			[]string{"[FAIL]", ".htaccess line 3 rewrites mysite.fcgi to itself", "fix: put RewriteCond %{REQUEST_FILENAME} !-f"}},
		{"group-writable directory", func(site string) { os.Chmod(site, 0o775) },
			[]string{"[FAIL] directory", "group- or world-writable (mode 0775)", "fix: chmod go-w"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, failed := checkSite(t, tc.brk)
			if !failed {
				t.Errorf("check exited 0:\n%s", out)
			}
			i := strings.Index(out, tc.want[0])
			if i < 0 {
				t.Fatalf("no %q in:\n%s", tc.want[0], out)
			}
			item := out[i:]
			if j := strings.Index(item[1:], "\n["); j >= 0 {
				item = item[:j+1]
			}
			for _, w := range tc.want[1:] {
				if !strings.Contains(item, w) {
					t.Errorf("missing %q in the item:\n%s\nfull output:\n%s", w, item, out)
				}
			}
		})
	}
}
