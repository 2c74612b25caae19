package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peer"
)

// The README's recipe, followed literally by a hosting customer on a suEXEC
// host: `./mysite.fcgi install ~/public_html/mysite` as alice, and the info
// page answers at /~alice/mysite/ from a process that runs as alice.
func TestSuexecInfoPage(t *testing.T) {
	alice := peer.NewUser(t, "alice")
	h := peer.Suexec(t, peer.SuexecOptions{})
	alice.InstallSite(t, binary(t), "mysite")
	c := &http.Client{Timeout: 20 * time.Second}
	in, _, err := getInfo(c, "GET", h.UserURL(alice, "/mysite/"), nil)
	if err != nil {
		t.Fatalf("GET /~%s/mysite/: %v\n%s\n%s", alice.Name, err, h.Log(), h.SuexecLog())
	}
	if in.Mode != "fastcgi-stdin" || in.ScriptName != "/~"+alice.Name+"/mysite" || in.PathInfo != "/" {
		t.Errorf("mode=%q script_name=%q path_info=%q", in.Mode, in.ScriptName, in.PathInfo)
	}
	if uid, ok := peer.ProcessUID(in.PID); !ok || uid != alice.UID {
		t.Errorf("pid %d runs as uid %d (found %v), want %s's %d", in.PID, uid, ok, alice.Name, alice.UID)
	}
}

// Item 1 of the shared-host review: nothing fcgishim keeps in the public
// directory is served as a file, under the overrides a host may allow:
// "All" (cPanel, Plesk) and the least the block needs, FileInfo (for the
// rewrite and the handler) plus Options=ExecCGI, without AuthConfig. The
// test Apache has no ".ht*" deny of its own, like hosts whose main config
// lacks Debian's.
func TestSuexecSiteFilesNotServed(t *testing.T) {
	for _, override := range []string{"All", "FileInfo Options=ExecCGI"} {
		t.Run(strings.ReplaceAll(override, " ", "_"), func(t *testing.T) {
			alice := peer.NewUser(t, "alice")
			h := peer.Suexec(t, peer.SuexecOptions{AllowOverride: override})
			site := alice.InstallSite(t, binary(t), "mysite")
			const secret = "s3cret-do-not-serve"
			toml, err := os.ReadFile(filepath.Join(site, "mysite.toml"))
			if err != nil {
				t.Fatal(err)
			}
			toml = append(toml, "\n# "+secret+"\n"...)
			alice.WriteFile(t, filepath.Join(site, "mysite.toml"), toml, 0o644)
			alice.WriteFile(t, filepath.Join(site, "mysite.toml~"), toml, 0o644)
			alice.WriteFile(t, filepath.Join(site, ".mysite.toml.swp"), toml, 0o644)
			alice.WriteFile(t, filepath.Join(site, "restart.txt"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, "app.log"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, ".htaccess.bak"), []byte(secret), 0o644)
			alice.Shell(t, "mkdir -p ~/public_html/mysite/sub ~/public_html/mysite/.well-known/acme-challenge")
			alice.WriteFile(t, filepath.Join(site, "sub", ".htpasswd"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, "sub", "app.log"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, ".well-known", "acme-challenge", "tok"), []byte("acme-ok"), 0o644)
			alice.WriteFile(t, filepath.Join(site, "hello.txt"), []byte("hello"), 0o644)

			c := &http.Client{Timeout: 20 * time.Second}
			// The site and ordinary files still work, .well-known included.
			if _, _, err := getInfo(c, "GET", h.UserURL(alice, "/mysite/"), nil); err != nil {
				t.Fatalf("the site: %v\n%s\n%s", err, h.Log(), h.SuexecLog())
			}
			for path, want := range map[string]string{"/mysite/hello.txt": "hello", "/mysite/.well-known/acme-challenge/tok": "acme-ok"} {
				if code, body := peer.Get(t, c, h.UserURL(alice, path)); code != 200 || body != want {
					t.Errorf("GET %s: %d %q, want 200 %q", path, code, body, want)
				}
			}
			for _, path := range []string{
				"/mysite/mysite.toml", "/mysite/mysite%2etoml", "/mysite/./mysite.toml", "/mysite/sub/../mysite.toml",
				"/mysite/mysite.toml/x", "/mysite/mysite.toml~", "/mysite/.mysite.toml.swp",
				"/mysite/restart.txt", "/mysite/app.log", "/mysite/.htaccess", "/mysite/.htaccess.bak",
				"/mysite/sub/.htpasswd", "/mysite/sub/app.log",
			} {
				code, body := peer.Get(t, c, h.UserURL(alice, path))
				if (code != 403 && code != 404) || strings.Contains(body, secret) || strings.Contains(body, "BEGIN fcgishim") {
					t.Errorf("GET %s: %d, want 403 or 404 and not the file:\n%.300s", path, code, body)
				}
			}
		})
	}
}
