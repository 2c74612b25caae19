package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// envApp answers every request with who it runs as and the HOME, USER and
// LOGNAME of its environment.
const envApp = `import json, os, socketserver, sys
from http.server import BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({"uid": os.getuid(), "home": os.environ.get("HOME", ""),
                        "user": os.environ.get("USER", ""), "logname": os.environ.get("LOGNAME", "")}).encode()
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

// serve started by root with --user switches to that user once its socket
// exists; the app it starts then runs as the user and its environment
// names the user (HOME from the password database, USER, LOGNAME), not
// root's.
func TestServeUserNamesUserInAppEnv(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	site := filepath.Join(alice.Home, "site")
	alice.Run(t, "mkdir", "-m", "0755", site)
	data, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	alice.WriteFile(t, filepath.Join(site, "mysite.fcgi"), data, 0o755)
	alice.WriteFile(t, filepath.Join(site, "app.py"), []byte(envApp), 0o644)
	alice.WriteFile(t, filepath.Join(site, "mysite.toml"), []byte("[app]\ncommand = [\"python3\", \"app.py\", \"{socket}\"]\n"), 0o644)

	port := peertest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(filepath.Join(site, "mysite.fcgi"), "serve", "--http", addr, "--user", alice.Name)
	cmd.Env = []string{"HOME=/root", "USER=root", "LOGNAME=root", "PATH=/usr/local/bin:/usr/bin:/bin"}
	cmd.Dir = site
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	exited := startUntilCleanup(t, cmd, nil)
	waitDial(t, "tcp", addr, exited, logPath)

	code, body := peertest.Get(t, &http.Client{Timeout: 30 * time.Second}, "http://"+addr+"/")
	var got struct {
		UID                 int
		Home, User, Logname string
	}
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("GET /: %d %.300s\n%s", code, body, log)
	}
	want := got
	want.UID, want.Home, want.User, want.Logname = alice.UID, alice.Home, alice.Name, alice.Name
	if got != want {
		t.Errorf("the app runs as uid %d with HOME=%q USER=%q LOGNAME=%q, want uid %d, %q, %q, %q",
			got.UID, got.Home, got.User, got.Logname, alice.UID, alice.Home, alice.Name, alice.Name)
	}
}
