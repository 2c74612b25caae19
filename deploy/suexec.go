package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/fcgishim/fcgishim/config"
)

// suexecConf holds suEXEC's compiled-in rules, as `suexec -V` prints them.
type suexecConf struct {
	DocRoot       string // AP_DOC_ROOT: programs outside it (or a userdir) are refused
	SafePath      string // AP_SAFE_PATH: the only PATH programs get
	UserdirSuffix string // AP_USERDIR_SUFFIX: ~user's public directory
	HTTPDUser     string // AP_HTTPD_USER: the only user that may call suexec
	LogExec       string // AP_LOG_EXEC: where it logs refusals
	UIDMin        int    // AP_UID_MIN
	GIDMin        int    // AP_GID_MIN
}

// debianSuexec is what Debian's apache2-suexec-pristine is compiled with.
func debianSuexec() suexecConf {
	return suexecConf{DocRoot: "/var/www", SafePath: "/usr/local/bin:/usr/bin:/bin", UserdirSuffix: "public_html",
		HTTPDUser: "www-data", LogExec: "/var/log/apache2/suexec.log", UIDMin: 100, GIDMin: 100}
}

// parseSuexecV reads `suexec -V` output (lines like ` -D AP_UID_MIN=100`
// and ` -D AP_DOC_ROOT="/var/www"`) over Debian's values; names it does not
// know are ignored. Output without one known name is an error.
func parseSuexecV(out string) (suexecConf, error) {
	conf, known := debianSuexec(), 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "-D ")
		if !ok {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimSpace(rest), "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(val); err == nil {
			val = uq
		}
		strs := map[string]*string{"AP_DOC_ROOT": &conf.DocRoot, "AP_SAFE_PATH": &conf.SafePath, "AP_USERDIR_SUFFIX": &conf.UserdirSuffix,
			"AP_HTTPD_USER": &conf.HTTPDUser, "AP_LOG_EXEC": &conf.LogExec}
		ints := map[string]*int{"AP_UID_MIN": &conf.UIDMin, "AP_GID_MIN": &conf.GIDMin}
		if p := strs[name]; p != nil {
			*p, known = val, known+1
		} else if p := ints[name]; p != nil {
			n, err := strconv.Atoi(val)
			if err != nil {
				return conf, fmt.Errorf("suexec -V: %s=%q is not a number", name, val)
			}
			*p, known = n, known+1
		}
	}
	if known == 0 {
		return conf, errors.New("suexec -V printed none of AP_DOC_ROOT, AP_SAFE_PATH, AP_UID_MIN, ...")
	}
	return conf, nil
}

// siteUser is the account suEXEC runs the site as.
type siteUser struct {
	name     string
	uid, gid int    // gid: the primary group (what suEXEC uses for ~user)
	home     string // "" when unknown
}

// suexecUse is what check knows about suEXEC for this site.
type suexecUse struct {
	on       bool
	why      string // how that was decided, or what is assumed
	conf     suexecConf
	confFrom string
	userdir  bool     // a ~user site: docroot is home/UserdirSuffix
	target   siteUser // whom suEXEC runs the site as
	assumed  string   // what about target is assumed ("" = known)
}

// docroot is the directory suEXEC requires the program to be in.
func (u suexecUse) docroot() string {
	if u.userdir {
		return filepath.Join(u.target.home, u.conf.UserdirSuffix)
	}
	return u.conf.DocRoot
}

// detectSuexec decides whether the web server runs the site through
// suEXEC, with which rules and as whom.
func (c *checker) detectSuexec() suexecUse {
	u := suexecUse{}
	u.conf, u.confFrom = c.readSuexecConf()
	u.target, u.userdir = userdirOwner(c.dir, u.conf.UserdirSuffix)
	if !u.userdir {
		u.target, u.assumed = dirOwner(c.dir), "SuexecUserGroup is assumed to name the directory's owner and their group"
	}
	switch c.o.Suexec {
	case "on":
		u.on, u.why = true, "--suexec on"
	case "off":
		u.on, u.why = false, "--suexec off"
	default:
		u.on, u.why = c.guessSuexec(u.userdir)
	}
	return u
}

func (c *checker) suexecBin() string {
	if c.o.SuexecBin != "" {
		return c.o.SuexecBin
	}
	return "/usr/lib/apache2/suexec"
}

func (c *checker) apacheDir() string {
	if c.o.ApacheDir != "" {
		return c.o.ApacheDir
	}
	return "/etc/apache2"
}

// readSuexecConf runs `suexec -V` (it answers only root and the web
// server's user) and falls back to Debian's compiled-in values.
func (c *checker) readSuexecConf() (suexecConf, string) {
	bin := c.suexecBin()
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err == nil || len(out) > 0 {
		if conf, perr := parseSuexecV(string(out)); perr == nil {
			return conf, bin + " -V"
		}
	}
	return debianSuexec(), "assumed: Debian's compiled-in values (" + bin + " -V answers only root and the web server's user)"
}

// guessSuexec tells from the host's Apache config whether suEXEC applies.
// Apache runs every ~user program through the suEXEC helper as soon as the
// helper is installed (mod_userdir asks for it; mod_suexec is needed only
// for SuexecUserGroup, and for "Suexec Off", which turns it off).
func (c *checker) guessSuexec(userdir bool) (bool, string) {
	adir := c.apacheDir()
	if _, err := os.Stat(adir); err != nil {
		return true, "cannot see the web server's config (" + adir + "): assuming suEXEC, as most shared hosts run it (--suexec off if not)"
	}
	if _, err := os.Stat(c.suexecBin()); err != nil {
		return false, "no " + c.suexecBin() + ": the web server runs the site as its own user"
	}
	if f := suexecOff(adir); f != "" {
		return false, f + " has \"Suexec Off\": the web server runs the site as its own user"
	}
	if userdir {
		return true, "this is a ~user site and " + c.suexecBin() + " is installed: Apache runs ~user programs through it, with or without mod_suexec"
	}
	if _, err := os.Stat(filepath.Join(adir, "mods-enabled", "suexec.load")); err != nil {
		return false, "mod_suexec is not enabled (no " + filepath.Join(adir, "mods-enabled", "suexec.load") + ")"
	}
	if f := findDirective(filepath.Join(adir, "sites-enabled"), "SuexecUserGroup"); f != "" {
		return true, "mod_suexec is enabled and " + f + " has SuexecUserGroup"
	}
	return false, "mod_suexec is enabled, but this is no ~user site and sites-enabled has no SuexecUserGroup: assuming the web server runs it as its own user (--suexec on if not)"
}

// suexecOff returns the first enabled config file of adir with a
// "Suexec Off" line; "" when none has.
func suexecOff(adir string) string {
	for _, sub := range []string{"mods-enabled", "conf-enabled", "sites-enabled"} {
		ents, _ := os.ReadDir(filepath.Join(adir, sub))
		for _, e := range ents {
			p := filepath.Join(adir, sub, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && strings.EqualFold(f[0], "Suexec") && strings.EqualFold(f[1], "off") {
					return p
				}
			}
		}
	}
	return ""
}

// findDirective returns the first file in dir that has a line starting
// with name; "" when none does.
func findDirective(dir, name string) string {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], name) {
				return p
			}
		}
	}
	return ""
}

// userdirOwner finds the user whose ~/suffix holds dir: an ancestor named
// suffix whose parent is the home directory of its owner.
func userdirOwner(dir, suffix string) (siteUser, bool) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return siteUser{}, false
	}
	for p := real; p != "/" && p != "."; p = filepath.Dir(p) {
		if filepath.Base(p) != suffix {
			continue
		}
		home := filepath.Dir(p)
		su := dirOwner(home)
		if su.home != "" && sameDir(su.home, home) {
			return su, true
		}
	}
	return siteUser{}, false
}

// dirOwner is the owner of path with their primary group and home.
func dirOwner(path string) siteUser {
	fi, err := os.Stat(path)
	if err != nil {
		return siteUser{uid: -1, gid: -1}
	}
	st := fi.Sys().(*syscall.Stat_t)
	su := siteUser{uid: int(st.Uid), gid: int(st.Gid)}
	if pw, err := user.LookupId(strconv.Itoa(su.uid)); err == nil {
		su.name, su.home = pw.Username, pw.HomeDir
		if g, err := strconv.Atoi(pw.Gid); err == nil {
			su.gid = g
		}
	}
	return su
}

func sameDir(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// refusal is one suEXEC rule the site breaks: what suexec.log says, which
// file, and the fix.
type refusal struct{ rule, msg, fix string }

// suexecRefusals applies suEXEC's rules (support/suexec.c, in its order)
// that check can see from the files: the target's uid/gid minimum, the
// docroot, the program not a symlink nor setuid/setgid, and the owner and
// group of the directory and the program. Writable bits and the execute
// bit are checked by checkDir and checkBinary for every setup.
func suexecRefusals(dir, prog string, u suexecUse) []refusal {
	var out []refusal
	t, conf := u.target, u.conf
	if t.uid == 0 || t.uid < conf.UIDMin {
		out = append(out, refusal{"cannot run as forbidden uid", fmt.Sprintf("the site's user (uid %d) is below suEXEC's minimum uid %d", t.uid, conf.UIDMin),
			"run the site as an ordinary account (uid " + strconv.Itoa(conf.UIDMin) + " or above): install it into that user's directory, as that user"})
	}
	if t.gid == 0 || t.gid < conf.GIDMin {
		out = append(out, refusal{"cannot run as forbidden gid", fmt.Sprintf("the site's group (gid %d) is below suEXEC's minimum gid %d", t.gid, conf.GIDMin),
			"use a group with gid " + strconv.Itoa(conf.GIDMin) + " or above (the account's own group)"})
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil && !within(real, evalOr(u.docroot())) {
		out = append(out, refusal{"command not in docroot", fmt.Sprintf("%s is outside suEXEC's document root %s", real, u.docroot()),
			"install the site below " + u.docroot()})
	}
	pfi, err := os.Lstat(prog)
	if err != nil {
		return out
	}
	if pfi.Mode()&os.ModeSymlink != 0 {
		out = append(out, refusal{"cannot stat program", prog + " is a symlink: suEXEC runs only a real file",
			"replace the link with the file: cp --remove-destination \"$(readlink -f " + shellQuote(prog) + ")\" " + shellQuote(prog)})
		return out
	}
	if pfi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		out = append(out, refusal{"file is either setuid or setgid", prog + " is setuid or setgid", "chmod ug-s " + shellQuote(prog)})
	}
	if r, ok := ownerMismatch(dir, prog, pfi, t); !ok {
		out = append(out, r)
	}
	return out
}

// ownerMismatch is suEXEC's rule that the directory and the program have
// exactly the target's uid and gid.
func ownerMismatch(dir, prog string, pfi os.FileInfo, t siteUser) (refusal, bool) {
	dfi, err := os.Stat(dir)
	if err != nil {
		return refusal{}, true
	}
	d, p := dfi.Sys().(*syscall.Stat_t), pfi.Sys().(*syscall.Stat_t)
	if int(d.Uid) == t.uid && int(d.Gid) == t.gid && int(p.Uid) == t.uid && int(p.Gid) == t.gid {
		return refusal{}, true
	}
	who := strconv.Itoa(t.uid) + ":" + strconv.Itoa(t.gid)
	if t.name != "" {
		who = t.name + ":" + strconv.Itoa(t.gid)
	}
	return refusal{"target uid/gid mismatch",
		fmt.Sprintf("target uid/gid (%d/%d) mismatch with directory (%d/%d) or program (%d/%d): %s and %s must belong to the site's user and their group",
			t.uid, t.gid, d.Uid, d.Gid, p.Uid, p.Gid, dir, filepath.Base(prog)),
		"chown " + who + " " + shellQuote(dir) + " " + shellQuote(prog)}, false
}

func evalOr(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// checkSuexec says whether suEXEC runs the site and fails each of its rules
// the site breaks.
func (c *checker) checkSuexec() {
	u := c.suexec
	if !u.on {
		c.info("suEXEC: not used (%s)", u.why)
		return
	}
	c.info("suEXEC: used (%s); rules from %s: docroot %s, uid/gid >= %d/%d, PATH=%s", u.why, u.confFrom, u.docroot(), u.conf.UIDMin, u.conf.GIDMin, u.conf.SafePath)
	if u.assumed != "" {
		c.info("suEXEC: %s (uid %d gid %d)", u.assumed, u.target.uid, u.target.gid)
	}
	rs := suexecRefusals(c.dir, c.bin, u)
	for _, r := range rs {
		c.fail(fmt.Sprintf("suEXEC refuses %s (%q in %s): %s; the site answers 500", c.o.Name, r.rule, u.conf.LogExec, r.msg), r.fix)
	}
	if len(rs) == 0 {
		c.ok("suEXEC: %s passes its rules (runs as uid %d gid %d, below %s, a real file owned like its directory)", c.o.Name, u.target.uid, u.target.gid, u.docroot())
	}
}

// siteEnv is the environment the web server starts mysite.fcgi with, which
// is what [app] is evaluated under.
type siteEnv struct {
	vars map[string]string
	desc string
}

func (e siteEnv) getenv(k string) string { return e.vars[k] }

func (e siteEnv) environ() []string {
	var env []string
	for k, v := range e.vars {
		env = append(env, k+"="+v)
	}
	return env
}

// serverEnv is what the web server gives the site: under suEXEC its safe
// PATH and nothing else; under plain mod_fcgid the server's own PATH (not
// visible from here: assumed short) and no HOME or LANG.
func (c *checker) serverEnv() siteEnv {
	if c.suexec.on {
		p := c.suexec.conf.SafePath
		return siteEnv{vars: map[string]string{"PATH": p},
			desc: "suEXEC gives PATH=" + p + " and nothing else (no HOME, TMPDIR, XDG_RUNTIME_DIR, LANG)"}
	}
	p := "/usr/local/bin:/usr/bin:/bin"
	return siteEnv{vars: map[string]string{"PATH": p},
		desc: "mod_fcgid gives the web server's own PATH (assumed " + p + ") and FcgidInitialEnv, no HOME or LANG"}
}

// checkEnvFile checks [app] env_file as the app will read it: outside the
// public directory, a regular file of the site's user that others cannot
// read, and well formed. It returns the variables it sets (nil if none).
func (c *checker) checkEnvFile(cfg *config.Config) map[string]string {
	if cfg.App.EnvFile == "" {
		return nil
	}
	home := c.suexec.target.home
	if home == "" {
		home = c.o.Getenv("HOME")
	}
	path, err := cfg.EnvFilePath(home)
	if err != nil {
		c.fail(err.Error(), "give env_file as an absolute path")
		return nil
	}
	if real := evalOr(path); within(real, evalOr(c.dir)) || c.suexec.on && within(real, evalOr(c.suexec.docroot())) {
		c.fail("[app] env_file "+path+" is inside the public directory: the web server may serve it", "move it to your home, e.g. "+filepath.Join(home, ".config", filepath.Base(path)))
		return nil
	}
	vars, err := c.readEnvFile(path)
	if err != nil {
		c.fail(err.Error(), "create it as the site's user, chmod 600, KEY=value lines")
		return nil
	}
	c.ok("[app] env_file %s: private, %d variables", path, len(vars))
	return vars
}

// readEnvFile reads path as the site's user would. As root on another
// user's site, the owner and mode are checked against that user.
func (c *checker) readEnvFile(path string) (map[string]string, error) {
	uid := c.suexec.target.uid
	if os.Geteuid() != 0 || uid == 0 || uid < 0 {
		return config.ReadEnvFile(path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("[app] env_file: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("[app] env_file %s: not a regular file", path)
	case int(st.Uid) != uid:
		return nil, fmt.Errorf("[app] env_file %s: owned by uid %d, not by the site's user (uid %d): the app refuses it", path, st.Uid, uid)
	case fi.Mode().Perm()&0o027 != 0:
		return nil, fmt.Errorf("[app] env_file %s: mode %04o lets other users read or change it: the app refuses it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("[app] env_file: %w", err)
	}
	return config.ParseEnvFile(path, data)
}

// siteUID is the user the web server runs the site as: suEXEC's target, or
// the web server's own user; -1 when unknown.
func (c *checker) siteUID() (int, string) {
	if c.suexec.on {
		return c.suexec.target.uid, "the site's user"
	}
	name := c.suexec.conf.HTTPDUser
	u, err := user.Lookup(name)
	if err != nil {
		return -1, ""
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return -1, ""
	}
	return uid, "the web server's user " + name
}
