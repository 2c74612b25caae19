package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/serve"
)

// Django 1.8's rules for runfcgi's key=value options. The messages are ours,
// except that a mix of socket and host/port still quotes Django's (people
// search for it); the others name the key and what it wants.
func TestRunfcgiOptions(t *testing.T) {
	cases := []struct {
		args      []string
		addr      string
		daemonize bool
		err       string
	}{
		{args: nil, addr: "", daemonize: false},
		{args: []string{"method=threaded", "host=127.0.0.1", "port=3033"}, addr: "127.0.0.1:3033", daemonize: true},
		{args: []string{"method=prefork", "socket=/home/user/mysite.sock", "pidfile=django.pid"}, addr: "unix:/home/user/mysite.sock", daemonize: true},
		{args: []string{"socket=/s", "daemonize=false"}, addr: "unix:/s", daemonize: false},
		{args: []string{"socket=/s", "daemonize=no"}, addr: "unix:/s", daemonize: false},
		{args: []string{"daemonize=true"}, addr: "", daemonize: true},
		{args: []string{"protocol=scgi", "host=::1", "port=8025"}, addr: "[::1]:8025", daemonize: true},
		{args: []string{"HOST=127.0.0.1", "Port=9"}, addr: "127.0.0.1:9", daemonize: true},
		{args: []string{"host=127.0.0.1", "port=1", "socket=/s"}, err: "Invalid combination of host, port, socket."},
		{args: []string{"host=127.0.0.1"}, err: "give socket=PATH, or host=ADDR with port=N"},
		{args: []string{"port=3033"}, err: "Invalid combination of host, port, socket."},
		{args: []string{"method=gevent"}, err: "runfcgi: method=gevent: want prefork (worker processes) or threaded (one process)"},
		{args: []string{"socket=/s", "daemonize=maybe"}, err: "runfcgi: daemonize=maybe: want true or false"},
		{args: []string{"protocol=uwsgi"}, err: "runfcgi: protocol=uwsgi: want fcgi, scgi or ajp"},
		{args: []string{"maxchildren=lots"}, err: "runfcgi: maxchildren=lots: want a whole number"},
		{args: []string{"host=::1", "port=70000"}, err: "runfcgi: port=70000: want a port number from 1 to 65535"},
		{args: []string{"umask=9"}, err: "runfcgi: umask=9: want an octal number"},
		{args: []string{"sokcet=/s"}, err: `unknown option "sokcet"`},
		{args: []string{"minspare=9", "maxspare=3"}, err: "minspare=9 is above maxspare=3"},
	}
	for _, tc := range cases {
		r := defaultRunfcgi()
		_, err := parseRunfcgi(&r, tc.args)
		var addr string
		var daemonize bool
		if err == nil {
			addr, daemonize, err = r.resolve()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || addr != tc.addr || daemonize != tc.daemonize {
			t.Errorf("%v: addr=%q daemonize=%v err=%v; want %q %v", tc.args, addr, daemonize, err, tc.addr, tc.daemonize)
		}
	}
	r := defaultRunfcgi()
	if help, _ := parseRunfcgi(&r, []string{"socket=/s", "help"}); !help {
		t.Error("help not recognised")
	}
	if r := defaultRunfcgi(); r.Method != "fork" || r.MaxSpare != 5 || r.MinSpare != 2 || r.MaxChildren != 50 || r.Umask != 0o022 || r.Workdir != "/" {
		t.Errorf("defaults differ from Django 1.8: %+v", r)
	}
}

// The socket controls parse in both spellings, replace the config file's,
// and refuse a mix of spellings or a bad mode.
func TestRunfcgiSocketOptions(t *testing.T) {
	cases := []struct {
		args []string
		want listen.SocketAccess
		user string
		err  string
	}{
		{args: []string{"listen.group=www-data", "listen.mode=0660"}, want: listen.SocketAccess{Group: "www-data", Mode: 0o660}},
		{args: []string{"chown-socket=root:www-data", "chmod-socket=660"}, want: listen.SocketAccess{Owner: "root", Group: "www-data", Mode: 0o660}},
		{args: []string{"chown-socket=:www-data"}, want: listen.SocketAccess{Group: "www-data"}},
		// user= gives the socket to that user and, unless named, its group.
		{args: []string{"user=root"}, want: listen.SocketAccess{Owner: "root", Group: "0"}, user: "root"},
		{args: []string{"user=root", "listen.group=www-data"}, want: listen.SocketAccess{Owner: "root", Group: "www-data"}, user: "root"},
		{args: []string{"listen.mode=0999"}, err: "want octal permission bits"},
		{args: []string{"chmod-socket=660", "listen.mode=0600"}, err: "listen.mode or with chmod-socket, not both"},
		{args: []string{"chown-socket=a:b:c"}, err: "want USER, USER:GROUP or :GROUP"},
		{args: []string{"user=no-such-user-here"}, err: `user "no-such-user-here"`},
	}
	for _, tc := range cases {
		r := defaultRunfcgi()
		_, err := parseRunfcgi(&r, tc.args)
		var got listen.SocketAccess
		if err == nil {
			got, err = r.Sock.access()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || r.Sock.User != tc.user {
			t.Errorf("%v: %+v user %q err %v; want %+v user %q", tc.args, got, r.Sock.User, err, tc.want, tc.user)
		}
	}
	// The command line replaces the file's spelling instead of clashing with it.
	cfg, err := config.Parse("/s/mysite.toml", []byte("[server]\nchmod-socket = \"600\"\nlisten.group = \"root\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := defaultRunfcgi()
	r.fromConfig(cfg.Server)
	if _, err := parseRunfcgi(&r, []string{"listen.mode=0660", "chown-socket=:www-data"}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Sock.access(); err != nil || got != (listen.SocketAccess{Group: "www-data", Mode: 0o660}) {
		t.Errorf("file + command line: %+v %v", got, err)
	}
}

// The help is ours: each option is explained, Django's option names and
// defaults stay, and none of Django's sentences (or flup's address) remain.
func TestRunfcgiHelpIsOurs(t *testing.T) {
	var out bytes.Buffer
	err := cmdRunfcgi(context.Background(), serve.Options{Args: []string{"/nonexistent/mysite.fcgi"}, Stdout: &out}, []string{"help"})
	if err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, key := range runfcgiKeys {
		if !strings.Contains(help, "\n  "+key) && !strings.Contains(help, " "+key+"=") {
			t.Errorf("help does not explain %s", key)
		}
	}
	for _, def := range []string{"method=prefork", "(default 50)", "(default 2)", "(default 5)", "(default /)", "(default 022)", "fcgi (default)", "mysite.toml"} {
		if !strings.Contains(help, def) {
			t.Errorf("help lacks %q", def)
		}
	}
	for _, django := range []string{"flup", "saddi.com", "Run this project as a fastcgi", "hostname to listen on", "hard limit number of processes", "set to true to enable flup tracebacks", "when daemonizing, in octal notation"} {
		if strings.Contains(help, django) {
			t.Errorf("help still carries Django's %q", django)
		}
	}
}
