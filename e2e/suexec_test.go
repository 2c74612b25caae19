package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// The README's recipe, followed literally by a hosting customer on a suEXEC
// host: `./mysite.fcgi install ~/public_html/mysite` as alice, and the info
// page answers at /~alice/mysite/ from a process that runs as alice.
func TestSuexecInfoPage(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	alice.InstallSite(t, binary(t), "mysite")
	c := &http.Client{Timeout: 20 * time.Second}
	in, _, err := getInfo(c, "GET", h.UserURL(alice, "/mysite/"), nil)
	if err != nil {
		t.Fatalf("GET /~%s/mysite/: %v\n%s\n%s", alice.Name, err, h.Log(), h.SuexecLog())
	}
	if in.Mode != "fastcgi-stdin" || in.ScriptName != "/~"+alice.Name+"/mysite" || in.PathInfo != "/" {
		t.Errorf("mode=%q script_name=%q path_info=%q", in.Mode, in.ScriptName, in.PathInfo)
	}
	if uid, ok := peertest.ProcessUID(in.PID); !ok || uid != alice.UID {
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
			alice := peertest.NewUser(t, "alice")
			h := peertest.Suexec(t, peertest.SuexecOptions{AllowOverride: override})
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
			alice.Shell(t, "mkdir -m 0755 ~/public_html/mysite/.fcgishim-mysite")
			alice.WriteFile(t, filepath.Join(site, ".fcgishim-mysite", "state.json"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, "sub", "app.log"), []byte(secret), 0o644)
			alice.WriteFile(t, filepath.Join(site, ".well-known", "acme-challenge", "tok"), []byte("acme-ok"), 0o644)
			alice.WriteFile(t, filepath.Join(site, "hello.txt"), []byte("hello"), 0o644)

			c := &http.Client{Timeout: 20 * time.Second}
			// The site and ordinary files still work, .well-known included.
			if _, _, err := getInfo(c, "GET", h.UserURL(alice, "/mysite/"), nil); err != nil {
				t.Fatalf("the site: %v\n%s\n%s", err, h.Log(), h.SuexecLog())
			}
			for path, want := range map[string]string{"/mysite/hello.txt": "hello", "/mysite/.well-known/acme-challenge/tok": "acme-ok"} {
				if code, body := peertest.Get(t, c, h.UserURL(alice, path)); code != 200 || body != want {
					t.Errorf("GET %s: %d %q, want 200 %q", path, code, body, want)
				}
			}
			for _, path := range []string{
				"/mysite/mysite.toml", "/mysite/mysite%2etoml", "/mysite/./mysite.toml", "/mysite/sub/../mysite.toml",
				"/mysite/mysite.toml/x", "/mysite/mysite.toml~", "/mysite/.mysite.toml.swp",
				"/mysite/restart.txt", "/mysite/app.log", "/mysite/.htaccess", "/mysite/.htaccess.bak",
				"/mysite/sub/.htpasswd", "/mysite/sub/app.log", "/mysite/.fcgishim-mysite/state.json",
			} {
				code, body := peertest.Get(t, c, h.UserURL(alice, path))
				if (code != 403 && code != 404) || strings.Contains(body, secret) || strings.Contains(body, "BEGIN fcgishim") {
					t.Errorf("GET %s: %d, want 403 or 404 and not the file:\n%.300s", path, code, body)
				}
			}
		})
	}
}

// suexecApp is a small Python app on a unix socket that reports who runs
// it and whether DB_PASSWORD reached it; Python is in suEXEC's safe PATH.
const suexecApp = `import json, os, socketserver, sys
from http.server import BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({"pid": os.getpid(), "uid": os.getuid(),
                        "db_password": os.environ.get("DB_PASSWORD", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *args):
        pass

class S(socketserver.UnixStreamServer):
    def get_request(self):
        c, _ = self.socket.accept()
        return c, ("unix", 0)

S(sys.argv[1], H).serve_forever()
`

type suexecAppAnswer struct {
	PID        int    `json:"pid"`
	UID        int    `json:"uid"`
	DBPassword string `json:"db_password"`
}

// suexecAppSite installs alice's site as the README says and configures the
// Python app in it, with extra [app] lines.
func suexecAppSite(t *testing.T, alice *peertest.User, extra string) string {
	t.Helper()
	site := alice.InstallSite(t, binary(t), "mysite")
	alice.WriteFile(t, "app.py", []byte(suexecApp), 0o644)
	alice.WriteFile(t, filepath.Join(site, "mysite.toml"), []byte(fmt.Sprintf(
		"[app]\ncommand = [\"python3\", %q, \"{socket}\"]\n%s", filepath.Join(alice.Home, "app.py"), extra)), 0o644)
	return site
}

// getApp fetches url and decodes the app's answer; any other answer fails t.
func getApp(t *testing.T, h *peertest.SuexecHost, url string) suexecAppAnswer {
	t.Helper()
	c := &http.Client{Timeout: 40 * time.Second}
	code, body := peertest.Get(t, c, url)
	var a suexecAppAnswer
	if code != 200 || json.Unmarshal([]byte(body), &a) != nil {
		t.Fatalf("GET %s: %d %.500s\n%s\n%s", url, code, body, h.Log(), h.SuexecLog())
	}
	return a
}

// [app] env_file keeps secrets out of the document root and reaches the
// app under suEXEC, whose bare environment has no HOME: "~/" is the home
// from the password database. The file in the site directory stays 403.
func TestSuexecEnvFileReachesApp(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	bob := peertest.NewUser(t, "bob")
	site := suexecAppSite(t, alice, "env_file = \"~/.config/mysite.env\"\n")
	alice.Run(t, "mkdir", "-m", "0700", ".config")
	alice.WriteFile(t, ".config/mysite.env", []byte("# secrets\nDB_PASSWORD='from the env file'\n"), 0o600)
	// Under suEXEC the config need not be readable by anyone but alice.
	alice.Run(t, "chmod", "600", filepath.Join(site, "mysite.toml"))
	a := getApp(t, h, h.UserURL(alice, "/mysite/"))
	if a.DBPassword != "from the env file" || a.UID != alice.UID {
		t.Errorf("app saw DB_PASSWORD=%q as uid %d, want %q as %d", a.DBPassword, a.UID, "from the env file", alice.UID)
	}
	// A neighbour reads neither the file, nor the config, nor the app's
	// environment.
	for _, p := range []string{filepath.Join(alice.Home, ".config/mysite.env"), filepath.Join(site, "mysite.toml"), fmt.Sprintf("/proc/%d/environ", a.PID)} {
		if out, err := bob.Command(nil, "cat", p).CombinedOutput(); err == nil {
			t.Errorf("bob reads %s: %q", p, out)
		}
	}
}

// legacyTmpRuntimeDir is the name the runtime directory had under suEXEC
// before item 2's fix, which any local user can compute from the public
// path of the config.
func legacyTmpRuntimeDir(u *peertest.User, site string) string {
	sum := sha256.Sum256([]byte(filepath.Join(site, "mysite.toml")))
	return fmt.Sprintf("/tmp/fcgishim-%d-%s", u.UID, hex.EncodeToString(sum[:6]))
}

// supervisorRuntimeDir finds the runtime directory the live site uses,
// from the environment of u's app supervisor.
func supervisorRuntimeDir(t *testing.T, u *peertest.User) string {
	t.Helper()
	for _, pid := range u.Processes() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(cmdline), "_supervise") {
			continue
		}
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range strings.Split(string(environ), "\x00") {
			if d, ok := strings.CutPrefix(kv, "FCGISHIM_RUNTIME_DIR="); ok {
				return d
			}
		}
	}
	t.Fatalf("no supervisor of %s with FCGISHIM_RUNTIME_DIR", u.Name)
	return ""
}

// Item 2 of the shared-host review: a neighbour on the same machine cannot
// take the site down by creating directories where the site would put its
// private runtime directory, before a cold start or against a live site
// whose directory was cleaned away.
func TestSuexecNeighbourCannotTakeSiteDown(t *testing.T) {
	t.Run("cold start", func(t *testing.T) {
		alice, bob := peertest.NewUser(t, "alice"), peertest.NewUser(t, "bob")
		h := peertest.Suexec(t, peertest.SuexecOptions{})
		site := suexecAppSite(t, alice, "")
		squat := legacyTmpRuntimeDir(alice, site)
		bob.Run(t, "mkdir", "-m", "0700", squat)
		a := getApp(t, h, h.UserURL(alice, "/mysite/"))
		if a.UID != alice.UID {
			t.Errorf("app runs as uid %d", a.UID)
		}
		dir := supervisorRuntimeDir(t, alice)
		if strings.HasPrefix(dir, "/tmp/") {
			t.Errorf("runtime dir %s is in /tmp, where neighbours write", dir)
		}
		// Nor can bob reach the app behind the site's back, or list or
		// read its private state.
		socks, _ := filepath.Glob(filepath.Join(dir, "app-*.sock"))
		if len(socks) == 0 {
			t.Fatalf("no app socket in %s", dir)
		}
		connect := "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
		for _, argv := range [][]string{{"python3", "-c", connect, socks[0]}, {"ls", dir}, {"cat", filepath.Join(dir, "state.json")}} {
			if out, err := bob.Command(nil, argv[0], argv[1:]...).CombinedOutput(); err == nil {
				t.Errorf("bob: %s succeeded: %s", strings.Join(argv, " "), out)
			}
		}
	})
	t.Run("live site", func(t *testing.T) {
		alice, bob := peertest.NewUser(t, "alice"), peertest.NewUser(t, "bob")
		h := peertest.Suexec(t, peertest.SuexecOptions{})
		site := suexecAppSite(t, alice, "")
		url := h.UserURL(alice, "/mysite/")
		first := getApp(t, h, url)
		dir := supervisorRuntimeDir(t, alice)
		// A cleaner removes the directory; the neighbour is quick to take
		// its name, and the /tmp name, before the site notices.
		for deadline := time.Now().Add(10 * time.Second); ; {
			out, err := alice.Command(nil, "rm", "-rf", dir).CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rm -rf %s: %v %s", dir, err, out)
			}
		}
		for _, d := range []string{dir, legacyTmpRuntimeDir(alice, site)} {
			_ = bob.Command(nil, "mkdir", "-m", "0700", d).Run() // refused where bob may not write
		}
		deadline := time.Now().Add(20 * time.Second)
		for getApp(t, h, url).PID == first.PID {
			if time.Now().After(deadline) {
				t.Fatalf("the app of the removed directory still answers after 20s")
			}
			time.Sleep(20 * time.Millisecond) // polling: copies look at the state every 50ms
		}
		for i := 0; i < 20; i++ {
			getApp(t, h, url)
		}
	})
}
