package main

import (
	"net/http"
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
