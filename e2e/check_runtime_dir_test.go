package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// siteSupervisorRuntimeDir is FCGISHIM_RUNTIME_DIR of the supervisor whose
// command line names site, waiting for it to appear.
func siteSupervisorRuntimeDir(t *testing.T, site string) (dir string, uid int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(cl), "_supervise") || !strings.Contains(string(cl), site) {
				continue
			}
			environ, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
			for _, kv := range strings.Split(string(environ), "\x00") {
				if d, ok := strings.CutPrefix(kv, "FCGISHIM_RUNTIME_DIR="); ok {
					var pid int
					fmt.Sscan(e.Name(), &pid)
					uid, _ := peertest.ProcessUID(pid)
					return d, uid
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no supervisor for %s", site)
		}
		time.Sleep(50 * time.Millisecond) // polling for the supervisor to start
	}
}

// Under plain mod_fcgid (no suEXEC) the site runs as the web server's user:
// check, run as root on alice's site, names the runtime directory the live
// site's supervisor (www-data) actually uses, not root's or alice's.
func TestCheckPredictsRuntimeDirPlainFcgid(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	site := suexecAppSite(t, alice, "idle_stop = \"1s\"\n")
	t.Cleanup(func() { waitAppsGone(t, site) }) // runs after Apache's cleanup, registered later
	h := peertest.Apache(t, []string{"userdir", "fcgid", "rewrite", "suexec"}, `
Suexec Off
UserDir public_html
FcgidIPCDir {{DIR}}/fcgid
FcgidProcessTableFile {{DIR}}/fcgid_shm
<Directory /home/*/public_html>
    AllowOverride All
    Options SymLinksIfOwnerMatch
    Require all granted
</Directory>
`)
	cmd := exec.Command(filepath.Join(site, "mysite.fcgi"), "check", site, "--suexec", "off")
	cmd.Env = []string{"HOME=/root", "USER=root", "LOGNAME=root", "PATH=/usr/local/bin:/usr/bin:/bin"}
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`(?m)^\[(?:ok|FAIL|warn)\]\s+runtime directory (\S+) \(the site runs as the web server's user www-data, uid 33\)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("check names no runtime directory for www-data:\n%s", out)
	}
	a := getApp(t, &peertest.SuexecHost{Server: h}, h.URL+"/~"+alice.Name+"/mysite/")
	live, uid := siteSupervisorRuntimeDir(t, site)
	if a.UID != 33 || uid != 33 {
		t.Errorf("app uid %d, supervisor uid %d: want www-data's 33 (no suEXEC)", a.UID, uid)
	}
	if live != m[1] {
		t.Errorf("check reports %s, the live supervisor uses %s:\n%s", m[1], live, out)
	}
}

// A home the web server cannot enter (0700, as Debian's adduser makes it)
// is a 403 for every page, suEXEC or not; check names it and the fix the
// README gives (chmod 711 ~), and the fix run as printed makes the site
// answer.
func TestCheckHomeNotEnterable(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	site := alice.InstallSite(t, binary(t), "mysite")
	alice.Run(t, "chmod", "700", alice.Home)
	out, failed := checkAs(t, alice, site, "")
	line := failLine(out, "the web server's user www-data cannot enter "+alice.Home+" (mode 0700)")
	if !failed || !strings.Contains(line, "fix: chmod 711 ~") {
		t.Errorf("check does not fail naming the home and chmod 711 ~:\n%s", out)
	}
	c := &http.Client{Timeout: 20 * time.Second}
	if code, _ := peertest.Get(t, c, h.UserURL(alice, "/mysite/")); code != 403 {
		t.Errorf("home 0700: the site answers %d, want the 403 check predicts", code)
	}
	alice.Shell(t, "chmod 711 ~")
	wantInfoAs(t, h.UserURL(alice, "/mysite/"), alice.UID, func() string { return h.Log() + h.SuexecLog() })
	if out, _ := checkAs(t, alice, site, ""); !strings.Contains(out, "[ok]   the web server's user www-data can enter every directory down to "+site) {
		t.Errorf("after chmod 711 ~, check does not say the site is reachable:\n%s", out)
	}
}
