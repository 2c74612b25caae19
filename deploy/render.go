package deploy

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Target is one configuration Render can write.
type Target struct {
	Name    string
	Summary string // one line for the list
	render  func(p Params) (string, error)
}

// Targets lists every target in the order `deploy` shows them.
func Targets() []Target {
	return []Target{
		{"htaccess-fcgid", "shared hosting, Apache + mod_fcgid (most hosts): .htaccess", htaccessFcgid},
		{"htaccess-fastcgi", "shared hosting, Apache + the old mod_fastcgi: .htaccess", htaccessFastCGI},
		{"htaccess-cgi", "shared hosting with plain CGI only (one process per request): .htaccess", htaccessCGI},
		{"apache-fcgid", "Apache vhost, mod_fcgid starts the binary on demand", apacheFcgid},
		{"apache-proxy-fcgi", "Apache vhost, mod_proxy_fcgi to an external server (serve --listen)", apacheProxyFcgi},
		{"apache-fastcgi-external", "Apache vhost, mod_fastcgi FastCGIExternalServer + mod_rewrite (Django's guide)", apacheFastCGIExternal},
		{"lighttpd", "lighttpd mod_fastcgi to an external server; --sites for several hosts", lighttpd},
		{"nginx", "nginx fastcgi_pass to an external server, kept-alive upstream", nginx},
		{"caddy", "Caddyfile, reverse_proxy with the fastcgi transport", caddy},
		{"haproxy", "HAProxy fcgi-app over one or more external servers (--backends)", haproxy},
		{"systemd", "systemd socket + service units (socket activation)", systemd},
		{"init-script", "SysV init script: start/stop/restart/status with a pidfile (runfcgi)", initScript},
	}
}

// Render returns the configuration for target.
func Render(target string, p Params) (string, error) {
	for _, t := range Targets() {
		if t.Name == target {
			return t.render(p.Defaults())
		}
	}
	var names []string
	for _, t := range Targets() {
		names = append(names, t.Name)
	}
	return "", fmt.Errorf("unknown target %q (want one of: %s)", target, strings.Join(names, ", "))
}

// Markers delimit what fcgishim owns in a .htaccess file.
const (
	BlockBegin = "# BEGIN fcgishim"
	BlockEnd   = "# END fcgishim"
)

func htaccessFcgid(p Params) (string, error) {
	return htaccess(p, "fcgid-script", "mod_fcgid", []string{
		"# Uploads: mod_fcgid refuses request bodies above FcgidMaxRequestLen",
		"# (128 KiB by default) with a 500; only the host can raise it.",
	}), nil
}

func htaccessFastCGI(p Params) (string, error) {
	return htaccess(p, "fastcgi-script", "mod_fastcgi", nil), nil
}

func htaccessCGI(p Params) (string, error) {
	return htaccess(p, "cgi-script", "plain CGI", []string{
		"# Each request starts the binary anew: fine for small sites, slow for big apps.",
	}), nil
}

// aq quotes a value for Apache's config.
func aq(s string) string { return strconv.Quote(s) }

func vhostListen(p Params) string {
	if p.Listen == "" {
		return "*:80"
	}
	if strings.HasPrefix(p.Listen, ":") {
		return "*" + p.Listen
	}
	return p.Listen
}

// apacheStatic writes Alias lines for [static] directories; exclude is an
// extra line per directory (ProxyPass URL !).
func apacheStatic(b *strings.Builder, p Params, exclude func(StaticDir) string) {
	ds := p.StaticDirs()
	if len(ds) == 0 {
		return
	}
	b.WriteString("    # Static files straight from disk (the [static] table of " + filepath.Base(p.Config) + ").\n")
	for _, d := range ds {
		if exclude != nil {
			fmt.Fprintf(b, "    %s\n", exclude(d))
		}
		fmt.Fprintf(b, "    Alias %s %s\n", aq(d.URL), aq(d.Dir))
		fmt.Fprintf(b, "    <Directory %s>\n        Require all granted\n    </Directory>\n", aq(d.Dir))
	}
}

func apacheFcgid(p Params) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `# Apache + mod_fcgid: Apache starts %[1]s on demand; there is no daemon to run.
# It runs as Apache's user (www-data), or as SuexecUserGroup's user under suEXEC.
# Needs: a2enmod fcgid alias; put this in /etc/apache2/sites-available/%[2]s.conf.
<VirtualHost %[3]s>
    ServerName %[4]s
    DocumentRoot %[5]s
    # Request bodies above this are refused with a 500 (mod_fcgid's default
    # is 128 KiB, too small for uploads): 1 GiB here.
    FcgidMaxRequestLen 1073741824
    # Seconds the app may take to start answering a request (default 40).
    FcgidIOTimeout 300
    # The minimal environment mod_fcgid gives the program (suEXEC drops it).
    FcgidInitialEnv LANG C.UTF-8
`, p.Name, p.Base(), vhostListen(p), p.ServerName, aq(p.Dir))
	apacheStatic(&b, p, nil)
	mount, target := p.Prefix, p.Binary()
	if mount == "" {
		mount, target = "/", target+"/"
	}
	fmt.Fprintf(&b, `    # Every other URL under %[1]s runs the app, which sees SCRIPT_NAME=%[2]q.
    ScriptAlias %[3]s %[4]s
    <Directory %[5]s>
        Options +ExecCGI
        AllowOverride None
        Require all granted
        <Files %[6]s>
            SetHandler fcgid-script
            # The program mod_fcgid runs; replace it by rename (install does)
            # and the site restarts with no failed request.
            FcgidWrapper %[7]s
        </Files>
    </Directory>
</VirtualHost>
`, mount, p.Prefix, aq(mount), aq(target), aq(p.Dir), aq(p.Name), aq(p.Binary()))
	return b.String(), nil
}

func apacheProxyFcgi(p Params) (string, error) {
	var b strings.Builder
	url := "unix:" + p.Socket + "|fcgi://localhost" + p.Prefix + "/"
	if p.TCP() {
		url = "fcgi://" + p.HostPort() + p.Prefix + "/"
	}
	b.WriteString("# Apache + mod_proxy_fcgi in front of an external server.\n")
	start(&b, p, webApache, p.Addr())
	fmt.Fprintf(&b, `# Needs: a2enmod proxy proxy_fcgi alias; put this in /etc/apache2/sites-available/%[1]s.conf.
<VirtualHost %[2]s>
    ServerName %[3]s
    DocumentRoot %[4]s
`, p.Base(), vhostListen(p), p.ServerName, aq(p.Dir))
	apacheStatic(&b, p, func(d StaticDir) string { return "ProxyPass " + aq(d.URL) + " !" })
	mount := p.Prefix + "/"
	fmt.Fprintf(&b, `    # The app is mounted at %[5]s; it sees SCRIPT_NAME=%[2]q.
    ProxyPass %[3]s %[4]s
    ProxyFCGISetEnvIf "true" SCRIPT_NAME %[2]q
`, mount, p.Prefix, aq(mount), aq(url), mountDesc(p.Prefix))
	if p.Prefix != "" {
		fmt.Fprintf(&b, "    RedirectMatch 301 ^%s$ %s/\n", regexpQuote(p.Prefix), p.Prefix)
	}
	b.WriteString(`    # In a .htaccess (no ProxyPass there) the equivalent is
    #   SetHandler "proxy:` + strings.TrimSuffix(url, p.Prefix+"/") + `"
    # on an existing file, with a rewrite to it as in htaccess-fcgid.
</VirtualHost>
`)
	return b.String(), nil
}

func apacheFastCGIExternal(p Params) (string, error) {
	var b strings.Builder
	conn := "-socket " + p.Socket
	if p.TCP() {
		conn = "-host " + p.HostPort()
	}
	b.WriteString(`# Apache + mod_fastcgi (FastCGIExternalServer) + mod_rewrite, as in Django's
# FastCGI guide. Current distributions no longer package mod_fastcgi (build
# it from source with apxs), so prefer apache-proxy-fcgi.
`)
	startWith(&b, p, webApache, p.RunfcgiCommand, p.Addr())
	fmt.Fprintf(&b, `# FastCGIExternalServer sends requests for the path %[1]s (the
# binary started above) to that server; Apache never runs the file itself.
# Needs: LoadModule fastcgi_module, a FastCgiIpcDir Apache's user can write,
# a2enmod rewrite alias.
FastCGIExternalServer %[1]s %[2]s
<VirtualHost %[3]s>
    ServerName %[4]s
    DocumentRoot %[5]s
    RewriteEngine On
`, p.Binary(), conn, vhostListen(p), p.ServerName, aq(p.Dir))
	for _, d := range p.StaticDirs() {
		fmt.Fprintf(&b, "    Alias %s %s\n", aq(d.URL), aq(d.Dir))
		fmt.Fprintf(&b, "    <Directory %s>\n        Require all granted\n    </Directory>\n", aq(d.Dir))
		fmt.Fprintf(&b, "    RewriteRule ^%s - [L]\n", regexpQuote(d.URL))
	}
	// In a vhost, REQUEST_FILENAME is not yet a file path: test the file
	// under the document root (the guide's !-f never matched there).
	fmt.Fprintf(&b, `    # Existing files are served as they are; everything else goes to the app.
    RewriteCond %%{DOCUMENT_ROOT}%%{REQUEST_URI} !-f
    RewriteRule ^%[1]s(/.*)?$ /%[2]s$1 [QSA,L,PT]
</VirtualHost>
`, regexpQuote(p.Prefix), p.Name)
	return b.String(), nil
}

// lighttpdBackend is one fastcgi.server entry.
func lighttpdBackend(b *strings.Builder, indent, prefix, name, socket, hostPort string, root bool) {
	mount := prefix
	if mount == "" {
		mount = "/"
	}
	fmt.Fprintf(b, "%sfastcgi.server = (\n%s    %q => (\n%s        %q => (\n", indent, indent, mount, indent, name)
	in := indent + "            "
	if hostPort != "" {
		h, port, _ := strings.Cut(hostPort, ":")
		fmt.Fprintf(b, "%s\"host\" => %q,\n%s\"port\" => %s,\n", in, h, in, port)
	} else {
		fmt.Fprintf(b, "%s\"socket\" => %q,\n", in, socket)
	}
	fmt.Fprintf(b, "%s\"check-local\" => \"disable\",\n", in)
	if root {
		fmt.Fprintf(b, "%s# SCRIPT_NAME \"\" and the whole path in PATH_INFO\n%s\"fix-root-scriptname\" => \"enable\",\n", in, in)
	}
	fmt.Fprintf(b, "%s        )\n%s    ),\n%s)\n", indent, indent, indent)
}

func lighttpd(p Params) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# lighttpd + mod_fastcgi in front of an external server (a prefork of\n# lighttpd's own bin-path is not needed: one server takes many connections).\n")
	if len(p.Sites) == 0 {
		start(&b, p, webLighttp, p.Addr())
	} else {
		for i, s := range p.Sites {
			sp := p
			sp.Dir, sp.Socket, sp.Port = strings.TrimRight(s.Dir, "/"), filepath.Join(s.Dir, p.Base()+".sock"), 0
			if i > 0 {
				b.WriteString("# and for the next site:\n")
			}
			start(&b, sp, webLighttp, sp.Addr())
		}
	}
	b.WriteString("server.modules += ( \"mod_alias\", \"mod_fastcgi\" )\n")
	site := func(indent string, dir, socket string) {
		if indent == "" {
			// lighttpd.conf sets it already; a second assignment is an error.
			fmt.Fprintf(&b, "# server.document-root = %q  (where lighttpd.conf sets it)\n", dir)
		} else {
			fmt.Fprintf(&b, "%sserver.document-root = %q\n", indent, dir)
		}
		ds := p.StaticDirs()
		if len(ds) > 0 {
			fmt.Fprintf(&b, "%salias.url += (\n", indent)
			for _, d := range ds {
				fmt.Fprintf(&b, "%s    %q => %q,\n", indent, d.URL, d.Dir)
			}
			fmt.Fprintf(&b, "%s)\n", indent)
		}
		hp := ""
		if p.TCP() && socket == p.Socket {
			hp = p.HostPort()
		}
		if len(ds) == 0 {
			lighttpdBackend(&b, indent, p.Prefix, p.Base(), socket, hp, p.Prefix == "")
			return
		}
		var re []string
		for _, d := range ds {
			re = append(re, regexpQuote(d.URL))
		}
		fmt.Fprintf(&b, "%s# Everything but the static directories goes to the app.\n", indent)
		fmt.Fprintf(&b, "%s$HTTP[\"url\"] !~ %q {\n", indent, "^("+strings.Join(re, "|")+")")
		lighttpdBackend(&b, indent+"    ", p.Prefix, p.Base(), socket, hp, p.Prefix == "")
		fmt.Fprintf(&b, "%s}\n", indent)
	}
	if len(p.Sites) == 0 {
		site("", p.Dir, p.Socket)
		return b.String(), nil
	}
	for _, s := range p.Sites {
		if s.Host == "" || s.Dir == "" {
			return "", fmt.Errorf("lighttpd: a site needs a host and a directory, got %q=%q", s.Host, s.Dir)
		}
		fmt.Fprintf(&b, "\n# If the host name is %q...\n$HTTP[\"host\"] == %q {\n", s.Host, s.Host)
		site("    ", strings.TrimRight(s.Dir, "/"), filepath.Join(s.Dir, p.Base()+".sock"))
		b.WriteString("}\n")
	}
	return b.String(), nil
}

func nginxServerAddr(a string) string {
	if strings.HasPrefix(a, "/") {
		return "unix:" + a
	}
	return a
}

func nginx(p Params) (string, error) {
	var b strings.Builder
	listen := p.Listen
	if listen == "" {
		listen = "80"
	}
	b.WriteString("# nginx in front of an external server.\n")
	start(&b, p, webNginx, backendListens(p)...)
	fmt.Fprintf(&b, `# Put this in /etc/nginx/sites-available/%[1]s (it is included inside http {}).
upstream %[1]s {
`, p.Base())
	for _, a := range p.BackendAddrs() {
		fmt.Fprintf(&b, "    server %s;\n", nginxServerAddr(a))
	}
	fmt.Fprintf(&b, `    # Idle connections kept open to the app (with fastcgi_keep_conn on).
    keepalive 8;
}
server {
    listen %[1]s;
    server_name %[2]s;
    root %[3]s;
    # Largest request body (uploads); 0 = no limit.
    client_max_body_size 1g;
`, listen, p.ServerName, p.Dir)
	for _, d := range p.StaticDirs() {
		fmt.Fprintf(&b, "    location %s {\n        alias %s;\n    }\n", d.URL, d.Dir)
	}
	loc := p.Prefix + "/"
	if p.Prefix != "" {
		fmt.Fprintf(&b, "    location = %s {\n        return 301 %s/;\n    }\n", p.Prefix, p.Prefix)
	}
	fmt.Fprintf(&b, `    location %[1]s {
        fastcgi_pass %[2]s;
        fastcgi_keep_conn on;
        # The app is mounted at %[3]s: SCRIPT_NAME is that, PATH_INFO the rest.
        fastcgi_split_path_info ^(%[4]s)(/.*)$;
        fastcgi_param SCRIPT_NAME $fastcgi_script_name;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_param QUERY_STRING $query_string;
        fastcgi_param REQUEST_METHOD $request_method;
        fastcgi_param CONTENT_TYPE $content_type;
        fastcgi_param CONTENT_LENGTH $content_length;
        fastcgi_param REQUEST_URI $request_uri;
        fastcgi_param DOCUMENT_URI $document_uri;
        fastcgi_param DOCUMENT_ROOT $document_root;
        fastcgi_param SERVER_PROTOCOL $server_protocol;
        fastcgi_param REQUEST_SCHEME $scheme;
        fastcgi_param HTTPS $https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
        fastcgi_param REMOTE_ADDR $remote_addr;
        fastcgi_param REMOTE_PORT $remote_port;
        fastcgi_param SERVER_ADDR $server_addr;
        fastcgi_param SERVER_PORT $server_port;
        fastcgi_param SERVER_NAME $server_name;
        # httpoxy: never pass a client's Proxy header on.
        fastcgi_param HTTP_PROXY "";
        fastcgi_read_timeout 300s;
    }
}
`, loc, p.Base(), mountDesc(p.Prefix), regexpQuote(p.Prefix))
	return b.String(), nil
}

func caddy(p Params) (string, error) {
	var b strings.Builder
	addr, bind := p.ServerName, ""
	if p.Listen != "" {
		h, port, ok := strings.Cut(p.Listen, ":")
		if !ok {
			h, port = "", p.Listen
		}
		addr = "http://:" + port
		bind = h
	}
	up := "unix/" + p.Socket
	if p.TCP() {
		up = p.HostPort()
	}
	b.WriteString("# Caddy in front of an external server.\n")
	start(&b, p, webCaddy, p.Addr())
	fmt.Fprintf(&b, `# Put this in /etc/caddy/Caddyfile (or import it from there).
%[1]s {
`, addr)
	if bind != "" {
		fmt.Fprintf(&b, "    bind %s\n", bind)
	}
	for _, d := range p.StaticDirs() {
		fmt.Fprintf(&b, "    handle_path %s* {\n        root * %s\n        file_server\n    }\n", d.URL, d.Dir)
	}
	matcher := ""
	if p.Prefix != "" {
		fmt.Fprintf(&b, "    redir %s %s/ 301\n", p.Prefix, p.Prefix)
		fmt.Fprintf(&b, "    @app path %s/*\n", p.Prefix)
		matcher = " @app"
	}
	fmt.Fprintf(&b, `    handle%[1]s {
        reverse_proxy %[2]s {
            transport fastcgi {
                root %[3]s
                # The app is mounted at %[5]s; it derives PATH_INFO from the URL.
                env SCRIPT_NAME %[4]q
            }
        }
    }
}
`, matcher, up, p.Dir, p.Prefix, mountDesc(p.Prefix))
	return b.String(), nil
}

func haproxy(p Params) (string, error) {
	var b strings.Builder
	bind := p.Listen
	if bind == "" {
		bind = ":80"
	}
	b.WriteString("# HAProxy (2.1+) speaking FastCGI to one or more external servers.\n")
	start(&b, p, webHAProxy, backendListens(p)...)
	fmt.Fprintf(&b, `# Check with haproxy -c -f this-file.
global
    log stderr format raw local0 warning

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 60s
    timeout server 300s

frontend %[2]s
    bind %[3]s
    default_backend %[2]s

fcgi-app %[2]s
    docroot %[4]s
    # The app is mounted at %[5]s: SCRIPT_NAME is that, PATH_INFO the rest.
    path-info ^(%[6]s)(/.*)$
    # Reuse connections to the app.
    option keep-conn
    log-stderr global

backend %[2]s
    use-fcgi-app %[2]s
    balance roundrobin
`, "", p.Base(), bind, p.Dir, mountDesc(p.Prefix), regexpQuote(p.Prefix))
	for i, a := range p.BackendAddrs() {
		fmt.Fprintf(&b, "    server %s%d %s proto fcgi check\n", p.Base(), i+1, a)
	}
	return b.String(), nil
}

// backendListens are the addresses of the external servers as serve
// --listen takes them.
func backendListens(p Params) []string {
	var as []string
	for _, a := range p.BackendAddrs() {
		if strings.HasPrefix(a, "/") {
			a = "unix:" + a
		}
		as = append(as, a)
	}
	return as
}

func systemdUser(p Params) string {
	if p.User == "" {
		return "www-data"
	}
	return p.User
}

// SystemdUnits are the files of the systemd target, by file name.
func SystemdUnits(p Params) (socket, service string) {
	p = p.Defaults()
	listen := p.Socket
	extra := "SocketUser=" + systemdUser(p) + "\nSocketMode=0660\n"
	if p.TCP() {
		listen, extra = p.HostPort(), ""
	}
	socket = fmt.Sprintf(`[Unit]
Description=%[1]s FastCGI socket (fcgishim)

[Socket]
# systemd holds the socket: restarts and upgrades lose no connection.
ListenStream=%[2]s
%[3]s
[Install]
WantedBy=sockets.target
`, p.Base(), listen, extra)
	service = fmt.Sprintf(`[Unit]
Description=%[1]s (fcgishim)
Requires=%[1]s.socket
After=network.target %[1]s.socket

[Service]
# Started with the socket on fd 3 (LISTEN_FDS), the binary serves FastCGI
# on it. Touching or replacing the binary restarts it in place (same PID).
ExecStart=%[2]s
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory=%[3]s
User=%[4]s
Restart=on-failure
TimeoutStopSec=15
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
Also=%[1]s.socket
WantedBy=multi-user.target
`, p.Base(), p.Binary(), p.Dir, systemdUser(p))
	return socket, service
}

func systemd(p Params) (string, error) {
	sock, svc := SystemdUnits(p)
	return fmt.Sprintf(`# systemd socket activation: two units. Install them, then
#   systemctl daemon-reload && systemctl enable --now %[1]s.socket
# and point the web server at %[2]s.

# ---- /etc/systemd/system/%[1]s.socket ----
%[3]s
# ---- /etc/systemd/system/%[1]s.service ----
%[4]s`, p.Base(), p.Addr(), sock, svc), nil
}

func initScript(p Params) (string, error) {
	pid := filepath.Join(p.Dir, p.Base()+".pid")
	listen := shellQuote("socket=" + p.Socket)
	group := p.WebGroup
	if group == "" {
		group = "www-data"
	}
	sockOpts := ` listen.group="$SOCKET_GROUP" listen.mode=0660`
	if p.TCP() {
		listen = shellQuote("host="+p.Host) + " port=" + strconv.Itoa(p.Port)
		sockOpts = ""
	}
	return fmt.Sprintf(`#!/bin/sh
### BEGIN INIT INFO
# Provides:          %[1]s
# Required-Start:    $local_fs $remote_fs $network
# Required-Stop:     $local_fs $remote_fs $network
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: %[1]s FastCGI server (fcgishim)
### END INIT INFO
# Install as /etc/init.d/%[1]s (chmod 755), then: update-rc.d %[1]s defaults
# Django's runfcgi script, done right: it waits for the old server to stop,
# never kills a PID it did not start, and reports status.

BIN=%[2]s
PIDFILE=%[3]s
# The server runs as this user: started by root (at boot), it creates its
# socket, then switches to RUNAS, which must be able to write PIDFILE's
# directory. "" = whoever runs the script.
RUNAS=%[5]s
# The web server's group: it may connect to the socket (mode 0660).
SOCKET_GROUP=%[6]s

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
    if running; then
        echo "%[1]s is already running (pid $(cat "$PIDFILE"))"
        return 0
    fi
    echo "Starting %[1]s"
    "$BIN" runfcgi protocol=fcgi %[4]s pidfile="$PIDFILE" daemonize=true \
        ${RUNAS:+user="$RUNAS"}%[7]s
}

stop() {
    if ! running; then
        echo "%[1]s is not running"
        return 0
    fi
    echo "Stopping %[1]s"
    # Waits until the server has drained and exited; removes the pidfile.
    "$BIN" stop pidfile="$PIDFILE"
}

case "$1" in
    start) start ;;
    stop) stop ;;
    restart)
        if running; then stop || exit 1; fi
        start ;;
    reload|force-reload)
        # A graceful restart in place: finishes requests, keeps the socket.
        running && kill -HUP "$(cat "$PIDFILE")" ;;
    status)
        if running; then
            echo "%[1]s is running (pid $(cat "$PIDFILE"))"
        else
            echo "%[1]s is not running"
            exit 3
        fi ;;
    *)
        echo "Usage: $0 {start|stop|restart|reload|status}" >&2
        exit 2 ;;
esac
`, p.Base(), shellQuote(p.Binary()), shellQuote(pid), listen, shellQuote(p.User), shellQuote(group), sockOpts), nil
}

// webServer is who a web server's processes run as on Debian, which
// decides whether they may connect to the external server's socket.
type webServer struct {
	Name string // "nginx"
	Runs string // "nginx's workers run as www-data"
	// Group is a group of the web server's user; the socket is given to it.
	Group string
}

var (
	webApache  = webServer{"Apache", "Apache's children run as www-data", "www-data"}
	webNginx   = webServer{"nginx", "nginx's workers run as www-data", "www-data"}
	webLighttp = webServer{"lighttpd", "lighttpd runs as www-data", "www-data"}
	webCaddy   = webServer{"Caddy", "Caddy runs as caddy, a member of www-data", "www-data"}
	webHAProxy = webServer{"HAProxy", "HAProxy runs as haproxy", "haproxy"}
)

// start writes the comment that says who runs what and the commands that
// start the external servers at addrs, each on a line of its own after
// "#   ".
func start(b *strings.Builder, p Params, web webServer, addrs ...string) {
	startWith(b, p, web, p.ServeCommand, addrs...)
}

// startWith is start with the command line made by command.
func startWith(b *strings.Builder, p Params, web webServer, command func(addr, group string) string, addrs ...string) {
	group := web.Group
	if p.WebGroup != "" {
		group = p.WebGroup
	}
	unix := false
	for _, a := range addrs {
		unix = unix || strings.HasPrefix(a, "unix:")
	}
	fmt.Fprintf(b, "# Who runs what: %s; the app server as %s (deploy\n# --user names another). Start the app server as root: ", web.Runs, p.RunUser())
	if unix {
		fmt.Fprintf(b, "it creates its\n# socket for group %s, mode 0660, so that %s can connect, and\n# then switches to its user", group, web.Name)
	} else {
		b.WriteString("once it\n# listens, it switches to its user")
	}
	if len(addrs) > 1 {
		b.WriteString(". One server per address")
	}
	b.WriteString(":\n")
	for _, a := range addrs {
		fmt.Fprintf(b, "#   %s\n", command(a, group))
	}
}

// mountDesc names a mount prefix in a comment.
func mountDesc(prefix string) string {
	if prefix == "" {
		return "the site root"
	}
	return prefix
}

// regexpQuote escapes the characters that are special in the POSIX and
// PCRE regular expressions web servers use.
func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
