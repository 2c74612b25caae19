package main

import (
	"strings"
	"testing"
)

// Django 1.8's rules for runfcgi's key=value options, message for message.
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
		{args: []string{"host=127.0.0.1"}, err: "Invalid combination of host, port, socket."},
		{args: []string{"port=3033"}, err: "Invalid combination of host, port, socket."},
		{args: []string{"method=gevent"}, err: "ERROR: Implementation must be one of prefork or thread."},
		{args: []string{"socket=/s", "daemonize=maybe"}, err: "ERROR: Invalid option for daemonize parameter."},
		{args: []string{"protocol=uwsgi"}, err: "ERROR: protocol must be one of fcgi, scgi or ajp"},
		{args: []string{"maxchildren=lots"}, err: "ERROR: maxchildren=lots is not a number."},
		{args: []string{"umask=9"}, err: "not an octal number"},
		{args: []string{"sokcet=/s"}, err: `unknown option "sokcet"`},
		{args: []string{"minspare=9", "maxspare=3"}, err: "minspare=9 is larger than maxspare=3"},
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
