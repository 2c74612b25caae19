package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the decoded mysite.toml. The zero value is valid: no app (the
// info page answers), no static directories, prefix derived from the request.
type Config struct {
	// File is the path the config was read from; "" when none existed.
	File string `toml:"-"`

	App    App               `toml:"app"`
	Static map[string]string `toml:"static"` // URL prefix as the app sees it → directory
	Server Server            `toml:"server"`
	Limits Limits            `toml:"limits"`
}

// App describes the HTTP application behind mysite.fcgi. WSGI, Command and
// Upstream are exclusive; with none, the built-in info page is served.
type App struct {
	// Command is the child app's argv; "{socket}" and "{port}" are replaced
	// with a private unix socket path or a free loopback port. With WSGI set,
	// Parse fills it with the built-in runner's command (see WSGICommand).
	Command []string `toml:"command"`
	// WSGI is a Python WSGI application, "module" or "module:callable"
	// (callable "application" by default), served by the built-in runner
	// on a private unix socket; the workdir goes first on sys.path. "" =
	// none.
	WSGI string `toml:"wsgi"`
	// Python is the interpreter that runs the WSGI runner: a name looked up
	// on the app's PATH or a path (a virtualenv's bin/python). "" = python3.
	Python string `toml:"python"`
	// Workers is how many processes the WSGI runner forks (each takes
	// connections only while the ones before it are saturated and a CPU is
	// idle, or are handed a slow request's neighbours); 0 = one per CPU,
	// at least 2.
	Workers int `toml:"workers"`
	// Upstream is an app that is already running: "http://host:port" or
	// "unix:/path/to.sock".
	Upstream string            `toml:"upstream"`
	Workdir  string            `toml:"workdir"` // "" = the config file's directory
	Env      map[string]string `toml:"env"`     // extra environment for the child
	// EnvFile is a file of KEY=VALUE lines added to the child's environment
	// (Env wins on a clash), for secrets kept out of the document root: an
	// absolute path or "~/..." (the account's home). It must be ours and
	// private (ReadEnvFile). "" = none.
	EnvFile string `toml:"env_file"`
	// EnvAllow names variables of our own environment passed to the child in
	// addition to the built-in allow-list (PATH, HOME, LANG, …).
	EnvAllow []string `toml:"env_allow"`
	// ReadyPath is asked (GET) of a new instance before any request is
	// forwarded to it, and must answer below 500. "" = "/" is asked and any
	// answer counts: accepting a connection is not enough (gunicorn listens
	// before its workers have loaded the app).
	ReadyPath    string   `toml:"ready_path"`
	ReadyTimeout Duration `toml:"ready_timeout"` // 0 = 30s
	StopGrace    Duration `toml:"stop_grace"`    // SIGTERM→SIGKILL; 0 = 10s
	Timeout      Duration `toml:"timeout"`       // wait for response headers; 0 = 60s
	Log          string   `toml:"log"`           // file for the app's output; "" = our stderr
	RuntimeDir   string   `toml:"runtime_dir"`   // private state dir; "" = derived
	// IdleStop stops the shared app after this long without any copy of
	// mysite.fcgi alive; 0 = 15s (so the app is gone within 30 s of the web
	// server stopping, stop_grace included).
	IdleStop Duration `toml:"idle_stop"`
	// PassHeaders lets X-Sendfile / X-Accel-* response headers from the app
	// through to the web server. Off by default.
	PassSendfile bool `toml:"pass_sendfile"`
	// StripPrefix sends the app the path below the mount prefix (/mysite/a
	// arrives as /a), for apps that know nothing of SCRIPT_NAME, and puts
	// the prefix back on Location headers that point into the site and on
	// cookie paths. false
	// = the full path plus SCRIPT_NAME and X-Forwarded-Prefix headers.
	StripPrefix bool `toml:"strip_prefix"`
	// ProxyProtocol starts every connection to the app with a PROXY
	// protocol v1 line naming the client (gunicorn --proxy-protocol sets
	// REMOTE_ADDR from it); such connections are not reused for other
	// requests. false = plain HTTP (the client is in X-Forwarded-For).
	ProxyProtocol bool `toml:"proxy_protocol"`
}

// Server holds how we serve: the prefix repair, recycling, restart watching,
// and the runfcgi-style options (same names as Django's runfcgi).
type Server struct {
	// ForceScriptName, when set (even to ""), is the mount prefix; unset =
	// derive it from SCRIPT_URL/REDIRECT_URL minus PATH_INFO, as Django did.
	ForceScriptName *string `toml:"force_script_name"`
	// MaxRequests recycles the process after this many requests; 0 = never.
	MaxRequests int `toml:"maxrequests"`
	// MaxLifetime recycles the process after it has run this long, plus up
	// to a tenth more at random (copies started together do not all
	// recycle together); 0 = never.
	MaxLifetime Duration `toml:"max_lifetime"`
	// PingPath answers "pong" (for a load balancer or a monitor); "" = off.
	// It and StatusPath are paths below the mount prefix, as [static]'s.
	PingPath string `toml:"ping_path"`
	// StatusPath answers a JSON status of this process and the app to a
	// request bearing StatusToken (Authorization: Bearer, or the
	// X-Status-Token header); "" = off.
	StatusPath  string `toml:"status_path"`
	StatusToken string `toml:"status_token"`
	// Watch selects restart detection: "auto" (inotify, polling on NFS or
	// when inotify fails), "poll", or "off". "" = "auto".
	Watch        string   `toml:"watch"`
	PollInterval Duration `toml:"poll_interval"` // 0 = 2s
	Grace        Duration `toml:"grace"`         // drain on stop; 0 = 2.5s (inside mod_fcgid's 3s)

	Protocol    string `toml:"protocol"` // fcgi, scgi, ajp, http
	Host        string `toml:"host"`
	Port        int    `toml:"port"`
	Socket      string `toml:"socket"`
	Method      string `toml:"method"` // prefork, threaded
	MaxChildren int    `toml:"maxchildren"`
	MinSpare    int    `toml:"minspare"`
	MaxSpare    int    `toml:"maxspare"`
	Daemonize   *bool  `toml:"daemonize"`
	Pidfile     string `toml:"pidfile"`
	Workdir     string `toml:"workdir"`
	Umask       string `toml:"umask"`
	Outlog      string `toml:"outlog"`
	Errlog      string `toml:"errlog"`
	Debug       bool   `toml:"debug"`
	Secret      string `toml:"secret"` // AJP secret; "" = not required

	// Listen sets who may connect to the unix socket (php-fpm's
	// listen.owner, listen.group, listen.mode; written listen.owner = "…"
	// under [server]). Empty = the socket is ours, mode from umask.
	Listen SocketListen `toml:"listen"`
	// ChownSocket ("user", "user:group", ":group") and ChmodSocket ("660")
	// are uWSGI's spellings of the same; set one spelling, not both.
	ChownSocket string `toml:"chown-socket"`
	ChmodSocket string `toml:"chmod-socket"`
	// User is who the server runs as once its socket exists (it starts as
	// root); "" = whoever starts it.
	User string `toml:"user"`
}

// SocketListen is the owner, group and mode of the server's unix socket.
type SocketListen struct {
	Owner string `toml:"owner"` // user name or ID; "" = the server's user
	Group string `toml:"group"` // group name or ID; "" = the server's group
	Mode  string `toml:"mode"`  // octal ("0660"); "" = 0660 with owner or group, else from umask
}

// Limits bound what one peer can make us hold. Zero means the default.
type Limits struct {
	MaxParamsBytes int      `toml:"max_params_bytes"`  // 0 = 1 MiB
	MaxHeaderBytes int      `toml:"max_header_bytes"`  // 0 = 1 MiB
	MaxReqsPerConn int      `toml:"max_reqs_per_conn"` // 0 = 64
	MaxConns       int      `toml:"max_conns"`         // 0 = 1024
	MaxBodyBytes   int64    `toml:"max_body_bytes"`    // 0 = unlimited
	HeaderTimeout  Duration `toml:"header_timeout"`    // 0 = 30s
	IdleTimeout    Duration `toml:"idle_timeout"`      // 0 = 120s
	RequestTimeout Duration `toml:"request_timeout"`   // 0 = none
	WriteTimeout   Duration `toml:"write_timeout"`     // fcgi: one write to the web server; 0 = 60s
	// SlowRequest logs a warning for each request still running after this
	// long (method and path, never the query), and its total time when it
	// ends; 0 = off.
	SlowRequest Duration `toml:"slow_request"`
	// MaxResponseHeaderBytes bounds the app's response header block; a
	// larger one, or any line over 8 KiB (Apache's limit), becomes our 502
	// instead of the web server's opaque 500. 0 = 64 KiB.
	MaxResponseHeaderBytes int `toml:"max_response_header_bytes"`
}

// Duration is a time.Duration written as "1.5s", "250ms" in TOML.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Error is a config problem at a place in a file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted key, "" when not about one key
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %q", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// PathFor returns the conventional config path for a binary: its name with
// the extension replaced by ".toml" (mysite.fcgi → mysite.toml).
func PathFor(binary string) string {
	ext := filepath.Ext(binary)
	return strings.TrimSuffix(binary, ext) + ".toml"
}

// Load reads and validates path. A missing file is not an error: it yields
// the zero Config with File "".
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes data (named path in errors) strictly and validates it.
func Parse(path string, data []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: path, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		// Type mismatches come as plain errors: "toml: line N (last key
		// "k"): msg"; lift the line and key out of the text.
		if m := typeErrRe().FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Error{File: path, Line: line, Key: m[2], Msg: m[3]}
		}
		return nil, &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, &Error{File: path, Line: lineOf(data, k), Key: k.String(), Msg: "unknown key" + suggest(k)}
	}
	c.File = path
	if err := c.validate(data); err != nil {
		return nil, err
	}
	if c.App.WSGI != "" {
		c.App.Command = c.App.WSGICommand()
	}
	return &c, nil
}

// WSGIRunnerArg is the argument of WSGICommand that the supervisor replaces
// with the path of the runner it writes (a placeholder of ours only: it is
// not replaced in a command the user wrote).
const WSGIRunnerArg = "{wsgi_runner}"

// WSGICommand is the runner's argv for a WSGI app: the interpreter, the
// runner (WSGIRunnerArg), the socket, the app and the worker count.
func (a App) WSGICommand() []string {
	python := a.Python
	if python == "" {
		python = "python3"
	}
	argv := []string{python, WSGIRunnerArg, "--socket", "{socket}", "--app", a.WSGI, "--workers", strconv.Itoa(a.Workers)}
	if a.StripPrefix {
		argv = append(argv, "--strip-prefix")
	}
	return argv
}

func (c *Config) validate(data []byte) error {
	bad := func(key, format string, args ...any) error {
		parts := strings.Split(key, ".")
		return &Error{File: c.File, Line: lineOf(data, toml.Key(parts)), Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	a := c.App
	if err := validateWSGI(a, bad); err != nil {
		return err
	}
	if len(a.Command) > 0 && a.Upstream != "" {
		return bad("app.upstream", "set either app.command or app.upstream, not both")
	}
	if len(a.Command) > 0 && a.Command[0] == "" {
		return bad("app.command", "the first element (the program) is empty")
	}
	if a.Upstream != "" && !strings.HasPrefix(a.Upstream, "http://") && !strings.HasPrefix(a.Upstream, "unix:") {
		return bad("app.upstream", "want http://host:port or unix:/path, got %q", a.Upstream)
	}
	if a.EnvFile != "" && !filepath.IsAbs(a.EnvFile) && !strings.HasPrefix(a.EnvFile, "~/") {
		return bad("app.env_file", "want an absolute path or ~/...: a relative one would lie beside the config, where the web server can serve it")
	}
	if a.ReadyPath != "" && !strings.HasPrefix(a.ReadyPath, "/") {
		return bad("app.ready_path", "must start with /")
	}
	for prefix, dir := range c.Static {
		if !strings.HasPrefix(prefix, "/") {
			return bad("static."+prefix, "URL prefix must start with /")
		}
		if dir == "" {
			return bad("static."+prefix, "directory is empty")
		}
	}
	switch c.Server.Watch {
	case "", "auto", "poll", "off":
	default:
		return bad("server.watch", "want auto, poll or off, got %q", c.Server.Watch)
	}
	switch c.Server.Protocol {
	case "", "fcgi", "scgi", "ajp", "http":
	default:
		return bad("server.protocol", "want fcgi, scgi, ajp or http, got %q", c.Server.Protocol)
	}
	switch c.Server.Method {
	case "", "prefork", "fork", "threaded", "thread":
	default:
		return bad("server.method", "want prefork or threaded, got %q", c.Server.Method)
	}
	if err := c.Server.validateSocket(bad); err != nil {
		return err
	}
	if c.Server.MaxRequests < 0 {
		return bad("server.maxrequests", "must not be negative")
	}
	if p := c.Server.PingPath; p != "" && !strings.HasPrefix(p, "/") {
		return bad("server.ping_path", "must start with /")
	}
	if p := c.Server.StatusPath; p != "" {
		if !strings.HasPrefix(p, "/") {
			return bad("server.status_path", "must start with /")
		}
		if len(c.Server.StatusToken) < 16 {
			return bad("server.status_path", "needs server.status_token, at least 16 characters (the status is for operators only)")
		}
	}
	return nil
}

// validWSGISpec reports whether s is a dotted Python module path,
// optionally ":callable" (a dotted attribute path), in ASCII identifiers.
func validWSGISpec(s string) bool {
	module, callable, hasCallable := strings.Cut(s, ":")
	return dottedName(module) && (!hasCallable || dottedName(callable))
}

func dottedName(s string) bool {
	for _, id := range strings.Split(s, ".") {
		if id == "" || id[0] >= '0' && id[0] <= '9' {
			return false
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

// validateWSGI checks app.wsgi and the keys that go with it.
func validateWSGI(a App, bad func(key, format string, args ...any) error) error {
	if a.WSGI == "" {
		switch {
		case a.Python != "":
			return bad("app.python", "only used with app.wsgi, which is not set")
		case a.Workers != 0:
			return bad("app.workers", "only used with app.wsgi, which is not set")
		}
		return nil
	}
	switch {
	case len(a.Command) > 0:
		return bad("app.wsgi", "set one of app.wsgi, app.command and app.upstream, not both wsgi and command")
	case a.Upstream != "":
		return bad("app.wsgi", "set one of app.wsgi, app.command and app.upstream, not both wsgi and upstream")
	case a.ProxyProtocol:
		return bad("app.proxy_protocol", "not with app.wsgi: the WSGI runner takes the visitor's address from our X-Real-Ip header and would refuse a PROXY line")
	case !validWSGISpec(a.WSGI):
		return bad("app.wsgi", "want a Python module path, optionally with :callable (\"mysite.wsgi\", \"app:server\"), got %q", a.WSGI)
	case a.Workers < 0:
		return bad("app.workers", "must not be negative (0 = one per CPU, at least 2)")
	case a.Workers > 1024:
		return bad("app.workers", "%d processes is more than any site needs (at most 1024)", a.Workers)
	case a.Python != "" && strings.TrimSpace(a.Python) != a.Python:
		return bad("app.python", "the interpreter %q has leading or trailing spaces", a.Python)
	}
	return nil
}

// validateSocket checks the socket's owner, group and mode keys.
func (s Server) validateSocket(bad func(key, format string, args ...any) error) error {
	for _, km := range [][2]string{{"server.listen.mode", s.Listen.Mode}, {"server.chmod-socket", s.ChmodSocket}} {
		key, mode := km[0], km[1]
		if mode == "" {
			continue
		}
		if n, err := strconv.ParseUint(mode, 8, 32); err != nil || n == 0 || n > 0o777 {
			return bad(key, "want octal permission bits between 1 and 0777, like \"0660\", got %q", mode)
		}
	}
	if s.ChmodSocket != "" && s.Listen.Mode != "" {
		return bad("server.chmod-socket", "set server.listen.mode or server.chmod-socket, not both")
	}
	if c := s.ChownSocket; c != "" {
		owner, group, _ := strings.Cut(c, ":")
		if owner == "" && group == "" || strings.ContainsAny(owner+group, ": \t") {
			return bad("server.chown-socket", "want \"user\", \"user:group\" or \":group\", got %q", c)
		}
		if s.Listen.Owner != "" || s.Listen.Group != "" {
			return bad("server.chown-socket", "set server.listen.owner/group or server.chown-socket, not both")
		}
	}
	return nil
}

// Dir returns the directory relative paths in the config are resolved
// against: the config file's own directory, or "." without a file.
func (c *Config) Dir() string {
	if c.File == "" {
		return "."
	}
	return filepath.Dir(c.File)
}

// Resolve makes p absolute relative to the config's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	d, err := filepath.Abs(c.Dir())
	if err != nil {
		return p
	}
	return filepath.Join(d, p)
}

// StaticPrefixes returns the [static] prefixes longest first, so the most
// specific mapping wins.
func (c *Config) StaticPrefixes() []string {
	ps := make([]string, 0, len(c.Static))
	for p := range c.Static {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if len(ps[i]) != len(ps[j]) {
			return len(ps[i]) > len(ps[j])
		}
		return ps[i] < ps[j]
	})
	return ps
}

// The two patterns are compiled on first use: a spawned copy that loads a
// valid config never runs the regexp compiler.
var typeErrRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)
})

var tableRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$`)
})

// lineOf finds the line where key is written: the last component assigned
// inside the table named by the other components. 0 when not found.
func lineOf(data []byte, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	table := strings.Join(k[:len(k)-1], ".")
	name := k[len(k)-1]
	cur := ""
	for i, line := range strings.Split(string(data), "\n") {
		if m := tableRe().FindStringSubmatch(line); m != nil {
			cur = strings.ReplaceAll(m[1], `"`, "")
			cur = strings.ReplaceAll(cur, " ", "")
			if cur == strings.Join(k, ".") {
				return i + 1
			}
			continue
		}
		t := strings.TrimSpace(line)
		eq := strings.IndexByte(t, '=')
		if eq < 0 {
			continue
		}
		lhs := strings.Trim(strings.TrimSpace(t[:eq]), `"'`)
		full := lhs
		if cur != "" {
			full = cur + "." + lhs
		}
		if full == strings.Join(k, ".") || (cur == table && lhs == name) {
			return i + 1
		}
	}
	return 0
}

var known = []string{
	"app", "static", "server", "limits",
	"command", "wsgi", "python", "workers", "upstream", "workdir", "env", "env_allow", "ready_path", "ready_timeout",
	"stop_grace", "timeout", "log", "runtime_dir", "idle_stop", "pass_sendfile", "strip_prefix", "proxy_protocol",
	"force_script_name", "maxrequests", "watch", "poll_interval", "grace", "protocol",
	"host", "port", "socket", "method", "maxchildren", "minspare", "maxspare",
	"daemonize", "pidfile", "umask", "outlog", "errlog", "debug", "secret",
	"listen", "owner", "group", "mode", "chown-socket", "chmod-socket", "user",
	"max_params_bytes", "max_header_bytes", "max_reqs_per_conn", "max_conns",
	"max_body_bytes", "header_timeout", "idle_timeout", "request_timeout",
}

// suggest names a known key close to the last component of k, if any.
func suggest(k toml.Key) string {
	name := k[len(k)-1]
	best, bestD := "", 3
	for _, w := range known {
		if d := distance(name, w); d < bestD {
			best, bestD = w, d
		}
	}
	if best == "" || best == name {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
