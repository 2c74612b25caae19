package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScanHtaccess(t *testing.T) {
	cases := []struct {
		text string
		want htaccessScan
	}{
		{"AddHandler fcgid-script .fcgi\nRewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n",
			htaccessScan{handler: "fcgid-script", handlerLine: 1, ruleLine: 4, engine: true}},
		{"<Files \"mysite.fcgi\">\n    SetHandler fcgid-script\n</Files>\nRewriteEngine On\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n",
			htaccessScan{handler: "fcgid-script", handlerLine: 2, ruleLine: 5, loopLine: 5, engine: true}},
		{"<Files \"other.fcgi\">\n    SetHandler fcgid-script\n</Files>\n# AddHandler fcgid-script .fcgi\n", htaccessScan{}},
	}
	for _, tc := range cases {
		if got := scanHtaccess(tc.text, "mysite.fcgi"); got != tc.want {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.text, got, tc.want)
		}
	}
}

func FuzzScanHtaccess(f *testing.F) {
	f.Add("AddHandler fcgid-script .fcgi\nRewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n")
	f.Add("<FilesMatch \"\\.fcgi$\">\nSetHandler fcgid-script\n</FilesMatch>\nRewriteRule ( mysite.fcgi\n")
	f.Fuzz(func(t *testing.T, text string) {
		s := scanHtaccess(text, "mysite.fcgi")
		n := strings.Count(text, "\n") + 1
		if s.handlerLine > n || s.ruleLine > n || s.loopLine != 0 && s.loopLine != s.ruleLine {
			t.Fatalf("%+v for %d lines", s, n)
		}
	})
}

// [app] proxy_protocol and gunicorn's --proxy-protocol must agree: one
// without the other makes gunicorn answer 400 to every request, or wait
// for a PROXY line that never comes.
func TestCheckProxyProtocol(t *testing.T) {
	cases := []struct {
		name, toml string
		want       []string // in check's output
		warned     int
	}{
		{"option without the flag", `command = ["gunicorn", "--bind", "unix:{socket}", "mysite.wsgi"]
proxy_protocol = true`, []string{"[warn] [app] proxy_protocol = true but the gunicorn command has no --proxy-protocol (line 2 of", "400", `fix: add "--proxy-protocol" to app.command`}, 1},
		{"flag without the option", `command = ["/usr/bin/gunicorn", "--bind", "unix:{socket}", "--proxy-protocol", "mysite.wsgi"]`,
			[]string{"[warn] the gunicorn command has --proxy-protocol (line 2 of", "waits for a PROXY line the site never sends", "fix: add proxy_protocol = true to [app]"}, 1},
		{"python -m gunicorn, flag without the option", `command = ["python3", "-m", "gunicorn", "--proxy-protocol=auto", "mysite.wsgi"]`,
			[]string{"[warn] the gunicorn command has --proxy-protocol"}, 1},
		{"gunicorn 24's v2 mode: we send v1", `command = ["gunicorn", "--proxy-protocol", "v2", "mysite.wsgi"]
proxy_protocol = true`, []string{"[warn] gunicorn's --proxy-protocol is v2"}, 1},
		{"both", `command = ["gunicorn", "--bind", "unix:{socket}", "--proxy-protocol", "mysite.wsgi"]
proxy_protocol = true`, []string{"[ok]   app: proxy_protocol = true and gunicorn's --proxy-protocol agree"}, 0},
		{"both, flag from GUNICORN_CMD_ARGS", `command = ["gunicorn", "mysite.wsgi"]
proxy_protocol = true
env = { GUNICORN_CMD_ARGS = "--workers 2 --proxy-protocol" }`, []string{"agree"}, 0},
		{"flag off", `command = ["gunicorn", "--proxy-protocol", "off", "mysite.wsgi"]`, nil, 0},
		{"neither", `command = ["gunicorn", "mysite.wsgi"]`, nil, 0},
		{"not gunicorn", `command = ["python3", "-m", "http.server", "--proxy-protocol"]`, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[app]\n"+tc.toml+"\n"), 0o644)
			var out bytes.Buffer
			c := newChecker(CheckOptions{Dir: dir, Suexec: "off", SuexecBin: "/nonexistent", Out: &out})
			cfg := c.checkConfig()
			if cfg == nil {
				t.Fatalf("config does not load:\n%s", out.String())
			}
			c.r = Report{}
			c.checkProxyProtocol(cfg)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("missing %q in:\n%s", w, out.String())
				}
			}
			if c.r.Warned != tc.warned || c.r.Failed != 0 {
				t.Errorf("%d warnings, %d failures, want %d warnings:\n%s", c.r.Warned, c.r.Failed, tc.warned, out.String())
			}
		})
	}
}
