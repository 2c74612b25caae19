package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// The live probe (check --url) requests the site as a visitor would and
// says what its answers most likely mean. It asks for four things: the URL
// itself, a path below it that only the rewrite can route (the ping path
// when set), the binary by name (no rewrite needed), and the config file
// (which must never be served). The client is bounded: 10 s per request,
// 64 KiB of body, no proxy, and redirects followed only on the same host.

const probeBodyLimit = 64 << 10

// answer is what one probe request got.
type answer struct {
	url      string
	status   int
	ctype    string
	body     []byte
	err      error
	offHost  string // a redirect to another host, not followed
	complete bool   // the body was read to its end
}

// Kinds of answer.
const (
	kindInfo        = "info"         // our info page (JSON)
	kindPong        = "pong"         // our ping path
	kindMisconfig   = "misconfig"    // our "Site misconfigured" page
	kindAppError    = "app error"    // our 502/503/504 page about the app
	kindBinary      = "binary"       // the binary itself, sent as a file
	kindListing     = "listing"      // a directory index
	kindForbidden   = "forbidden"    // 403
	kindNotFound    = "not found"    // 404
	kindServerErr   = "server error" // 500 from the web server
	kindPage        = "page"         // anything else with a 2xx
	kindUnreachable = "unreachable"  // transport error or redirect off host
	kindOther       = "other"
)

var (
	reOurErrorPage = lazyRegexp(`^<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>50[234] `)
	reTOMLSection  = lazyRegexp(`(?m)^\s*\[(app|server|static|limits)\]`)
)

func (a answer) kind() string {
	switch {
	case a.err != nil || a.offHost != "":
		return kindUnreachable
	case bytes.HasPrefix(a.body, []byte("\x7fELF")):
		return kindBinary
	case a.status == 200 && strings.TrimSpace(string(a.body)) == "pong":
		return kindPong
	case a.status == 200 && isInfoJSON(a.body):
		return kindInfo
	case bytes.Contains(a.body, []byte("<title>Site misconfigured</title>")):
		return kindMisconfig
	case reOurErrorPage().Match(a.body):
		return kindAppError
	case a.status == 403:
		return kindForbidden
	case a.status == 404:
		return kindNotFound
	case a.status == 500:
		return kindServerErr
	case a.status/100 == 2 && bytes.Contains(a.body, []byte("<title>Index of ")):
		return kindListing
	case a.status/100 == 2:
		return kindPage
	}
	return kindOther
}

func isInfoJSON(b []byte) bool {
	var in struct {
		Mode    *string `json:"mode"`
		Version *string `json:"version"`
	}
	return json.Unmarshal(b, &in) == nil && in.Mode != nil && in.Version != nil
}

// ours reports whether the answer came from mysite.fcgi.
func (a answer) ours() bool {
	switch a.kind() {
	case kindInfo, kindPong, kindMisconfig, kindAppError:
		return true
	}
	return false
}

func (a answer) String() string {
	switch {
	case a.err != nil:
		return a.err.Error()
	case a.offHost != "":
		return "a redirect to " + a.offHost + " (another host: not followed)"
	}
	return fmt.Sprintf("%d %s", a.status, http.StatusText(a.status))
}

// probeClient never uses a proxy and follows at most 3 redirects, all on
// base's host.
func probeClient(base *url.URL) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = 10 * time.Second
	return &http.Client{
		Transport: tr,
		Timeout:   10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != base.Host || len(via) >= 3 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// get requests u and keeps at most probeBodyLimit bytes of the body.
func get(ctx context.Context, cl *http.Client, base *url.URL, u string) answer {
	a := answer{url: u}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Accept", "application/json, text/html;q=0.9, */*;q=0.1")
	resp, err := cl.Do(req)
	if err != nil {
		a.err = fmt.Errorf("GET %s: %w", u, err)
		return a
	}
	defer resp.Body.Close()
	if loc, err := resp.Location(); err == nil && resp.StatusCode/100 == 3 && loc.Host != base.Host {
		a.offHost = loc.String()
		return a
	}
	a.status, a.ctype = resp.StatusCode, resp.Header.Get("Content-Type")
	a.body, a.err = io.ReadAll(io.LimitReader(resp.Body, probeBodyLimit))
	a.complete = len(a.body) < probeBodyLimit
	return a
}

// probeSet holds the four answers.
type probeSet struct {
	root, sub, direct, conf answer
	subPath                 string
	appNoPing               bool // an [app] and no ping_path: the app's pages cannot be told from others
}

// probe requests the live site and reports what its answers mean.
func (c *checker) probe(ctx context.Context, cfg *config.Config) {
	base, err := url.Parse(c.o.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		c.fail(fmt.Sprintf("live: --url %q is not an http:// or https:// URL", c.o.URL), "give the site's address, e.g. --url https://example.com/~you/mysite/")
		return
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	p := c.fetchAll(ctx, base, cfg)
	c.reportRoot(p)
	c.reportSub(p)
	c.reportConfig(p)
}

func (c *checker) fetchAll(ctx context.Context, base *url.URL, cfg *config.Config) probeSet {
	cl := probeClient(base)
	ref := func(p string) string { return base.ResolveReference(&url.URL{Path: p}).String() }
	p := probeSet{subPath: "fcgishim-check/"}
	if cfg != nil && cfg.Server.PingPath != "" {
		p.subPath = strings.TrimPrefix(cfg.Server.PingPath, "/")
	}
	p.appNoPing = cfg != nil && cfg.Server.PingPath == "" && (len(cfg.App.Command) > 0 || cfg.App.Upstream != "")
	p.root = get(ctx, cl, base, base.String())
	p.sub = get(ctx, cl, base, ref(p.subPath))
	p.direct = get(ctx, cl, base, ref(c.o.Name))
	p.conf = get(ctx, cl, base, ref(filepath.Base(c.configPath())))
	return p
}

// reportRoot says whether the URL itself reaches mysite.fcgi, and if not,
// the likely cause.
func (c *checker) reportRoot(p probeSet) {
	a := p.root
	if a.ours() && a.kind() != kindMisconfig && a.kind() != kindAppError {
		c.ok("live: GET %s answered %s from %s", a.url, a, c.o.Name)
		return
	}
	if a.kind() == kindPage && p.sub.ours() {
		c.ok("live: GET %s answered %s (the app's page; %s answers below it)", a.url, a, c.o.Name)
		return
	}
	if a.kind() == kindPage && p.appNoPing && c.localIndex(a) == "" {
		c.warn(fmt.Sprintf("live: GET %s answered %s, from the app or from something else: check cannot tell", a.url, a),
			"set [server] ping_path = \"/-/ping\" in "+filepath.Base(c.configPath())+" and run check --url again")
		return
	}
	cause, fix := c.cause(a, p)
	c.fail(fmt.Sprintf("live: GET %s answered %s: %s", a.url, a, cause), fix)
}

// reportSub checks the path that only the rewrite routes to the binary.
func (c *checker) reportSub(p probeSet) {
	a := p.sub
	switch {
	case a.kind() == kindPong || a.kind() == kindInfo:
		c.ok("live: GET %s answered %s from %s (the rewrite works)", a.url, a, c.o.Name)
	case a.ours():
		c.ok("live: GET %s reached %s (the rewrite works), which answered %s", a.url, c.o.Name, a)
	case p.root.ours():
		cause, fix := c.cause(a, p)
		c.fail(fmt.Sprintf("live: GET %s answered %s: %s", a.url, a, cause), fix)
	}
}

// reportConfig fails when the config file is served to anyone who asks.
func (c *checker) reportConfig(p probeSet) {
	a := p.conf
	local, err := os.ReadFile(c.configPath())
	served := a.status == 200 && len(a.body) > 0 && (err == nil && len(local) > 0 && bytes.Equal(a.body, local[:min(len(local), len(a.body))]) ||
		reTOMLSection().Match(a.body))
	if served {
		c.fail(fmt.Sprintf("live: %s is served to anyone (%s, %d bytes): the config, and any secret in it, is public", a.url, a, len(a.body)),
			"run install again (its .htaccess block refuses the config), or add to .htaccess: RewriteRule ^"+regexp.QuoteMeta(filepath.Base(c.configPath()))+" - [F]; keep secrets in [app] env_file outside the document root")
		return
	}
	if a.err == nil {
		c.ok("live: %s is not served (%s)", a.url, a)
	}
}

// cause names the likely reason why a did not come from mysite.fcgi (or
// came as an error), from the other answers and the files here, and the fix.
func (c *checker) cause(a answer, p probeSet) (string, string) {
	switch a.kind() {
	case kindUnreachable:
		return "cannot reach it", "check the URL, and that the site answers from this machine"
	case kindMisconfig:
		return "the config does not load (" + pageMessage(a.body) + ")", "run check without --url: its config line says where; fix " + filepath.Base(c.configPath())
	case kindAppError:
		return "the app: " + pageMessage(a.body), "read the app's output ([app] log, else the web server's error log), fix it, then touch " + c.o.Name
	case kindBinary:
		return "the web server sends " + c.o.Name + " as a file (anyone can download it): no handler applies", c.handlerFix()
	case kindForbidden:
		return c.cause403(p)
	case kindNotFound:
		return c.cause404(p)
	case kindServerErr:
		return c.cause500()
	case kindListing:
		cause, fix := c.rewriteCause(p)
		return "the web server lists the directory instead of running " + c.o.Name + ": " + cause, fix
	case kindPage:
		return c.causeForeignPage(a)
	}
	return "an answer check cannot explain", "read the web server's error log"
}

func (c *checker) handlerFix() string {
	return "make sure .htaccess is read (AllowOverride FileInfo Options, or All) and mod_fcgid is loaded; or put the handler in the server config: " + c.o.Name + " deploy apache-fcgid"
}

// cause403 orders the reasons for a 403: a deny in .htaccess, a directory
// the web server cannot enter, .htaccess ignored, no rewrite, no ExecCGI.
func (c *checker) cause403(p probeSet) (string, string) {
	h := c.readHtaccess()
	if n, l := h.find(`(?i)^\s*(Require\s+all\s+denied|Deny\s+from\s+all)\b`, true); n > 0 {
		return fmt.Sprintf(".htaccess line %d (%s) denies every request", n, l), "remove that line, or limit it to the files it should protect with <Files ...>"
	}
	if d, mode := c.closedParent(); d != "" {
		return fmt.Sprintf("the web server (another user) cannot enter %s (mode %04o)", d, mode), "chmod o+x " + shellQuote(d)
	}
	switch {
	case p.direct.kind() == kindBinary:
		return ".htaccess is ignored (AllowOverride None): no handler and no rewrite apply", c.handlerFix()
	case p.direct.ours():
		return c.rewriteCause(p)
	}
	if n, _ := h.find(`(?i)^\s*Options\s+.*\+?ExecCGI`, false); n == 0 {
		return "ExecCGI is not enabled here, so mod_fcgid refuses to run " + c.o.Name + " (its error log: \"... does not have ExecCGI enabled\")",
			"add the line \"Options +ExecCGI\" to " + filepath.Join(c.dir, ".htaccess") + " (the host must allow AllowOverride Options; else ask them to enable ExecCGI)"
	}
	return "ExecCGI, file permissions, or a Require in the server's config", "read the web server's error log for this URL"
}

// cause404 tells a wrong URL from a missing or ignored rewrite.
func (c *checker) cause404(p probeSet) (string, string) {
	switch {
	case p.direct.kind() == kindNotFound:
		return "nothing at this URL leads to " + c.dir + " (" + p.direct.url + " is 404 too)",
			"check the URL (a ~user site is https://host/~user/...), and that the directory is below the web server's document root"
	case p.direct.kind() == kindBinary:
		return ".htaccess is ignored (AllowOverride None): no handler and no rewrite apply", c.handlerFix()
	case p.direct.ours():
		return c.rewriteCause(p)
	}
	return "the web server found nothing to run", "read the web server's error log for this URL"
}

// rewriteCause: the binary answers by name, but not below the URL.
func (c *checker) rewriteCause(p probeSet) (string, string) {
	if n, _ := c.readHtaccess().find(`(?i)^\s*RewriteRule\s+\S+\s+\S*`+regexp.QuoteMeta(c.o.Name), false); n > 0 {
		return fmt.Sprintf("the rewrite on .htaccess line %d is ignored: AllowOverride lacks FileInfo, or mod_rewrite is not loaded", n),
			"ask the host for AllowOverride FileInfo and mod_rewrite; until then the site answers at " + p.direct.url
	}
	return "no rewrite sends requests to " + c.o.Name + " (only " + p.direct.url + " reaches it)",
		c.o.Name + " install " + shellQuote(c.dir) + " (adds the rewrite to .htaccess)"
}

// cause500 is the web server's own 500: the binary did not start.
func (c *checker) cause500() (string, string) {
	if c.suexec.on {
		if rs := suexecRefusals(c.dir, c.bin, c.suexec); len(rs) > 0 {
			return "suEXEC refuses to run " + c.o.Name + " (" + rs[0].rule + ")", rs[0].fix
		}
		return "the binary did not start: suEXEC refused it (" + c.suexec.conf.LogExec + " says why), or it cannot run on this host",
			"read " + c.suexec.conf.LogExec + " and the web server's error log"
	}
	return "the binary did not start: it cannot run on this host (architecture, permissions), or .htaccess has a line the server does not allow",
		"read the web server's error log; on the host run " + c.bin + " serve --http 127.0.0.1:8000"
}

// causeForeignPage names a 2xx page that is not ours.
func (c *checker) causeForeignPage(a answer) (string, string) {
	if idx := c.localIndex(a); idx != "" {
		return filepath.Base(idx) + " in the directory answers instead of " + c.o.Name, "remove or rename " + shellQuote(idx)
	}
	return "a page that is not ours (\"" + firstLine(a.body) + "\"): this URL is served by something else", "check the URL; it must lead to " + c.dir
}

// closedParent is the first directory from / to the site that others
// cannot enter (the web server runs as another user).
func (c *checker) closedParent() (string, os.FileMode) {
	var dirs []string
	for d := c.dir; ; d = filepath.Dir(d) {
		dirs = append([]string{d}, dirs...)
		if d == "/" || d == "." {
			break
		}
	}
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return d, fi.Mode().Perm()
		}
	}
	return "", 0
}

// htaccessLines is the site's .htaccess, line by line.
type htaccessLines []string

func (c *checker) readHtaccess() htaccessLines {
	b, err := os.ReadFile(filepath.Join(c.dir, ".htaccess"))
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// find returns the 1-based number and text of the first line matching
// pattern; outsideFiles skips lines inside <Files>/<FilesMatch> sections.
func (h htaccessLines) find(pattern string, outsideFiles bool) (int, string) {
	re := regexp.MustCompile(pattern)
	depth := 0
	for i, l := range h {
		t := strings.TrimSpace(l)
		switch {
		case reFiles().MatchString(t):
			depth++
		case strings.HasPrefix(strings.ToLower(t), "</files"):
			depth--
		case re.MatchString(t) && !(outsideFiles && depth > 0):
			return i + 1, t
		}
	}
	return 0, ""
}

// pageMessage is the text of one of our error pages without its heading.
func pageMessage(b []byte) string {
	var lines []string
	for _, l := range strings.Split(reTags().ReplaceAllString(string(b), "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 1 {
		lines = lines[1:] // the <h1> (reTags drops the <title>)
	}
	s := html.UnescapeString(strings.Join(lines, " "))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// guessURL is the site's likely address: /~user/... for a ~user site,
// else a placeholder for the host and path.
func (c *checker) guessURL() string {
	u := c.suexec
	if u.userdir && u.target.name != "" {
		if rel, err := filepath.Rel(evalOr(u.docroot()), evalOr(c.dir)); err == nil && !strings.HasPrefix(rel, "..") {
			p := "/~" + u.target.name + "/"
			if rel != "." {
				p += filepath.ToSlash(rel) + "/"
			}
			return "https://<your host>" + p
		}
	}
	return "https://<your host>/<path to " + filepath.Base(c.dir) + ">/"
}

// localIndex is the index file in the site's directory whose content a's
// body is; "" when none.
func (c *checker) localIndex(a answer) string {
	for _, idx := range []string{"index.html", "index.htm"} {
		p := filepath.Join(c.dir, idx)
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 && bytes.Equal(b, a.body) {
			return p
		}
	}
	return ""
}

// lazyRegexp compiles pattern on first use. The deploy checks run only from
// the command line, but this package is linked into every copy the web
// server spawns, where compiling them at start-up would be wasted work.
func lazyRegexp(pattern string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(pattern) })
}
