// Package listen answers "how was I started, and where do connections come
// from?": fd 0 as a FastCGI listening socket (mod_fcgid, mod_fastcgi,
// lighttpd bin-path, spawn-fcgi), systemd socket activation, plain CGI, a
// terminal, or a TCP / unix socket opened by hand — the unix one with its
// owner, group and mode set before anyone can connect. It also wraps a
// listener in the FCGI_WEB_SERVER_ADDRS allow-list and hands a listener's
// descriptor to a re-executed program or a child (File, Dup).
//
// The name is the folder a newcomer looks in for "where does the socket come
// from"; detection lives here too because its answer is which listener to
// use. Serving a protocol on the listener is the caller's.
//
// Layering: listen imports only the standard library, golang.org/x/sys and
// internal/account. prefork, serve and the command line import it; it imports
// none of them, nor daemon.
package listen
