package deploy

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

const debianSuexecV = ` -D AP_DOC_ROOT="/var/www"
 -D AP_GID_MIN=100
 -D AP_HTTPD_USER="www-data"
 -D AP_LOG_EXEC="/var/log/apache2/suexec.log"
 -D AP_SAFE_PATH="/usr/local/bin:/usr/bin:/bin"
 -D AP_UID_MIN=100
 -D AP_USERDIR_SUFFIX="public_html"
`

func TestParseSuexecV(t *testing.T) {
	conf, err := parseSuexecV(debianSuexecV)
	if err != nil || conf != debianSuexec() {
		t.Fatalf("Debian's output: %+v, %v", conf, err)
	}
	conf, err = parseSuexecV(" -D AP_DOC_ROOT=/srv/www\n -D AP_UID_MIN=1000\n -D SOMETHING_NEW=1\n")
	if err != nil || conf.DocRoot != "/srv/www" || conf.UIDMin != 1000 || conf.GIDMin != 100 {
		t.Fatalf("unquoted values over Debian's: %+v, %v", conf, err)
	}
	for _, bad := range []string{"", "suexec policy violation: see suexec log for more details\n", " -D AP_UID_MIN=lots\n"} {
		if _, err := parseSuexecV(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseSuexecV(f *testing.F) {
	f.Add(debianSuexecV)
	f.Add(" -D AP_UID_MIN=\"7\"\n-D AP_DOC_ROOT=\n")
	f.Fuzz(func(t *testing.T, s string) {
		conf, err := parseSuexecV(s)
		if err == nil && !strings.Contains(s, "-D ") {
			t.Fatalf("accepted %q without a -D line: %+v", s, conf)
		}
	})
}

// site makes dir/site with an executable mysite.fcgi, owned by the ids the
// test can give them (as root: 4242/4242, a made-up ordinary user).
func site(t *testing.T) (dir, prog string, target siteUser) {
	t.Helper()
	dir = filepath.Join(peertest.Dir(t), "site") // others may traverse its parents
	prog = filepath.Join(dir, "mysite.fcgi")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	target = siteUser{uid: os.Getuid(), gid: os.Getgid()}
	if os.Getuid() == 0 {
		target = siteUser{uid: 4242, gid: 4242}
		for _, p := range []string{dir, prog} {
			if err := os.Lchown(p, 4242, 4242); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir, prog, target
}

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root")
		}
		t.Skip("needs root (chown)")
	}
}

// One case per suEXEC rule check can see: files arranged to break it, and
// the rule's name as suexec.log words it.
func TestSuexecRefusals(t *testing.T) {
	cases := []struct {
		name string
		root bool
		brk  func(t *testing.T, dir, prog string, u *suexecUse)
		rule string // "" = passes
		fix  string
	}{
		{"all good", false, func(*testing.T, string, string, *suexecUse) {}, "", ""},
		{"symlinked program", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			real := filepath.Join(dir, "real.fcgi")
			os.Rename(prog, real)
			if err := os.Symlink("real.fcgi", prog); err != nil {
				t.Fatal(err)
			}
		}, "cannot stat program", "cp --remove-destination"},
		{"setuid program", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			if err := os.Chmod(prog, 0o755|os.ModeSetuid); err != nil {
				t.Fatal(err)
			}
		}, "file is either setuid or setgid", "chmod ug-s"},
		{"program's group differs", true, func(t *testing.T, dir, prog string, u *suexecUse) {
			os.Lchown(prog, u.target.uid, 33)
		}, "target uid/gid mismatch", "chown"},
		{"program's owner differs", true, func(t *testing.T, dir, prog string, u *suexecUse) {
			os.Lchown(prog, 4343, u.target.gid)
		}, "target uid/gid mismatch", "chown"},
		{"directory's group differs", true, func(t *testing.T, dir, prog string, u *suexecUse) {
			os.Lchown(dir, u.target.uid, 33)
		}, "target uid/gid mismatch", "chown"},
		{"outside the docroot", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			u.conf.DocRoot = "/var/www"
		}, "command not in docroot", "install the site below /var/www"},
		{"outside the userdir", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			u.userdir, u.target.home = true, t.TempDir()
		}, "command not in docroot", "public_html"},
		{"uid below the minimum", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			u.conf.UIDMin = u.target.uid + 1
		}, "cannot run as forbidden uid", "uid"},
		{"gid below the minimum", false, func(t *testing.T, dir, prog string, u *suexecUse) {
			u.conf.GIDMin = u.target.gid + 1
		}, "cannot run as forbidden gid", "gid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				needRoot(t)
			}
			dir, prog, target := site(t)
			conf := debianSuexec()
			conf.DocRoot, conf.UIDMin, conf.GIDMin = filepath.Dir(dir), 1, 0
			if target.gid == 0 {
				conf.GIDMin = 0
			}
			u := suexecUse{on: true, conf: conf, target: target}
			tc.brk(t, dir, prog, &u)
			rs := suexecRefusals(dir, prog, u)
			if tc.rule == "" {
				if len(rs) > 0 {
					t.Fatalf("refusals for a good site: %+v", rs)
				}
				return
			}
			for _, r := range rs {
				if r.rule == tc.rule && strings.Contains(r.fix, tc.fix) {
					return
				}
			}
			t.Fatalf("want rule %q with fix containing %q, got %+v", tc.rule, tc.fix, rs)
		})
	}
}

// The group mismatch is worded as suexec.log words it, so the check line
// and the log line can be matched by a person.
func TestSuexecMismatchWording(t *testing.T) {
	needRoot(t)
	dir, prog, target := site(t)
	os.Lchown(prog, target.uid, 33)
	r, ok := ownerMismatch(dir, prog, lstat(t, prog), target)
	if ok || !strings.Contains(r.msg, "target uid/gid (4242/4242) mismatch with directory (4242/4242) or program (4242/33)") {
		t.Fatalf("%v %+v", ok, r)
	}
}

func lstat(t *testing.T, p string) os.FileInfo {
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// detectSuexec reads the host's Apache config: a fake suexec helper and
// an Apache directory arranged per case.
func TestDetectSuexec(t *testing.T) {
	dir, _, _ := site(t)
	fake := func(t *testing.T, script string) string {
		p := filepath.Join(t.TempDir(), "suexec")
		os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755)
		return p
	}
	apache := func(t *testing.T, files ...string) string {
		d := t.TempDir()
		for _, f := range files {
			os.MkdirAll(filepath.Join(d, filepath.Dir(f)), 0o755)
			os.WriteFile(filepath.Join(d, f), []byte("<VirtualHost *:80>\n  SuexecUserGroup alice alice\n</VirtualHost>\n"), 0o644)
		}
		return d
	}
	readable := fake(t, "cat <<'EOF'\n -D AP_SAFE_PATH=\"/opt/bin:/usr/bin\"\n -D AP_UID_MIN=500\nEOF\n")
	refused := fake(t, "exit 1\n")
	cases := []struct {
		name         string
		o            CheckOptions
		on           bool
		why, confSrc string
	}{
		{"no Apache config visible", CheckOptions{SuexecBin: readable, ApacheDir: "/nonexistent"}, true, "assuming suEXEC", "-V"},
		{"module not enabled", CheckOptions{SuexecBin: readable, ApacheDir: apache(t, "mods-available/suexec.load")}, false, "not enabled", "-V"},
		{"enabled, no userdir, no SuexecUserGroup", CheckOptions{SuexecBin: readable, ApacheDir: apache(t, "mods-enabled/suexec.load")}, false, "no ~user site", "-V"},
		{"enabled with SuexecUserGroup", CheckOptions{SuexecBin: readable, ApacheDir: apache(t, "mods-enabled/suexec.load", "sites-enabled/alice.conf")}, true, "SuexecUserGroup", "-V"},
		{"suexec -V refused", CheckOptions{SuexecBin: refused, ApacheDir: apache(t, "mods-enabled/suexec.load", "sites-enabled/alice.conf")}, true, "SuexecUserGroup", "assumed: Debian"},
		{"no suexec helper", CheckOptions{SuexecBin: "/nonexistent/suexec", ApacheDir: apache(t, "mods-enabled/suexec.load")}, false, "no /nonexistent/suexec", "assumed"},
		{"forced on", CheckOptions{Suexec: "on", SuexecBin: refused, ApacheDir: "/nonexistent"}, true, "--suexec on", "assumed"},
		{"forced off", CheckOptions{Suexec: "off", SuexecBin: readable, ApacheDir: "/nonexistent"}, false, "--suexec off", "-V"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dir = dir
			c := newChecker(tc.o)
			u := c.suexec
			if u.on != tc.on || !strings.Contains(u.why, tc.why) || !strings.Contains(u.confFrom, tc.confSrc) {
				t.Fatalf("on=%v why=%q conf from %q", u.on, u.why, u.confFrom)
			}
			if strings.HasSuffix(tc.confSrc, "-V") && (u.conf.SafePath != "/opt/bin:/usr/bin" || u.conf.UIDMin != 500) {
				t.Errorf("rules not read from -V: %+v", u.conf)
			}
			if tc.on && c.env.getenv("PATH") != u.conf.SafePath || len(c.env.vars) != 1 {
				t.Errorf("environment under suEXEC: %v", c.env.vars)
			}
		})
	}
}

// A command found only in the login shell's PATH (~/.local/bin) fails,
// naming the file and both fixes; [app] env's PATH or a full path pass.
func TestCheckCommandUnderServerEnv(t *testing.T) {
	dir, _, _ := site(t)
	local := filepath.Join(t.TempDir(), ".local", "bin")
	os.MkdirAll(local, 0o755)
	gunicorn := filepath.Join(local, "gunicorn-fcgishim-test")
	os.WriteFile(gunicorn, []byte("#!/bin/sh\n"), 0o755)
	python := filepath.Join(local, "python-fcgishim-test")
	os.WriteFile(python, []byte("#!/bin/sh\n"), 0o755)
	loginPath := local + ":/usr/local/bin:/usr/bin:/bin"
	cases := []struct {
		toml string
		want []string
	}{
		{`[app]
command = ["gunicorn-fcgishim-test", "--bind", "unix:{socket}"]
`, []string{"[FAIL] app command \"gunicorn-fcgishim-test\" is " + gunicorn + " in your login shell's PATH", "PATH=/usr/local/bin:/usr/bin:/bin (suEXEC gives",
			"line 2 of", "fix: give the full path: command = [\"" + gunicorn + "\"", `[app] env = { PATH = "` + local + `:/usr/local/bin:/usr/bin:/bin" }`}},
		{`[app]
command = ["gunicorn-fcgishim-test", "--bind", "unix:{socket}"]
env = { PATH = "` + local + `:/usr/bin:/bin" }
`, []string{"[ok]   app command gunicorn-fcgishim-test found (" + gunicorn + ")"}},
		{`[app]
command = ["` + gunicorn + `", "--bind", "unix:{socket}"]
`, []string{"[ok]   app command " + gunicorn + " found"}},
		// [app] wsgi: the program checked is the runner's interpreter.
		{`[app]
wsgi = "mysite.wsgi"
python = "python-fcgishim-test"
`, []string{"[FAIL] app python (runs the WSGI runner) \"python-fcgishim-test\" is " + python + " in your login shell's PATH",
			"line 3 of", "fix: give the full path: python = \"" + python + "\""}},
		{`[app]
wsgi = "mysite.wsgi"
python = "` + python + `"
`, []string{"[ok]   app python (runs the WSGI runner) " + python + " found"}},
	}
	for _, tc := range cases {
		cfgPath := filepath.Join(dir, "mysite.toml")
		os.WriteFile(cfgPath, []byte(tc.toml), 0o644)
		var out bytes.Buffer
		c := newChecker(CheckOptions{Dir: dir, Suexec: "on", SuexecBin: "/nonexistent", Out: &out,
			Getenv: func(k string) string {
				return map[string]string{"PATH": loginPath, "HOME": filepath.Dir(filepath.Dir(local))}[k]
			}})
		if cfg := c.checkConfig(); cfg != nil {
			c.checkApp(cfg)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("missing %q in:\n%s", w, out.String())
			}
		}
	}
}

// Values in [app] env of a config in the public directory get a warning
// that points at env_file outside the document root.
func TestCheckSecretsInPublicConfig(t *testing.T) {
	dir, _, _ := site(t)
	os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[app]\ncommand = [\"/bin/true\"]\nenv = { SECRET_KEY = \"x\" }\n"), 0o644)
	var out bytes.Buffer
	c := newChecker(CheckOptions{Dir: dir, Suexec: "off", Out: &out})
	c.checkSecrets(c.checkConfig())
	for _, w := range []string{"[warn] mysite.toml is in the public directory", "SECRET_KEY, line 3", `env_file = "`, ".config/mysite.env"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("missing %q in:\n%s", w, out.String())
		}
	}
}

// A binary older than check (no serve --no-app) is not started in full:
// the self-test says so and skips.
func TestSelfTestOlderBinary(t *testing.T) {
	dir, old, _ := site(t) // as root, owned by a made-up user the self-test runs as
	os.WriteFile(old, []byte("#!/bin/sh\necho 'flag provided but not defined: -no-app' >&2\nexit 2\n"), 0o755)
	var out bytes.Buffer
	c := newChecker(CheckOptions{Dir: dir, SelfTest: old, Suexec: "off", Out: &out})
	c.selfTest(t.Context(), true)
	if c.r.Warned != 1 || c.r.Failed != 0 || !strings.Contains(out.String(), "is older than this check (no serve --no-app)") {
		t.Fatalf("%+v\n%s", c.r, out.String())
	}
}

// [app] env_file is checked as the app will read it, and its PATH is the
// one the command is looked up with.
func TestCheckEnvFile(t *testing.T) {
	dir, _, target := site(t)
	secrets := filepath.Join(peertest.Dir(t), "home")
	os.Mkdir(secrets, 0o755)
	bin := filepath.Join(secrets, "bin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "myapp-fcgishim-test"), []byte("#!/bin/sh\n"), 0o755)
	write := func(path, text string, perm os.FileMode) string {
		os.WriteFile(path, []byte(text), perm)
		os.Chmod(path, perm)
		os.Lchown(path, target.uid, target.gid)
		return path
	}
	good := write(filepath.Join(secrets, "good.env"), "PATH="+bin+":/usr/bin:/bin\nSECRET_KEY=x\n", 0o600)
	cases := []struct {
		envFile string
		want    string
	}{
		{good, "[ok]   app command myapp-fcgishim-test found (" + filepath.Join(bin, "myapp-fcgishim-test") + ")"},
		{good, "[ok]   [app] env_file " + good + ": private, 2 variables"},
		{write(filepath.Join(secrets, "open.env"), "SECRET_KEY=x\n", 0o644), "mode 0644 lets other users read or change it"},
		{write(filepath.Join(dir, "public.env"), "SECRET_KEY=x\n", 0o600), "is inside the public directory"},
		{filepath.Join(secrets, "missing.env"), "no such file"},
	}
	for _, tc := range cases {
		os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[app]\ncommand = [\"myapp-fcgishim-test\"]\nenv_file = \""+tc.envFile+"\"\n"), 0o644)
		var out bytes.Buffer
		c := newChecker(CheckOptions{Dir: dir, Suexec: "off", Out: &out})
		if cfg := c.checkConfig(); cfg != nil {
			c.checkApp(cfg)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("env_file %s: missing %q in:\n%s", tc.envFile, tc.want, out.String())
		}
	}
}

// Under plain mod_fcgid (no suEXEC) the site runs as the web server's
// user, www-data on Debian, whose home (/var/www) is root's and who owns
// no site directory: check reports that user's /tmp directory, whoever
// runs check.
func TestCheckRuntimeDirForWebServerUser(t *testing.T) {
	dir, _, _ := site(t)
	www, err := user.Lookup("www-data")
	if err != nil {
		t.Skip("no www-data user")
	}
	if fi, err := os.Stat(www.HomeDir); err == nil && fi.Sys().(*syscall.Stat_t).Uid == mustAtoi(t, www.Uid) {
		t.Skipf("www-data owns its home %s: the rule picks it, not /tmp", www.HomeDir)
	}
	os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[app]\ncommand = [\"/bin/true\"]\n"), 0o644)
	var out bytes.Buffer
	c := newChecker(CheckOptions{Dir: dir, Suexec: "off", SuexecBin: "/nonexistent", Out: &out,
		Getenv: func(k string) string { return map[string]string{"HOME": "/root", "TMPDIR": "/var/tmp"}[k] }})
	c.checkRuntimeDir(c.checkConfig())
	want := "runtime directory /tmp/fcgishim-" + www.Uid + "-"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "the web server's user www-data, uid "+www.Uid) {
		t.Errorf("want %q for www-data in:\n%s", want, out.String())
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// A ~user site runs through suEXEC whenever the helper is installed: Apache
// asks for it for every ~user program, mod_suexec enabled or not (found on
// Debian with apache2-suexec-pristine and only userdir + fcgid enabled).
// Only "Suexec Off" (mod_suexec's) turns it off.
func TestDetectSuexecUserdirWithoutModule(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	alice.Run(t, "mkdir", "-m", "0755", filepath.Join(alice.PublicHTML, "mysite"))
	helper := filepath.Join(t.TempDir(), "suexec")
	os.WriteFile(helper, []byte("#!/bin/sh\nexit 1\n"), 0o755)
	apache := t.TempDir()
	os.MkdirAll(filepath.Join(apache, "mods-enabled"), 0o755)
	os.WriteFile(filepath.Join(apache, "mods-enabled", "userdir.load"), []byte("LoadModule userdir_module mod_userdir.so\n"), 0o644)
	o := CheckOptions{Dir: filepath.Join(alice.PublicHTML, "mysite"), SuexecBin: helper, ApacheDir: apache}
	if u := newChecker(o).suexec; !u.on || !strings.Contains(u.why, "with or without mod_suexec") || u.target.uid != alice.UID {
		t.Errorf("~user site, helper installed, no mod_suexec: on=%v why=%q target uid %d (want %d)", u.on, u.why, u.target.uid, alice.UID)
	}
	os.WriteFile(filepath.Join(apache, "mods-enabled", "suexec.conf"), []byte("Suexec Off\n"), 0o644)
	if u := newChecker(o).suexec; u.on || !strings.Contains(u.why, `"Suexec Off"`) {
		t.Errorf("with Suexec Off: on=%v why=%q", u.on, u.why)
	}
}
