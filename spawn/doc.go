// Package spawn answers "how was I started?" and provides the listeners that
// follow from it: fd 0 as a FastCGI listening socket (mod_fcgid, mod_fastcgi,
// lighttpd bin-path, spawn-fcgi), systemd socket activation, plain CGI, or a
// TCP / unix socket opened by hand. Serving the protocol is the caller's.
package spawn
