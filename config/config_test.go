package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every problem names the file, the line and the key.
func TestErrorsNameFileLineKey(t *testing.T) {
	cases := []struct {
		name, toml string
		line       int
		key, msg   string
	}{
		{"unknown key with suggestion", "[server]\nmaxrequest = 5\n", 2, "server.maxrequest", `did you mean "maxrequests"`},
		{"unknown table", "[ap]\ncommand = [\"x\"]\n", 1, "ap", "unknown key"},
		{"wrong type", "[app]\nworkdir = \"/x\"\ncommand = \"gunicorn\"\n", 3, "app.command", "incompatible types"},
		{"syntax error", "[app]\ncommand = [\"x\"\n", 2, "app.command", "array terminator"},
		{"command and upstream", "[app]\ncommand = [\"x\"]\nupstream = \"http://127.0.0.1:1\"\n", 3, "app.upstream", "not both"},
		{"bad upstream", "[app]\n\nupstream = \"ftp://x\"\n", 3, "app.upstream", "http://host:port"},
		{"bad duration", "[app]\ncommand = [\"x\"]\nstop_grace = \"soon\"\n", 3, "app.stop_grace", ""},
		{"static prefix", "[static]\n\"static/\" = \"/srv\"\n", 2, "static.static/", "must start with /"},
		{"watch mode", "[server]\nwatch = \"sometimes\"\n", 2, "server.watch", "auto, poll or off"},
		{"dotted key in table", "[app]\nenv.FOO = 1\n", 2, "app.env.FOO", ""},
		{"status without token", "[server]\nping_path = \"/ping\"\nstatus_path = \"/status\"\n", 3, "server.status_path", "status_token"},
		{"status with a short token", "[server]\nstatus_path = \"/s\"\nstatus_token = \"short\"\n", 2, "server.status_path", "at least 16"},
		{"ping path", "[server]\nping_path = \"ping\"\n", 2, "server.ping_path", "must start with /"},
		{"socket mode not octal", "[server]\nsocket = \"/x\"\nlisten.mode = \"0999\"\n", 3, "server.listen.mode", "octal"},
		{"socket mode too wide", "[server]\nchmod-socket = \"4770\"\n", 2, "server.chmod-socket", "between 1 and 0777"},
		{"both mode spellings", "[server]\nlisten.mode = \"0660\"\nchmod-socket = \"660\"\n", 3, "server.chmod-socket", "not both"},
		{"chown-socket form", "[server]\nchown-socket = \"a:b:c\"\n", 2, "server.chown-socket", "user:group"},
		{"both owner spellings", "[server]\nlisten.group = \"www-data\"\nchown-socket = \":www-data\"\n", 3, "server.chown-socket", "not both"},
		{"wsgi and command", "[app]\nwsgi = \"mysite.wsgi\"\ncommand = [\"x\"]\n", 2, "app.wsgi", "not both wsgi and command"},
		{"wsgi and upstream", "[app]\nupstream = \"http://127.0.0.1:1\"\n\nwsgi = \"mysite.wsgi\"\n", 4, "app.wsgi", "not both wsgi and upstream"},
		{"wsgi not a module", "[app]\nwsgi = \"mysite/wsgi.py\"\n", 2, "app.wsgi", "Python module path"},
		{"negative workers", "[app]\nwsgi = \"mysite.wsgi\"\nworkers = -1\n", 3, "app.workers", "negative"},
		{"wsgi with proxy_protocol", "[app]\nwsgi = \"mysite.wsgi\"\nproxy_protocol = true\n", 3, "app.proxy_protocol", "X-Real-Ip"},
		{"python without wsgi", "[app]\ncommand = [\"x\"]\npython = \"python3\"\n", 3, "app.python", "only used with app.wsgi"},
		{"unknown listen key", "[server]\nlisten.onwer = \"www-data\"\n", 2, "server.listen.onwer", `did you mean "owner"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/site/mysite.toml", []byte(tc.toml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *config.Error", err)
			}
			if ce.File != "/site/mysite.toml" || ce.Line != tc.line || ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("got %s (line %d key %q), want line %d key %q containing %q", err, ce.Line, ce.Key, tc.line, tc.key, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "/site/mysite.toml:") {
				t.Fatalf("message %q does not start with the file", err)
			}
		})
	}
}

func TestValidWSGISpec(t *testing.T) {
	for s, want := range map[string]bool{
		"mysite.wsgi": true, "app": true, "app:server": true, "pkg.mod:obj.attr": true, "_x.y2:_z": true,
		"": false, "mysite/wsgi.py": false, "mysite.wsgi:": false, ":app": false, "a..b": false, "2fa.wsgi": false,
		"a:b:c": false, "a.b c": false, "mysite.wsgi:app()": false, "a.-b": false,
	} {
		if got := validWSGISpec(s); got != want {
			t.Errorf("validWSGISpec(%q) = %v, want %v", s, got, want)
		}
	}
}

// [app] wsgi becomes the runner's command, which the supervisor runs like
// any other: interpreter, runner, socket, app, workers.
func TestWSGIBecomesCommand(t *testing.T) {
	c, err := Parse("/site/mysite.toml", []byte("[app]\nwsgi = \"mysite.wsgi:application\"\npython = \"venv/bin/python\"\nworkers = 3\nstrip_prefix = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"venv/bin/python", WSGIRunnerArg, "--socket", "{socket}", "--app", "mysite.wsgi:application", "--workers", "3", "--strip-prefix"}
	if strings.Join(c.App.Command, " ") != strings.Join(want, " ") {
		t.Fatalf("command %q, want %q", c.App.Command, want)
	}
	c, err = Parse("/site/mysite.toml", []byte("[app]\nwsgi = \"mysite.wsgi\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.App.Command, " "); got != "python3 "+WSGIRunnerArg+" --socket {socket} --app mysite.wsgi --workers 0" {
		t.Fatalf("default command %q", got)
	}
}

func TestFullConfigDecodes(t *testing.T) {
	c, err := Parse("/site/mysite.toml", []byte(`
[app]
command = ["gunicorn", "--bind", "unix:{socket}", "mysite.wsgi"]
workdir = "/home/user/myproject"
env = { DJANGO_SETTINGS_MODULE = "mysite.settings" }
stop_grace = "3s"

[static]
"/static/" = "/home/user/myproject/static"
"/static/admin/" = "/srv/admin"

[server]
force_script_name = ""
maxrequests = 100
max_lifetime = "1h"
daemonize = false
user = "alice"
listen.owner = "alice"
listen.group = "www-data"
listen.mode = "0660"

[limits]
max_body_bytes = 1048576
slow_request = "5s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.App.Command[2] != "unix:{socket}" || c.App.Env["DJANGO_SETTINGS_MODULE"] != "mysite.settings" ||
		c.App.StopGrace.Seconds() != 3 || c.Server.MaxRequests != 100 || c.Limits.MaxBodyBytes != 1<<20 ||
		c.Server.MaxLifetime.Hours() != 1 || c.Limits.SlowRequest.Seconds() != 5 {
		t.Fatalf("decoded %+v", c)
	}
	if l := c.Server.Listen; c.Server.User != "alice" || l.Owner != "alice" || l.Group != "www-data" || l.Mode != "0660" {
		t.Fatalf("socket keys decoded as user %q listen %+v", c.Server.User, l)
	}
	if c.Server.ForceScriptName == nil || *c.Server.ForceScriptName != "" {
		t.Fatal(`force_script_name = "" must be set-and-empty, not unset`)
	}
	if c.Server.Daemonize == nil || *c.Server.Daemonize {
		t.Fatal("daemonize = false lost")
	}
	if got := c.StaticPrefixes(); got[0] != "/static/admin/" || got[1] != "/static/" {
		t.Fatalf("prefixes not longest first: %v", got)
	}
}

func TestMissingFileIsDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "mysite.toml"))
	if err != nil || c.File != "" || len(c.App.Command) != 0 || c.Server.ForceScriptName != nil {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mysite.toml")
	os.WriteFile(path, []byte("[app]\ncommand = [\"./app\"]\nlog = \"app.log\"\n"), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Resolve(c.App.Log); got != filepath.Join(dir, "app.log") {
		t.Fatalf("Resolve = %q", got)
	}
	if PathFor("/x/mysite.fcgi") != "/x/mysite.toml" || PathFor("/x/app") != "/x/app.toml" {
		t.Fatal("PathFor")
	}
}
