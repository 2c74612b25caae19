package deploy

import (
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Params fill in a configuration. Zero values work: every empty field has a
// placeholder or a value derived from Name and Dir (see Defaults).
type Params struct {
	// Name is the binary's file name; "" = "mysite.fcgi".
	Name string
	// Dir is the absolute directory holding the binary (the document root
	// for Apache and lighttpd); "" = "/home/user/public_html".
	Dir string
	// Config is the config file; "" = Dir/<base>.toml.
	Config string
	// Socket is the unix socket of an external server; "" = Dir/<base>.sock.
	// Ignored when Port is set.
	Socket string
	// Host and Port select TCP instead of Socket; Host "" = 127.0.0.1.
	Host string
	Port int
	// ServerName is the site's host name; "" = "example.com".
	ServerName string
	// Listen is where the web server listens ("127.0.0.1:8080", ":80");
	// "" = port 80 in each server's own spelling.
	Listen string
	// Prefix is the URL path the site is mounted at ("/app"); "" = the root.
	Prefix string
	// Backends are host:port (or /path) addresses of several external
	// servers (haproxy, nginx upstream); nil = the one from Socket or Port.
	Backends []string
	// Sites are several sites on one lighttpd, chosen by Host header; nil =
	// one site.
	Sites []Site
	// Static maps URL prefixes (as the app sees them) to directories, as
	// [static] in mysite.toml does; the web server serves them directly.
	Static map[string]string
	// User runs the external server; "" = www-data (as Debian's php-fpm
	// pool does), except for the init script, where "" = whoever runs it.
	User string
	// WebGroup is the group the external server's unix socket is given to
	// (mode 0660), so the web server can connect; "" = the target's own
	// (www-data; haproxy for HAProxy).
	WebGroup string
}

// Site is one lighttpd virtual host.
type Site struct {
	Host string // Host header value
	Dir  string // directory holding that site's binary; socket = Dir/<base>.sock
}

// Defaults returns p with every empty field filled in.
func (p Params) Defaults() Params {
	if p.Name == "" {
		p.Name = "mysite.fcgi"
	}
	if p.Dir == "" {
		p.Dir = "/home/user/public_html"
	}
	p.Dir = strings.TrimRight(p.Dir, "/")
	if p.Dir == "" {
		p.Dir = "/"
	}
	if p.Config == "" {
		p.Config = filepath.Join(p.Dir, p.Base()+".toml")
	}
	if p.Socket == "" {
		p.Socket = filepath.Join(p.Dir, p.Base()+".sock")
	}
	if p.Port != 0 && p.Host == "" {
		p.Host = "127.0.0.1"
	}
	if p.ServerName == "" {
		p.ServerName = "example.com"
	}
	p.Prefix = strings.TrimRight(p.Prefix, "/")
	if p.Prefix != "" && !strings.HasPrefix(p.Prefix, "/") {
		p.Prefix = "/" + p.Prefix
	}
	return p
}

// Base is the name without its extension: "mysite" for mysite.fcgi. Units,
// init scripts and backends are named after it.
func (p Params) Base() string {
	n := p.Name
	if n == "" {
		n = "mysite.fcgi"
	}
	return strings.TrimSuffix(n, filepath.Ext(n))
}

// Binary is the binary's absolute path.
func (p Params) Binary() string { return filepath.Join(p.Dir, p.Name) }

// TCP reports whether the external server listens on TCP.
func (p Params) TCP() bool { return p.Port != 0 }

// Addr is the external server's address as serve --listen takes it.
func (p Params) Addr() string {
	if p.TCP() {
		return p.HostPort()
	}
	return "unix:" + p.Socket
}

// HostPort is Host:Port.
func (p Params) HostPort() string { return joinHostPort(p.Host, p.Port) }

// RunUser is who runs the external server.
func (p Params) RunUser() string {
	if p.User == "" {
		return "www-data"
	}
	return p.User
}

// ServeCommand is the command line, run by root, that starts the external
// server on addr ("unix:/path" or host:port): it switches to RunUser once it
// listens, and gives a unix socket to group with mode 0660.
func (p Params) ServeCommand(addr, group string) string {
	cmd := shellQuote(p.Binary()) + " serve --listen " + shellQuote(addr) + " --protocol fcgi --user " + shellQuote(p.RunUser())
	if strings.HasPrefix(addr, "unix:") {
		cmd += " --listen-group " + shellQuote(group) + " --listen-mode 0660"
	}
	return cmd
}

// RunfcgiCommand is ServeCommand in runfcgi's spelling, as Django's guide
// started the server: threaded, in the foreground.
func (p Params) RunfcgiCommand(addr, group string) string {
	cmd := shellQuote(p.Binary()) + " runfcgi method=threaded"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		cmd += " " + shellQuote("socket="+path)
	} else {
		i := strings.LastIndex(addr, ":")
		cmd += " " + shellQuote("host="+strings.Trim(addr[:i], "[]")) + " port=" + addr[i+1:]
	}
	cmd += " daemonize=false " + shellQuote("user="+p.RunUser())
	if strings.HasPrefix(addr, "unix:") {
		cmd += " " + shellQuote("listen.group="+group) + " listen.mode=0660"
	}
	return cmd
}

// BackendAddrs are the external servers: Backends, or the one of Socket or
// Port. Unix sockets are absolute paths.
func (p Params) BackendAddrs() []string {
	if len(p.Backends) > 0 {
		return p.Backends
	}
	if p.TCP() {
		return []string{p.HostPort()}
	}
	return []string{p.Socket}
}

// StaticDirs returns the [static] mappings with URL prefixes made absolute
// (Prefix added) and ending in "/", sorted longest first.
func (p Params) StaticDirs() []StaticDir {
	var ds []StaticDir
	for u, d := range p.Static {
		u = "/" + strings.Trim(u, "/") + "/"
		if u == "//" {
			continue
		}
		ds = append(ds, StaticDir{URL: p.Prefix + u, Dir: strings.TrimRight(d, "/") + "/"})
	}
	sort.Slice(ds, func(i, j int) bool {
		if len(ds[i].URL) != len(ds[j].URL) {
			return len(ds[i].URL) > len(ds[j].URL)
		}
		return ds[i].URL < ds[j].URL
	})
	return ds
}

// StaticDir is one directory served by the web server, URL and Dir both
// ending in "/".
type StaticDir struct{ URL, Dir string }

func joinHostPort(h string, port int) string {
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(port)
}

// shellQuote quotes s for sh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=+,@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
