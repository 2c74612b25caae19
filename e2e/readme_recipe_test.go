package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// debianUserdirConf is Debian's own mods-available/userdir.conf, the
// <Directory /home/*/public_html> of a default Apache.
const debianUserdirConf = "/etc/apache2/mods-available/userdir.conf"

// readmeHostRecipe returns the README's shared-hosting commands that run on the
// host (the ./mysite.fcgi lines of the first sh block after "## Shared
// hosting") and the AllowOverride line it tells a Debian host to use.
func readmeHostRecipe(t *testing.T) (cmds []string, hostLine string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, sec, ok := strings.Cut(readme, "\n## Shared hosting")
	if !ok {
		t.Fatal("README.md has no \"## Shared hosting\" section")
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(sec)
	if block == nil {
		t.Fatal("the shared-hosting section has no sh block")
	}
	for _, l := range strings.Split(block[1], "\n") {
		if strings.HasPrefix(l, "./mysite.fcgi ") {
			cmds = append(cmds, l)
		}
	}
	m := regexp.MustCompile("(?s)userdir\\.conf.*?```apache\n(\\s*AllowOverride [^\n]*)\n```").FindStringSubmatch(sec)
	if len(cmds) < 2 || m == nil {
		t.Fatalf("want the install and check lines and Debian's AllowOverride line in the shared-hosting section, got %q and %v", cmds, m)
	}
	return cmds, strings.TrimSpace(m[1])
}

// followRecipe runs the README's commands literally as u, in u's login
// shell, with the built binary at ~/mysite.fcgi. check must find nothing
// to fail.
func followRecipe(t *testing.T, u *peertest.User, cmds []string) {
	t.Helper()
	data, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	u.WriteFile(t, "mysite.fcgi", data, 0o755)
	for _, c := range cmds {
		out := u.Shell(t, c)
		if strings.Contains(c, " check ") && !strings.Contains(out, "\n0 failed,") {
			t.Errorf("%s: fails:\n%s", c, out)
		}
	}
}

// debianDirectives reads AllowOverride and Options from Debian's
// userdir.conf.
func debianDirectives(t *testing.T) (allowOverride, options string) {
	t.Helper()
	b, err := os.ReadFile(debianUserdirConf)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Debian's userdir.conf (apache2): %v", err)
		}
		t.Skipf("no Debian userdir.conf: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == "AllowOverride" {
			allowOverride = strings.Join(f[1:], " ")
		}
		if len(f) > 1 && f[0] == "Options" {
			options = strings.Join(f[1:], " ")
		}
	}
	return allowOverride, options
}

// wantInfoAs asserts the info page answers at url from a process of uid.
func wantInfoAs(t *testing.T, url string, uid int, logs func() string) {
	t.Helper()
	in, _, err := getInfo(&http.Client{Timeout: 20 * time.Second}, "GET", url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, logs())
	}
	if got, ok := peertest.ProcessUID(in.PID); !ok || got != uid {
		t.Errorf("served by pid %d as uid %d, want uid %d", in.PID, got, uid)
	}
}

// wantOptionsRefused asserts what the README says of Debian's defaults: the
// printed recipe gets a 500 with "Options not allowed here" in the log.
func wantOptionsRefused(t *testing.T, url string, logs func() string) {
	t.Helper()
	code, body := peertest.Get(t, &http.Client{Timeout: 20 * time.Second}, url)
	if code != 500 || !strings.Contains(logs(), "Options not allowed here") {
		t.Errorf("Debian's default userdir.conf: GET %s answered %d (%.100s), want 500 with \"Options not allowed here\" as the README says:\n%s", url, code, body, logs())
	}
}

// The README's shared-hosting recipe, as printed, by a throwaway user:
// on a suEXEC host built for it (AllowOverride All), and on Debian's
// default Apache + mod_fcgid with and without suEXEC, where it fails as the
// README says until the AllowOverride line the README gives is in place.
func TestReadmeSharedHostingRecipe(t *testing.T) {
	cmds, hostLine := readmeHostRecipe(t)
	t.Run("suEXEC host, AllowOverride All", func(t *testing.T) {
		alice := peertest.NewUser(t, "alice")
		h := peertest.Suexec(t, peertest.SuexecOptions{})
		followRecipe(t, alice, cmds)
		wantInfoAs(t, h.UserURL(alice, "/mysite/"), alice.UID, func() string { return h.Log() + h.SuexecLog() })
	})
	t.Run("suEXEC host, Debian's userdir.conf", func(t *testing.T) {
		override, options := debianDirectives(t)
		alice := peertest.NewUser(t, "alice")
		h := peertest.Suexec(t, peertest.SuexecOptions{AllowOverride: override, Options: options})
		followRecipe(t, alice, cmds)
		wantOptionsRefused(t, h.UserURL(alice, "/mysite/"), h.Log)
		fixed := peertest.Suexec(t, peertest.SuexecOptions{AllowOverride: strings.TrimPrefix(hostLine, "AllowOverride "), Options: options})
		wantInfoAs(t, fixed.UserURL(alice, "/mysite/"), alice.UID, func() string { return fixed.Log() + fixed.SuexecLog() })
	})
	t.Run("Debian's default Apache, mod_fcgid, no suEXEC", func(t *testing.T) {
		conf, err := os.ReadFile(debianUserdirConf)
		if err != nil {
			debianDirectives(t) // skips, or fails under CI
		}
		alice := peertest.NewUser(t, "alice")
		// Debian's apache2 without an apache2-suexec-* package: this
		// machine has one installed, and Apache then runs every ~user
		// program through it (mod_suexec or not) unless "Suexec Off".
		start := func(userdir string) *peertest.Server {
			return peertest.Apache(t, []string{"userdir", "fcgid", "rewrite", "suexec"}, userdir+`
Suexec Off
FcgidIPCDir {{DIR}}/fcgid
FcgidProcessTableFile {{DIR}}/fcgid_shm
Include /etc/apache2/mods-available/fcgid.conf
`)
		}
		h := start(string(conf))
		followRecipe(t, alice, cmds)
		url := h.URL + "/~" + alice.Name + "/mysite/"
		wantOptionsRefused(t, url, h.Log)
		fixedConf := regexp.MustCompile(`(?m)^\s*AllowOverride .*$`).ReplaceAllString(string(conf), "\t"+hostLine)
		fixed := start(fixedConf)
		wantInfoAs(t, fixed.URL+"/~"+alice.Name+"/mysite/", 33, fixed.Log)
		// The README's alternative: the host enables ExecCGI itself and
		// the site deletes its Options line.
		execConf := regexp.MustCompile(`(?m)^(\s*Options .*)$`).ReplaceAllString(string(conf), "$1 ExecCGI")
		other := start(execConf)
		otherURL := other.URL + "/~" + alice.Name + "/mysite/"
		wantOptionsRefused(t, otherURL, other.Log)
		alice.Shell(t, "sed -i '/^Options +ExecCGI$/d' ~/public_html/mysite/.htaccess")
		wantInfoAs(t, otherURL, 33, other.Log)
	})
}
