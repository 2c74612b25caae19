package handler

import (
	"context"
	"fmt"
	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/internal/peertest"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testWSGI = `import json, os
def application(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "wsgi.url_scheme", "REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")} | {"pid": os.getpid(), "ppid": os.getppid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
`

// A real gunicorn behind the proxy: the SCRIPT_NAME header becomes the
// WSGI SCRIPT_NAME, PATH_INFO is the path below it, and the master and its
// workers are gone once the site is idle.
func TestGunicornScriptName(t *testing.T) {
	gunicorn := peertest.Need(t, "gunicorn")[0]
	wd := t.TempDir()
	must(t, os.WriteFile(filepath.Join(wd, "wsgi.py"), []byte(testWSGI), 0o644))
	s := newTestSite(t, "", fmt.Sprintf("command = [%q, \"--bind\", \"unix:{socket}\", \"--workers\", \"2\", \"wsgi:application\"]\nworkdir = %q\n", gunicorn, wd))
	site, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/x?a=b", nil)
	req.Header.Set("X-Forwarded-For", "1.2.3.4")
	var env map[string]any
	getJSON(t, req, &env)
	want := map[string]any{"SCRIPT_NAME": "/mysite", "PATH_INFO": "/x", "QUERY_STRING": "a=b",
		"wsgi.url_scheme": "http", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("environ[%s] = %v, want %v", k, env[k], v)
		}
	}
	master := int(env["ppid"].(float64))
	srv.Close()
	site.Close(context.Background())
	s.waitGone()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range []int{master, int(env["pid"].(float64))} {
		for appctl.Alive(pid) && !isZombie(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("gunicorn process %d still running after the site went idle", pid)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition
		}
	}
}
