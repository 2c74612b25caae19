package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// suexecWSGIApp is a WSGI app in alice's home: who runs it, and the
// visitor's address it sees.
const suexecWSGIApp = `import json, os

def application(environ, start_response):
    b = json.dumps({"uid": os.getuid(), "remote_addr": environ["REMOTE_ADDR"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(b)))])
    return [b]
`

// [app] wsgi under suEXEC: the default python3 is found on suEXEC's safe
// PATH, the runner runs as the site's user from a 0600 file in the site's
// private runtime directory, which a neighbour cannot read.
func TestSuexecWSGIRunner(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	bob := peertest.NewUser(t, "bob")
	site := alice.InstallSite(t, binary(t), "mysite")
	alice.WriteFile(t, "wsgiapp.py", []byte(suexecWSGIApp), 0o644)
	alice.WriteFile(t, filepath.Join(site, "mysite.toml"), []byte(fmt.Sprintf(
		"[app]\nwsgi = \"wsgiapp\"\nworkers = 1\nworkdir = %q\n", alice.Home)), 0o644)
	url := h.UserURL(alice, "/mysite/")
	code, body := peertest.Get(t, &http.Client{Timeout: 40 * time.Second}, url)
	var a struct {
		UID        int    `json:"uid"`
		RemoteAddr string `json:"remote_addr"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &a) != nil {
		t.Fatalf("GET %s: %d %.500s\n%s\n%s", url, code, body, h.Log(), h.SuexecLog())
	}
	if a.UID != alice.UID || a.RemoteAddr != "127.0.0.1" {
		t.Fatalf("the WSGI app ran as uid %d and saw REMOTE_ADDR %q, want %d and the test client's 127.0.0.1", a.UID, a.RemoteAddr, alice.UID)
	}
	runner := filepath.Join(supervisorRuntimeDir(t, alice), "wsgi-runner.py")
	fi, err := os.Stat(runner)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || int(st.Uid) != alice.UID {
		t.Fatalf("%s: mode %v owner %d, want 0600 and %d", runner, fi.Mode().Perm(), st.Uid, alice.UID)
	}
	if out, err := bob.Command(nil, "cat", runner).CombinedOutput(); err == nil {
		t.Errorf("bob reads %s: %.100q", runner, out)
	}
}
