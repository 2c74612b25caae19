package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/reload"
)

// CheckOptions say what Check looks at.
type CheckOptions struct {
	Dir  string // the site's directory
	Name string // the binary's name in Dir; "" = "mysite.fcgi"
	// SelfTest is the binary started for the self-test; "" = Dir/Name.
	SelfTest string
	// Timeout bounds the self-test; 0 = 60s.
	Timeout time.Duration
	Color   bool // ANSI colors for the marks (a terminal)
	// Getenv is the login shell's environment, to say where a command the
	// web server cannot find is; nil = os.Getenv.
	Getenv func(string) string
	// Suexec says whether the web server runs the site through suEXEC:
	// "on", "off", or "" = guess from the host's Apache config.
	Suexec string
	// SuexecBin is the suEXEC helper; "" = /usr/lib/apache2/suexec.
	SuexecBin string
	// ApacheDir is the web server's config; "" = /etc/apache2.
	ApacheDir string
	// URL, when set, is requested for the live probe (check --url).
	URL string
	Out io.Writer
}

// Marks of a checklist line.
const (
	markOK   = "[ok]"
	markFail = "[FAIL]"
	markWarn = "[warn]"
	markInfo = "[info]"
)

// Report counts the outcome of Check.
type Report struct{ Failed, Warned int }

type checker struct {
	o      CheckOptions
	r      Report
	dir    string
	bin    string
	suexec suexecUse // whether and how suEXEC runs the site
	env    siteEnv   // what the web server gives mysite.fcgi
}

func (c *checker) line(mark, msg, fix string) {
	m := fmt.Sprintf("%-6s", mark)
	if c.o.Color {
		color := map[string]string{markOK: "32", markFail: "1;31", markWarn: "33", markInfo: "36"}[mark]
		m = "\x1b[" + color + "m" + m + "\x1b[0m"
	}
	fmt.Fprintf(c.o.Out, "%s %s\n", m, msg)
	if fix != "" {
		fmt.Fprintf(c.o.Out, "       fix: %s\n", fix)
	}
	switch mark {
	case markFail:
		c.r.Failed++
	case markWarn:
		c.r.Warned++
	}
}

func (c *checker) ok(format string, a ...any)   { c.line(markOK, fmt.Sprintf(format, a...), "") }
func (c *checker) info(format string, a ...any) { c.line(markInfo, fmt.Sprintf(format, a...), "") }
func (c *checker) fail(msg, fix string)         { c.line(markFail, msg, fix) }
func (c *checker) warn(msg, fix string)         { c.line(markWarn, msg, fix) }

// Check prints a checklist for the site in o.Dir, one line per item with a
// fix under each failure, ending with a request through the FastCGI stack.
func Check(ctx context.Context, o CheckOptions) Report {
	c := newChecker(o)
	o = c.o
	fmt.Fprintf(o.Out, "checking %s\n", c.bin)
	dirOK := c.checkDir()
	c.checkReach(dirOK)
	binOK := c.checkBinary(dirOK)
	c.checkSuexec()
	cfg := c.checkConfig()
	if cfg != nil {
		c.checkApp(cfg)
		c.checkSecrets(cfg)
		c.checkStatic(cfg)
	}
	c.checkHtaccess()
	c.checkWatch(cfg)
	if cfg != nil {
		c.checkRuntimeDir(cfg)
		c.checkLiveApp(cfg)
	}
	c.info("uploads: under mod_fcgid, request bodies above FcgidMaxRequestLen (128 KiB by default) get a 500 before reaching the app; POST a file to the site and read body_bytes on the info page to see your host's limit")
	if cfg != nil {
		c.selfTest(ctx, binOK)
	} else {
		c.warn("self-test skipped: the config does not load", "fix the config error above, then run check again")
	}
	if o.URL != "" {
		c.probe(ctx, cfg)
	} else {
		c.info("live probe: not run; to see what visitors get, run check again with --url %s", c.guessURL())
	}
	fmt.Fprintf(o.Out, "%d failed, %d warnings\n", c.r.Failed, c.r.Warned)
	return c.r
}

// newChecker fills o's defaults and learns how the web server will run the
// site (suEXEC or not, and the environment it gives).
func newChecker(o CheckOptions) *checker {
	if o.Name == "" {
		o.Name = "mysite.fcgi"
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		dir = o.Dir
	}
	c := &checker{o: o, dir: dir, bin: filepath.Join(dir, o.Name)}
	c.suexec = c.detectSuexec()
	c.env = c.serverEnv()
	return c
}

func owner(fi fs.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

func (c *checker) checkDir() bool {
	fi, err := os.Stat(c.dir)
	if err != nil {
		c.fail(fmt.Sprintf("directory %s: %v", c.dir, err), "create it, or install into it: "+c.o.Name+" install "+c.dir)
		return false
	}
	if !fi.IsDir() {
		c.fail(c.dir+" is not a directory", "give check the site's directory")
		return false
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		c.fail(fmt.Sprintf("directory %s is group- or world-writable (mode %04o): suEXEC refuses to run programs in it", c.dir, perm),
			"chmod go-w "+shellQuote(c.dir))
		return true
	}
	c.ok("directory %s: mode %04o, not writable by group or others", c.dir, fi.Mode().Perm())
	return true
}

// checkReach: the web server's own user must be able to enter every
// directory down to the site, suEXEC or not (Apache finds the program
// before suEXEC runs it). A home made 0700 (Debian's adduser does) gives a
// 403 for every page.
func (c *checker) checkReach(dirOK bool) {
	name := c.suexec.conf.HTTPDUser
	u, err := user.Lookup(name)
	if !dirOK || err != nil {
		return
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return
	}
	gids, _ := u.GroupIds()
	for d := c.dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil && !searchableBy(fi, uid, gids) {
			fix := "chmod o+x " + shellQuote(d)
			if c.suexec.target.home != "" && sameDir(d, c.suexec.target.home) {
				fix = "chmod 711 ~ (others may enter your home, not list it)"
			}
			c.fail(fmt.Sprintf("the web server's user %s cannot enter %s (mode %04o): every page of the site answers 403", name, d, fi.Mode().Perm()), fix)
			return
		}
		if d == "/" || d == "." {
			break
		}
	}
	c.ok("the web server's user %s can enter every directory down to %s", name, c.dir)
}

// searchableBy reports whether uid (with groups gids) may enter the
// directory fi.
func searchableBy(fi fs.FileInfo, uid int, gids []string) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case !ok || uid == 0:
		return true
	case int(st.Uid) == uid:
		return perm&0o100 != 0
	}
	for _, g := range gids {
		if g == strconv.Itoa(int(st.Gid)) {
			return perm&0o010 != 0
		}
	}
	return perm&0o001 != 0
}

func (c *checker) checkBinary(dirOK bool) bool {
	fi, err := os.Stat(c.bin)
	if err != nil {
		c.fail(fmt.Sprintf("binary %s: %v", c.bin, err), "install it: <path to the downloaded binary> install "+shellQuote(c.dir))
		return false
	}
	perm := fi.Mode().Perm()
	good := true
	switch {
	case !fi.Mode().IsRegular():
		c.fail(c.bin+" is not a regular file", "install the binary again: "+c.o.Name+" install "+shellQuote(c.dir))
		return false
	case perm&0o100 == 0:
		c.fail(fmt.Sprintf("binary %s is not executable (mode %04o)", c.bin, perm), "chmod 755 "+shellQuote(c.bin))
		good = false
	case perm&0o022 != 0:
		c.fail(fmt.Sprintf("binary %s is group- or world-writable (mode %04o): suEXEC refuses to run it (the server answers 500)", c.bin, perm),
			"chmod 755 "+shellQuote(c.bin))
		good = false
	case perm&0o001 == 0:
		c.warn(fmt.Sprintf("binary %s is not executable by others (mode %04o): fine under suEXEC, a 403/500 when the web server runs as its own user", c.bin, perm),
			"chmod 755 "+shellQuote(c.bin))
	}
	if dfi, err := os.Stat(c.dir); err == nil && dirOK && !c.suexec.on { // under suEXEC: checkSuexec
		bu, ok1 := owner(fi)
		du, ok2 := owner(dfi)
		if ok1 && ok2 && bu != du {
			c.fail(fmt.Sprintf("binary %s is owned by uid %d, its directory by uid %d: suEXEC runs only files owned like their directory", c.bin, bu, du),
				fmt.Sprintf("chown %d %s", du, shellQuote(c.bin)))
			good = false
		}
	}
	if good {
		c.ok("binary %s: executable, mode %04o, owned like its directory", c.bin, perm)
	}
	return good
}

func (c *checker) configPath() string { return config.PathFor(c.bin) }

func (c *checker) checkConfig() *config.Config {
	path := c.configPath()
	cfg, err := config.Load(path)
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		fix := "edit " + ce.File
		if ce.Line > 0 {
			fix += " line " + strconv.Itoa(ce.Line)
		}
		if ce.Key != "" {
			fix += ", key " + ce.Key
		}
		c.fail("config "+ce.Error(), fix)
		return nil
	case err != nil:
		c.fail("config: "+err.Error(), "make "+path+" readable")
		return nil
	case cfg.File == "":
		c.ok("config %s: none (the built-in info page answers)", path)
	default:
		c.ok("config %s: valid", path)
	}
	return cfg
}

func (c *checker) checkApp(cfg *config.Config) {
	a := cfg.App
	switch {
	case len(a.Command) == 0 && a.Upstream == "":
		c.ok("app: none configured: the info page answers (add [app] to %s)", filepath.Base(c.configPath()))
		return
	case a.Upstream != "":
		c.ok("app: upstream %s (already running; not started by %s)", a.Upstream, c.o.Name)
		return
	}
	workdir := cfg.Dir()
	if a.Workdir != "" {
		workdir = cfg.Resolve(a.Workdir)
	}
	if fi, err := os.Stat(workdir); err != nil || !fi.IsDir() {
		c.fail(fmt.Sprintf("app workdir %s does not exist (line %d of %s)", workdir, lineOfKey(cfg.File, "workdir"), cfg.File),
			"create it or fix app.workdir")
		return
	}
	c.checkCommand(cfg, workdir, c.checkEnvFile(cfg))
	c.checkProxyProtocol(cfg)
	c.info("the app's environment: %s, plus [app] env; set what it needs there (HOME, LANG, ...)", c.env.desc)
}

// checkCommand looks the app's program up as the supervisor will: with
// [app] env's PATH, else the PATH the web server gives. A program found
// only in the login shell's PATH (~/.local/bin, where pip install --user
// puts gunicorn) fails, naming the file and what to write instead.
func (c *checker) checkCommand(cfg *config.Config, workdir string, fileVars map[string]string) {
	prog := cfg.App.Command[0]
	// With [app] wsgi the program is the runner's interpreter, [app] python.
	key, what, fullPath := "command", "app command", "command = [%q, ...]"
	if cfg.App.WSGI != "" {
		key, what, fullPath = "python", "app python (runs the WSGI runner)", "python = %q"
		if cfg.App.Python == "" {
			key = "wsgi"
		}
	}
	line := fmt.Sprintf("line %d of %s", lineOfKey(cfg.File, key), cfg.File)
	if strings.ContainsRune(prog, '/') {
		path := prog
		if !filepath.IsAbs(path) {
			path = filepath.Join(workdir, prog)
		}
		if err := isExecutable(path); err != nil {
			c.fail(fmt.Sprintf("%s %q: %v (%s)", what, prog, err, line), "install it, or fix the path in app."+key)
			return
		}
		c.ok("%s %s found, workdir %s", what, path, workdir)
		return
	}
	pathEnv, from := c.env.getenv("PATH"), c.env.desc
	if p, ok := fileVars["PATH"]; ok {
		pathEnv, from = p, "[app] env_file sets PATH="+p
	}
	if p, ok := cfg.App.Env["PATH"]; ok {
		pathEnv, from = p, "[app] env sets PATH="+p
	}
	path, err := lookPath(prog, pathEnv)
	if err == nil {
		c.ok("%s %s found (%s) with the PATH the app gets (%s), workdir %s", what, prog, path, pathEnv, workdir)
		return
	}
	if login, lerr := lookPath(prog, c.o.Getenv("PATH")); lerr == nil {
		c.fail(fmt.Sprintf("%s %q is %s in your login shell's PATH, but the app gets PATH=%s (%s): the site would answer \"the app's command was not found\" (%s)", what, prog, login, pathEnv, from, line),
			fmt.Sprintf("give the full path: "+fullPath+"; or add its directory: [app] env = { PATH = \"%s:%s\" }", login, filepath.Dir(login), c.env.getenv("PATH")))
		return
	}
	fix := "install it, or give its full path in app.command"
	if cfg.App.WSGI != "" {
		fix = "install Python 3, or give the interpreter's full path in app.python (a virtualenv's bin/python)"
	}
	c.fail(fmt.Sprintf("%s %q: %v (%s)", what, prog, err, line), fix+" (the app gets PATH="+pathEnv+")")
}

// checkProxyProtocol warns when [app] proxy_protocol and gunicorn's
// --proxy-protocol disagree: without the flag gunicorn reads our PROXY line
// as a bad request line and answers every request 400; with the flag alone
// it waits for a PROXY line the site never sends. Only a gunicorn command
// is judged (other servers spell it otherwise, or not at all).
func (c *checker) checkProxyProtocol(cfg *config.Config) {
	a := cfg.App
	if !isGunicorn(a.Command) {
		if a.ProxyProtocol {
			c.info("[app] proxy_protocol = true: every connection to the app starts with a PROXY line; make sure %s expects one", filepath.Base(a.Command[0]))
		}
		return
	}
	mode := proxyProtocolMode(a.Command)
	if mode == "" {
		mode = proxyProtocolMode(append([]string{"gunicorn"}, strings.Fields(a.Env["GUNICORN_CMD_ARGS"])...))
	}
	flag := mode != ""
	line := fmt.Sprintf("line %d of %s", lineOfKey(cfg.File, "command"), cfg.File)
	switch {
	case a.ProxyProtocol && mode == "v2":
		c.warn(fmt.Sprintf("gunicorn's --proxy-protocol is v2 (%s) but the site sends a version 1 (text) PROXY line: gunicorn refuses every request", line),
			"use --proxy-protocol (auto) or --proxy-protocol v1")
	case a.ProxyProtocol && !flag:
		c.warn(fmt.Sprintf("[app] proxy_protocol = true but the gunicorn command has no --proxy-protocol (%s): gunicorn answers every request 400 (unless its config file sets proxy_protocol)", line),
			"add \"--proxy-protocol\" to app.command, or remove proxy_protocol from [app]")
	case !a.ProxyProtocol && flag:
		c.warn(fmt.Sprintf("the gunicorn command has --proxy-protocol (%s) but [app] proxy_protocol is not set: gunicorn waits for a PROXY line the site never sends", line),
			"add proxy_protocol = true to [app] (the app then sees the visitor's address), or remove --proxy-protocol")
	case a.ProxyProtocol:
		c.ok("app: proxy_protocol = true and gunicorn's --proxy-protocol agree (the app sees the visitor's address)")
	}
}

// isGunicorn reports whether command runs gunicorn: the program itself
// (gunicorn, gunicorn3, a path to either) or python -m gunicorn.
func isGunicorn(command []string) bool {
	if len(command) == 0 {
		return false
	}
	if strings.HasPrefix(filepath.Base(command[0]), "gunicorn") {
		return true
	}
	for i := 1; i+1 < len(command); i++ {
		if command[i] == "-m" && command[i+1] == "gunicorn" {
			return true
		}
	}
	return false
}

// proxyProtocolMode is gunicorn's --proxy-protocol on command: "" when
// absent or off, "on" for the bare flag (gunicorn before 24.1, or auto), or
// the mode given (gunicorn 24.1+: --proxy-protocol v1|v2|auto, or =MODE).
func proxyProtocolMode(command []string) string {
	modes := map[string]bool{"off": true, "v1": true, "v2": true, "auto": true}
	mode := ""
	for i, arg := range command {
		if i == 0 {
			continue
		}
		switch v, ok := strings.CutPrefix(arg, "--proxy-protocol="); {
		case ok:
			mode = v
		case arg == "--proxy-protocol" && i+1 < len(command) && modes[command[i+1]]:
			mode = command[i+1]
		case arg == "--proxy-protocol":
			mode = "on"
		}
	}
	if mode == "off" {
		return ""
	}
	return mode
}

// checkSecrets warns when the config, in the site's public directory,
// holds [app] env values: one rule missing in .htaccess and they are served.
func (c *checker) checkSecrets(cfg *config.Config) {
	if len(cfg.App.Env) == 0 || cfg.File == "" || !within(evalOr(cfg.File), evalOr(c.dir)) {
		return
	}
	names := make([]string, 0, len(cfg.App.Env))
	for k := range cfg.App.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	home := c.suexec.target.home
	if home == "" {
		home = "/home/you"
	}
	c.warn(fmt.Sprintf("%s is in the public directory %s and holds [app] env values (%s, line %d): if the web server ever serves it, they are public",
		filepath.Base(cfg.File), c.dir, strings.Join(names, ", "), lineOfKey(cfg.File, "env")),
		fmt.Sprintf("move secrets to a file outside the document root: [app] env_file = %q (KEY=value lines, chmod 600)", filepath.Join(home, ".config", strings.TrimSuffix(c.o.Name, filepath.Ext(c.o.Name))+".env")))
}

func isExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("not found: %s", path)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

func lookPath(prog, pathEnv string) (string, error) {
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, prog)
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in PATH (%s)", pathEnv)
}

// lineOfKey finds the first line assigning key in file; 0 when not found.
func lineOfKey(file, key string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	re := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	for i, l := range strings.Split(string(b), "\n") {
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

func (c *checker) checkStatic(cfg *config.Config) {
	for _, prefix := range cfg.StaticPrefixes() {
		d := cfg.Resolve(cfg.Static[prefix])
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() {
			c.fail(fmt.Sprintf("static %s: directory %s does not exist (line %d of %s)", prefix, d, lineOfKey(cfg.File, prefix), cfg.File),
				"create it (Django: manage.py collectstatic) or fix [static]")
			continue
		}
		c.ok("static %s -> %s", prefix, d)
	}
}

var (
	reHandler = lazyRegexp(`(?i)^\s*(AddHandler|SetHandler)\s+"?(fcgid-script|fastcgi-script|cgi-script)"?\s*(.*)$`)
	reFiles   = lazyRegexp(`(?i)^\s*<Files(Match)?\s+"?([^">]*)"?\s*>`)
	reRule    = lazyRegexp(`(?i)^\s*RewriteRule\s+(\S+)\s+(\S+)`)
	reCond    = lazyRegexp(`(?i)^\s*RewriteCond\s+(\S+)\s+(\S+)`)
	reEngine  = lazyRegexp(`(?i)^\s*RewriteEngine\s+on\b`)
)

// checkHtaccess looks for a handler for the binary, a rewrite to it, and a
// rewrite that would loop (no !-f condition and a pattern that matches the
// binary's own path).
func (c *checker) checkHtaccess() {
	path := filepath.Join(c.dir, ".htaccess")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.warn(path+" does not exist: fine if the server config routes requests here (deploy apache-fcgid), else nothing reaches "+c.o.Name,
			c.o.Name+" install "+shellQuote(c.dir)+" (or: "+c.o.Name+" deploy htaccess-fcgid)")
		return
	}
	if err != nil {
		c.fail(fmt.Sprintf(".htaccess: %v", err), "make it readable")
		return
	}
	c.reportHtaccess(path, scanHtaccess(string(b), c.o.Name))
}

// htaccessScan is what scanHtaccess found; line numbers are 1-based, 0 =
// not found.
type htaccessScan struct {
	handler                         string
	handlerLine, ruleLine, loopLine int
	engine                          bool
}

// scanHtaccess finds the handler that applies to name, RewriteEngine On,
// the first rewrite to name, and whether that rewrite can loop.
func scanHtaccess(text, name string) htaccessScan {
	var s htaccessScan
	files := "" // the <Files> section we are in
	var conds []string
	for i, raw := range strings.Split(text, "\n") {
		l := strings.TrimSpace(raw)
		switch m := reHandler().FindStringSubmatch(l); {
		case strings.HasPrefix(l, "#") || l == "":
		case reFiles().MatchString(l):
			files = reFiles().FindStringSubmatch(l)[2]
		case strings.HasPrefix(strings.ToLower(l), "</files"):
			files = ""
		case m != nil:
			if s.handlerLine == 0 && handlerApplies(m, files, name) {
				s.handler, s.handlerLine = m[2], i+1
			}
		case reEngine().MatchString(l):
			s.engine = true
		case reCond().MatchString(l):
			m := reCond().FindStringSubmatch(l)
			conds = append(conds, m[1]+" "+m[2])
		case reRule().MatchString(l):
			m := reRule().FindStringSubmatch(l)
			if strings.Contains(m[2], name) && s.ruleLine == 0 {
				s.ruleLine = i + 1
				if re, err := regexp.Compile(m[1]); !guarded(conds, name) && err == nil && re.MatchString(name+"/x") {
					s.loopLine = i + 1
				}
			}
			conds = nil
		}
	}
	return s
}

// handlerApplies: SetHandler applies in no <Files> section or in one that
// matches name; AddHandler when it lists name's extension.
func handlerApplies(m []string, files, name string) bool {
	if strings.EqualFold(m[1], "SetHandler") {
		return files == "" || files == name || matchFiles(files, name)
	}
	ext := filepath.Ext(name)
	for _, e := range strings.Fields(m[3]) {
		if e == ext || "."+strings.TrimPrefix(e, ".") == ext {
			return true
		}
	}
	return false
}

// guarded reports whether the conditions keep a rewrite to name from
// rewriting name itself.
func guarded(conds []string, name string) bool {
	for _, cd := range conds {
		if strings.Contains(cd, "REQUEST_FILENAME") && strings.HasPrefix(strings.Fields(cd)[1], "!-f") ||
			strings.Contains(cd, name) && strings.Contains(cd, "!") {
			return true
		}
	}
	return false
}

func (c *checker) reportHtaccess(path string, s htaccessScan) {
	ext := filepath.Ext(c.o.Name)
	switch {
	case s.handlerLine == 0:
		c.fail(fmt.Sprintf("%s has no AddHandler/SetHandler for %s: the web server sends the binary as a download or a 403", path, c.o.Name),
			c.o.Name+" install "+shellQuote(c.dir)+" (adds the fcgishim block), or add: AddHandler fcgid-script "+ext)
	default:
		c.ok(".htaccess line %d: handler %s for %s", s.handlerLine, s.handler, c.o.Name)
	}
	switch {
	case s.ruleLine == 0 || !s.engine:
		c.warn(fmt.Sprintf("%s has no RewriteEngine On + RewriteRule to %s: only URLs naming %s reach the app", path, c.o.Name, c.o.Name),
			"add: RewriteEngine On / RewriteCond %{REQUEST_FILENAME} !-f / RewriteRule ^(.*)$ "+c.o.Name+"/$1 [QSA,L]")
	case s.loopLine != 0:
		c.fail(fmt.Sprintf("%s line %d rewrites %s to itself: a rewrite loop (500, \"too many internal redirects\")", path, s.loopLine, c.o.Name),
			"put RewriteCond %{REQUEST_FILENAME} !-f on the line before it")
	default:
		c.ok(".htaccess line %d: rewrite to %s, guarded against a loop", s.ruleLine, c.o.Name)
	}
}

func matchFiles(pattern, name string) bool {
	ok, err := filepath.Match(pattern, name)
	if err == nil && ok {
		return true
	}
	re, err := regexp.Compile(pattern)
	return err == nil && re.MatchString(name)
}

func (c *checker) checkWatch(cfg *config.Config) {
	mode := ""
	if cfg != nil {
		mode = cfg.Server.Watch
	}
	var logBuf bytes.Buffer
	w, err := reload.New(reload.Options{
		Files: []string{c.bin}, Mode: mode,
		Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{ReplaceAttr: dropTime})),
	})
	if err != nil {
		c.fail("restart on change: "+err.Error(), "set [server] watch to auto, poll or off")
		return
	}
	backend := w.Backend()
	w.Close()
	why := strings.TrimSpace(logBuf.String())
	switch backend {
	case "inotify":
		c.ok("restart on change: inotify works on %s (touch %s restarts it)", c.dir, c.o.Name)
	case "poll":
		msg := "restart on change: polling (a touch is seen within a few seconds)"
		if why != "" {
			msg += ": " + why
		}
		c.ok("%s", msg)
	default:
		c.warn("restart on change is off ([server] watch = \"off\"): touching "+c.o.Name+" does nothing", "remove watch from [server]")
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// siteAccount is the account the live site runs as, for appctl's one
// runtime-directory rule: suEXEC's target (the site directory's owner, home
// from the password database), or under plain mod_fcgid the web server's
// user (www-data on Debian); with the environment the web server gives, so
// no HOME or TMPDIR. Check's own account when neither is known.
func (c *checker) siteAccount() (appctl.Account, string) {
	uid, who := c.siteUID()
	if uid < 0 {
		return appctl.Self(c.env.getenv), fmt.Sprintf("check's own user (uid %d; the site's user is unknown)", os.Getuid())
	}
	return appctl.AccountOf(uid, c.env.getenv), fmt.Sprintf("%s, uid %d", who, uid)
}

func (c *checker) checkRuntimeDir(cfg *config.Config) {
	if len(cfg.App.Command) == 0 {
		return
	}
	acct, who := c.siteAccount()
	d := appctl.RuntimeDirFor(cfg, acct)
	fi, err := os.Lstat(d)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(d)
		for {
			if _, err := os.Stat(parent); err == nil || parent == "/" {
				break
			}
			parent = filepath.Dir(parent)
		}
		if !writableBy(parent, acct.UID) {
			c.fail(fmt.Sprintf("runtime directory %s (the site runs as %s) cannot be created: %s is not writable by uid %d", d, who, parent, acct.UID), "set [app] runtime_dir to a private directory the site's user owns")
			return
		}
		c.ok("runtime directory %s (the site runs as %s): will be created (0700) at the first request", d, who)
		return
	}
	if err != nil {
		c.fail("runtime directory "+d+": "+err.Error(), "set [app] runtime_dir to a private directory you own")
		return
	}
	uid, _ := owner(fi)
	switch {
	case !fi.IsDir():
		c.fail("runtime directory "+d+" is not a directory", "remove it, or set [app] runtime_dir")
	case uid != acct.UID:
		c.fail(fmt.Sprintf("runtime directory %s is owned by uid %d, not by the site's user (%s): it is refused", d, uid, who), "remove it, or set [app] runtime_dir")
	case fi.Mode().Perm()&0o077 != 0:
		c.warn(fmt.Sprintf("runtime directory %s has mode %04o: others can see the app's sockets (it is made 0700 at the next start)", d, fi.Mode().Perm()), "chmod 700 "+shellQuote(d))
	case !writableBy(d, acct.UID):
		c.fail("runtime directory "+d+" is not writable", "chmod 700 "+shellQuote(d))
	default:
		c.ok("runtime directory %s (the site runs as %s): private (0700) and writable", d, who)
	}
}

// writableBy reports whether uid may create entries in the directory path:
// access(2) when check runs as uid, else from the owner, group and mode
// (uid's primary group from the password database).
func writableBy(path string, uid int) bool {
	if uid == os.Geteuid() {
		return syscall.Access(path, 2 /* W_OK */) == nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	perm := fi.Mode().Perm()
	switch {
	case uid == 0:
		return true
	case int(st.Uid) == uid:
		return perm&0o200 != 0
	case perm&0o002 != 0:
		return true
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	return err == nil && u.Gid == strconv.Itoa(int(st.Gid)) && perm&0o020 != 0
}

// limitedWriter keeps the first n bytes written to it; safe for concurrent
// use (the child's output is copied in by os/exec's goroutine).
type limitedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := min(len(p), l.n-l.b.Len()); k > 0 {
		l.b.Write(p[:k])
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

var reTags = lazyRegexp(`(?s)<(script|style|title).*?</(script|style|title)>|<[^>]*>`)

// firstLine is the first line of text in a response body, HTML tags removed.
func firstLine(b []byte) string {
	text := reTags().ReplaceAllString(string(b), "\n")
	s := ""
	for _, l := range strings.Split(text, "\n") {
		if s = strings.TrimSpace(l); s != "" {
			break
		}
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
