package deploy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite htaccess-examples/ from the generator")

// The shared-hosting examples in the repository are exactly what the
// generator writes with default parameters.
func TestHtaccessExamplesMatchGenerator(t *testing.T) {
	for _, target := range []string{"htaccess-fcgid", "htaccess-fastcgi", "htaccess-cgi"} {
		got, err := Render(target, Params{})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "htaccess-examples", target)
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./deploy -update writes it)", err)
		}
		if string(want) != got {
			t.Errorf("%s differs from Render(%q); run go test ./deploy -update\n--- file\n%s--- generator\n%s", path, target, want, got)
		}
	}
}

func TestEveryTargetRenders(t *testing.T) {
	p := Params{Dir: "/srv/site", Static: map[string]string{"/static/": "/srv/site/static"}}
	for _, tg := range Targets() {
		out, err := Render(tg.Name, p)
		if err != nil {
			t.Errorf("%s: %v", tg.Name, err)
			continue
		}
		if !strings.HasSuffix(out, "\n") || strings.Contains(out, "%!") || strings.Contains(out, "<no value>") {
			t.Errorf("%s: malformed output:\n%s", tg.Name, out)
		}
		if tg.Summary == "" || strings.Contains(tg.Summary, "\n") {
			t.Errorf("%s: summary must be one line", tg.Name)
		}
	}
	if _, err := Render("iis", p); err == nil || !strings.Contains(err.Error(), "htaccess-fcgid") {
		t.Errorf("unknown target: err = %v, want the list of targets", err)
	}
}

// contains checks that out holds every line of want (trimmed), in order.
func containsInOrder(t *testing.T, name, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s: missing (or out of order) %q in:\n%s", name, w, out)
			return
		}
		rest = rest[i+len(w):]
	}
}

func TestTargetContents(t *testing.T) {
	unix := Params{Name: "blog.fcgi", Dir: "/home/ann/public_html/blog", ServerName: "blog.example.org"}
	tcp := unix
	tcp.Port = 3033
	pre := unix
	pre.Prefix = "/blog/"
	cases := []struct {
		target string
		p      Params
		want   []string
	}{
		{"htaccess-fcgid", unix, []string{BlockBegin, "Options +ExecCGI", `<Files "blog.fcgi">`, "SetHandler fcgid-script",
			"RewriteEngine On", "RewriteCond %{REQUEST_FILENAME} !-f", "RewriteRule ^(.*)$ blog.fcgi/$1 [QSA,L]", "FcgidMaxRequestLen", BlockEnd}},
		{"htaccess-fastcgi", unix, []string{BlockBegin, "SetHandler fastcgi-script", "RewriteRule ^(.*)$ blog.fcgi/$1 [QSA,L]", BlockEnd}},
		{"htaccess-cgi", unix, []string{BlockBegin, "SetHandler cgi-script", "RewriteRule ^(.*)$ blog.fcgi/$1 [QSA,L]", BlockEnd}},
		{"apache-fcgid", pre, []string{"<VirtualHost *:80>", "ServerName blog.example.org", "FcgidMaxRequestLen 1073741824", "FcgidIOTimeout",
			"FcgidInitialEnv", `ScriptAlias "/blog" "/home/ann/public_html/blog/blog.fcgi"`, "SetHandler fcgid-script",
			`FcgidWrapper "/home/ann/public_html/blog/blog.fcgi"`, "</VirtualHost>"}},
		{"apache-fcgid", unix, []string{`ScriptAlias "/" "/home/ann/public_html/blog/blog.fcgi/"`}},
		{"apache-proxy-fcgi", unix, []string{"serve --listen unix:/home/ann/public_html/blog/blog.sock --protocol fcgi",
			`ProxyPass "/" "unix:/home/ann/public_html/blog/blog.sock|fcgi://localhost/"`, `ProxyFCGISetEnvIf "true" SCRIPT_NAME ""`}},
		{"apache-proxy-fcgi", tcp, []string{"serve --listen 127.0.0.1:3033", `ProxyPass "/" "fcgi://127.0.0.1:3033/"`}},
		{"apache-proxy-fcgi", pre, []string{`ProxyPass "/blog/" "unix:/home/ann/public_html/blog/blog.sock|fcgi://localhost/blog/"`,
			`SCRIPT_NAME "/blog"`, "RedirectMatch 301 ^/blog$ /blog/"}},
		{"apache-fastcgi-external", unix, []string{"FastCGIExternalServer /home/ann/public_html/blog/blog.fcgi -socket /home/ann/public_html/blog/blog.sock",
			"RewriteEngine On", "RewriteCond %{DOCUMENT_ROOT}%{REQUEST_URI} !-f", "RewriteRule ^(/.*)?$ /blog.fcgi$1 [QSA,L,PT]"}},
		{"apache-fastcgi-external", tcp, []string{"-host 127.0.0.1:3033"}},
		{"lighttpd", unix, []string{`"mod_fastcgi"`, `# server.document-root = "/home/ann/public_html/blog"`, `"/" => (`,
			`"socket" => "/home/ann/public_html/blog/blog.sock"`, `"check-local" => "disable"`, `"fix-root-scriptname" => "enable"`}},
		{"lighttpd", tcp, []string{`"host" => "127.0.0.1"`, `"port" => 3033`}},
		{"lighttpd", Params{Sites: []Site{{"www.example1.com", "/foo/site1"}, {"www.example2.com", "/foo/site2"}}},
			[]string{`$HTTP["host"] == "www.example1.com" {`, `server.document-root = "/foo/site1"`, `"socket" => "/foo/site1/mysite.sock"`, "}",
				`$HTTP["host"] == "www.example2.com" {`, `"socket" => "/foo/site2/mysite.sock"`}},
		{"nginx", unix, []string{"upstream blog {", "server unix:/home/ann/public_html/blog/blog.sock;", "keepalive 8;", "listen 80;",
			"server_name blog.example.org;", "location / {", "fastcgi_pass blog;", "fastcgi_keep_conn on;", "fastcgi_split_path_info ^()(/.*)$;",
			"fastcgi_param SCRIPT_NAME $fastcgi_script_name;", "fastcgi_param PATH_INFO $fastcgi_path_info;", "fastcgi_param REQUEST_URI $request_uri;"}},
		{"nginx", pre, []string{"location = /blog {", "location /blog/ {", `fastcgi_split_path_info ^(/blog)(/.*)$;`}},
		{"nginx", Params{Backends: []string{"10.0.0.1:3033", "10.0.0.2:3033"}}, []string{"server 10.0.0.1:3033;", "server 10.0.0.2:3033;"}},
		{"caddy", unix, []string{"blog.example.org {", "reverse_proxy unix//home/ann/public_html/blog/blog.sock {", "transport fastcgi {", `env SCRIPT_NAME ""`}},
		{"caddy", Params{Listen: "127.0.0.1:8080", Port: 9000}, []string{"http://:8080 {", "bind 127.0.0.1", "reverse_proxy 127.0.0.1:9000 {"}},
		{"haproxy", Params{Backends: []string{"127.0.0.1:3033", "127.0.0.1:3034"}}, []string{"frontend mysite", "bind :80", "fcgi-app mysite",
			"docroot /home/user/public_html", "path-info ^()(/.*)$", "backend mysite", "use-fcgi-app mysite",
			"server mysite1 127.0.0.1:3033 proto fcgi check", "server mysite2 127.0.0.1:3034 proto fcgi check"}},
		{"systemd", unix, []string{"/etc/systemd/system/blog.socket", "ListenStream=/home/ann/public_html/blog/blog.sock", "SocketUser=www-data",
			"/etc/systemd/system/blog.service", "Requires=blog.socket", "ExecStart=/home/ann/public_html/blog/blog.fcgi", "User=www-data"}},
		{"systemd", tcp, []string{"ListenStream=127.0.0.1:3033"}},
		{"init-script", unix, []string{"#!/bin/sh", "### BEGIN INIT INFO", "BIN=/home/ann/public_html/blog/blog.fcgi",
			"PIDFILE=/home/ann/public_html/blog/blog.pid", `"$BIN" runfcgi protocol=fcgi socket=/home/ann/public_html/blog/blog.sock pidfile="$PIDFILE" daemonize=true`,
			`"$BIN" stop pidfile="$PIDFILE"`, "status)", "exit 3"}},
		{"init-script", tcp, []string{"runfcgi protocol=fcgi host=127.0.0.1 port=3033"}},
	}
	for _, tc := range cases {
		out, err := Render(tc.target, tc.p)
		if err != nil {
			t.Errorf("%s: %v", tc.target, err)
			continue
		}
		containsInOrder(t, tc.target, out, tc.want...)
	}
}

// Every target in front of an external server says who runs what and gives
// a start command whose socket the named web server can use.
func TestTargetsSayWhoRunsTheServer(t *testing.T) {
	unix := Params{Dir: "/srv/s"}
	const sock = "serve --listen unix:/srv/s/mysite.sock --protocol fcgi --user www-data --listen-group www-data --listen-mode 0660"
	cases := []struct {
		target string
		p      Params
		want   []string
	}{
		{"nginx", unix, []string{"nginx's workers run as www-data", "app server as www-data", "#   /srv/s/mysite.fcgi " + sock + "\n"}},
		{"lighttpd", unix, []string{"lighttpd runs as www-data", "#   /srv/s/mysite.fcgi " + sock + "\n"}},
		{"caddy", unix, []string{"Caddy runs as caddy, a member of www-data", "#   /srv/s/mysite.fcgi " + sock + "\n"}},
		{"apache-proxy-fcgi", unix, []string{"Apache's children run as www-data", "#   /srv/s/mysite.fcgi " + sock + "\n"}},
		{"apache-fastcgi-external", unix, []string{"#   /srv/s/mysite.fcgi runfcgi method=threaded socket=/srv/s/mysite.sock daemonize=false user=www-data listen.group=www-data listen.mode=0660\n",
			"FastCGIExternalServer /srv/s/mysite.fcgi -socket /srv/s/mysite.sock"}},
		{"apache-fastcgi-external", Params{Dir: "/srv/s", Port: 3033}, []string{"#   /srv/s/mysite.fcgi runfcgi method=threaded host=127.0.0.1 port=3033 daemonize=false user=www-data\n"}},
		{"nginx", Params{Dir: "/srv/s", User: "ann", WebGroup: "web"}, []string{"app server as ann", "--user ann --listen-group web --listen-mode 0660\n"}},
		{"haproxy", Params{Dir: "/srv/s"}, []string{"HAProxy runs as haproxy", "--user www-data --listen-group haproxy --listen-mode 0660\n", "server mysite1 /srv/s/mysite.sock"}},
		{"haproxy", Params{Dir: "/srv/s", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"}}, []string{"One server per address",
			"#   /srv/s/mysite.fcgi serve --listen 127.0.0.1:1 --protocol fcgi --user www-data\n", "#   /srv/s/mysite.fcgi serve --listen 127.0.0.1:2 --protocol fcgi --user www-data\n"}},
		{"lighttpd", Params{Sites: []Site{{"a", "/x/a"}, {"b", "/x/b/"}}}, []string{"#   /x/a/mysite.fcgi serve --listen unix:/x/a/mysite.sock", "#   /x/b/mysite.fcgi serve --listen unix:/x/b/mysite.sock"}},
	}
	for _, tc := range cases {
		out, err := Render(tc.target, tc.p)
		if err != nil {
			t.Fatal(err)
		}
		containsInOrder(t, tc.target, out, tc.want...)
		if strings.Contains(out, "need not exist") {
			t.Errorf("%s: says the binary it starts need not exist", tc.target)
		}
	}
}

func TestStaticDirsAreServedByTheWebServer(t *testing.T) {
	p := Params{Dir: "/srv/s", Prefix: "/app", Static: map[string]string{"/static/": "/srv/s/static", "media": "/srv/s/media/"}}
	want := map[string][]string{
		"apache-fcgid":            {`Alias "/app/static/" "/srv/s/static/"`, `ScriptAlias "/app"`},
		"apache-proxy-fcgi":       {`ProxyPass "/app/static/" !`, `Alias "/app/static/" "/srv/s/static/"`, `ProxyPass "/app/"`},
		"apache-fastcgi-external": {`Alias "/app/media/" "/srv/s/media/"`, `RewriteRule ^/app/media/ - [L]`},
		"lighttpd":                {`"/app/static/" => "/srv/s/static/"`, `$HTTP["url"] !~ "^(/app/static/|/app/media/)"`},
		"nginx":                   {"location /app/static/ {", "alias /srv/s/static/;"},
		"caddy":                   {"handle_path /app/static/* {", "root * /srv/s/static/"},
	}
	for target, w := range want {
		out, err := Render(target, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range w {
			if !strings.Contains(out, s) {
				t.Errorf("%s: missing %q in:\n%s", target, s, out)
			}
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/site/mysite.fcgi": "/srv/site/mysite.fcgi",
		"/home/a b/x":           "'/home/a b/x'",
		"it's":                  `'it'\''s'`,
		"":                      "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestUpdateBlock(t *testing.T) {
	block := BlockBegin + "\nnew\n" + BlockEnd + "\n"
	cases := []struct{ name, in, want string }{
		{"empty", "", block},
		{"append after user lines", "ErrorDocument 404 /404.html", "ErrorDocument 404 /404.html\n\n" + block},
		{"replace keeps both sides", "a\n" + BlockBegin + "\nold\nold2\n" + BlockEnd + "\nb\n", "a\n" + block + "b\n"},
		{"idempotent", "a\n\n" + block, "a\n\n" + block},
	}
	for _, tc := range cases {
		if got := UpdateBlock(tc.in, block); got != tc.want {
			t.Errorf("%s: got\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}
