package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// On the suEXEC host, alice uploads a new build and installs it with the
// README's command: the app's supervisor is then the new binary (not the
// deleted old one), runs as alice, and no request fails meanwhile.
func TestSuexecBinaryUpgrade(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	site := suexecAppSite(t, alice, "")
	cfgPath := filepath.Join(site, "mysite.toml")
	bin := filepath.Join(site, "mysite.fcgi")
	url := h.UserURL(alice, "/mysite/")
	first := getApp(t, h, url)
	before := supervisors(cfgPath)
	if len(before) != 1 {
		t.Fatalf("supervisors before the upgrade: %v, want one", before)
	}

	c := &http.Client{Timeout: 40 * time.Second}
	ld := startLoad(c, url, 1)
	// A new build: the same program with bytes appended (the ELF loader
	// ignores them), so install sees new content and renames it in.
	data, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	alice.WriteFile(t, "mysite.fcgi", append(data, "\nnew build\n"...), 0o755)
	alice.Shell(t, "./mysite.fcgi install ~/public_html/mysite")
	var now map[int]string
	peertest.Eventually(t, 60*time.Second, "one supervisor, running the new binary", func() bool {
		now = supervisors(cfgPath)
		if len(now) != 1 {
			return false
		}
		for pid, exe := range now {
			return before[pid] == "" && exe == bin
		}
		return false
	})
	n, failures := ld.finish()
	t.Logf("%d requests during the upgrade", n)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first: %s\n%s", len(failures), n, failures[0], h.Log())
	}
	for pid := range now {
		if uid, ok := peertest.ProcessUID(pid); !ok || uid != alice.UID {
			t.Errorf("the new supervisor %d runs as uid %d, want alice's %d", pid, uid, alice.UID)
		}
	}
	if a := getApp(t, h, url); a.PID == first.PID || a.UID != alice.UID {
		t.Errorf("after the upgrade: app pid %d uid %d; want a new app (not %d) as uid %d", a.PID, a.UID, first.PID, alice.UID)
	}
}
