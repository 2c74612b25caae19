package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// checkAs runs `mysite.fcgi check SITE --suexec on` as u from u's login
// shell (with extra PATH entries first) and returns its output.
func checkAs(t *testing.T, u *peertest.User, site, pathFirst string, args ...string) (string, bool) {
	t.Helper()
	env := u.LoginEnv()
	if pathFirst != "" {
		for i, kv := range env {
			if strings.HasPrefix(kv, "PATH=") {
				env[i] = "PATH=" + pathFirst + ":" + strings.TrimPrefix(kv, "PATH=")
			}
		}
	}
	args = append([]string{"check", site, "--suexec", "on"}, args...)
	out, err := u.Command(env, filepath.Join(site, "mysite.fcgi"), args...).CombinedOutput()
	return string(out), err != nil
}

// failLine returns the [FAIL] line of out containing want, with its fix.
func failLine(out, want string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "[FAIL]") && strings.Contains(l, want) {
			if i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "fix:") {
				return l + "\n" + lines[i+1]
			}
			return l
		}
	}
	return ""
}

// Each suEXEC refusal that check predicts is a real 500 on a suEXEC host,
// with the same rule in suexec.log (issue 9, item 4).
func TestSuexecCheckPredicts500(t *testing.T) {
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	cases := []struct {
		name    string
		brk     func(t *testing.T, u *peertest.User, site string)
		check   string // in check's [FAIL] line
		fix     string // in its fix
		suexecd string // in suexec.log
		probe   string // the cause check --url names for the 500
	}{
		{"program's group is the web server's", func(t *testing.T, u *peertest.User, site string) {
			if err := os.Lchown(filepath.Join(site, "mysite.fcgi"), u.UID, 33); err != nil {
				t.Fatal(err)
			}
		}, "target uid/gid mismatch", "chown ", "mismatch with directory", "suEXEC refuses to run mysite.fcgi (target uid/gid mismatch)"},
		{"symlinked program", func(t *testing.T, u *peertest.User, site string) {
			u.Shell(t, "cd "+site+" && mv mysite.fcgi real.fcgi && ln -s real.fcgi mysite.fcgi")
		}, "cannot stat program", "cp --remove-destination", "cannot stat program", "suEXEC refuses to run mysite.fcgi (cannot stat program)"},
		{"group-writable directory", func(t *testing.T, u *peertest.User, site string) {
			u.Shell(t, "chmod 775 "+site)
		}, "directory ", "chmod go-w", "directory is writable by others", "the binary did not start: suEXEC refused it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := peertest.NewUser(t, "site")
			site := u.InstallSite(t, binary(t), "mysite")
			tc.brk(t, u, site)
			out, failed := checkAs(t, u, site, "", "--url", h.UserURL(u, "/mysite/"))
			line := failLine(out, tc.check)
			if !failed || line == "" || !strings.Contains(line, tc.fix) {
				t.Errorf("check does not fail with %q (fix %q):\n%s", tc.check, tc.fix, out)
			}
			if tc.probe != "" && failLine(out, "live: GET "+h.UserURL(u, "/mysite/")+" answered 500 Internal Server Error: "+tc.probe) == "" {
				t.Errorf("the live probe does not name %q:\n%s", tc.probe, out)
			}
			code, body := peertest.Get(t, &http.Client{Timeout: 20 * time.Second}, h.UserURL(u, "/mysite/"))
			if code != 500 {
				t.Errorf("the site answers %d, want the 500 check predicts: %.200s", code, body)
			}
			if log := h.SuexecLog(); !strings.Contains(log, tc.suexecd) {
				t.Errorf("suexec.log has no %q:\n%s", tc.suexecd, log)
			}
		})
	}
}

// A command that only the login shell finds (~/.local/bin, where pip
// install --user puts gunicorn) fails check, naming the file; the real
// site answers "the app's command was not found" (issue 9, item 3).
func TestSuexecCheckUsesSuexecPath(t *testing.T) {
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	u := peertest.NewUser(t, "site")
	site := u.InstallSite(t, binary(t), "mysite")
	u.Shell(t, "mkdir -p ~/.local/bin && printf '#!/bin/sh\\nexec python3 -m http.server --bind 127.0.0.1 \"$1\"\\n' > ~/.local/bin/myapp-serve && chmod 755 ~/.local/bin/myapp-serve")
	u.WriteFile(t, filepath.Join(site, "mysite.toml"), []byte("[app]\ncommand = [\"myapp-serve\", \"{port}\"]\n"), 0o644)
	local := filepath.Join(u.Home, ".local", "bin")
	out, failed := checkAs(t, u, site, local)
	line := failLine(out, `app command "myapp-serve" is `+filepath.Join(local, "myapp-serve")+" in your login shell's PATH")
	if !failed || line == "" || !strings.Contains(line, "PATH=/usr/local/bin:/usr/bin:/bin") || !strings.Contains(line, `[app] env = { PATH = "`+local+":") {
		t.Errorf("check does not fail naming the file and the fixes:\n%s", out)
	}
	code, body := peertest.Get(t, &http.Client{Timeout: 20 * time.Second}, h.UserURL(u, "/mysite/"))
	if code < 500 || !strings.Contains(body, "command was not found") {
		t.Errorf("the site answers %d %.300s; check's prediction was \"command was not found\"", code, body)
	}
}

var reRuntimeDirLine = regexp.MustCompile(`(?m)^\[(?:ok|FAIL|warn)\]\s+runtime directory (\S+) \(the site runs as ([^)]*)\)`)

// check run as root on a user's site reports the runtime directory the
// live site uses: the rule evaluated for the site's user (uid and home
// from the password database, suEXEC's bare environment), not for root's
// HOME (issue 9, item 2's follow-up).
func TestSuexecCheckAsRootPredictsRuntimeDir(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	h := peertest.Suexec(t, peertest.SuexecOptions{})
	site := suexecAppSite(t, alice, "")
	cmd := exec.Command(filepath.Join(site, "mysite.fcgi"), "check", site, "--suexec", "on")
	cmd.Env = []string{"HOME=/root", "USER=root", "LOGNAME=root", "PATH=/usr/local/bin:/usr/bin:/bin"}
	out, _ := cmd.CombinedOutput()
	m := reRuntimeDirLine.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("check names no runtime directory:\n%s", out)
	}
	if !strings.Contains(m[2], "uid "+strconv.Itoa(alice.UID)) {
		t.Errorf("check evaluates the rule for %q, want alice's uid %d", m[2], alice.UID)
	}
	getApp(t, h, h.UserURL(alice, "/mysite/"))
	if live := supervisorRuntimeDir(t, alice); live != m[1] {
		t.Errorf("check (as root) reports runtime directory %s, the live site uses %s:\n%s", m[1], live, out)
	}
}
