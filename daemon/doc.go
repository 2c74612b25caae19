// Package daemon holds what turns a foreground process into a managed one:
// detaching (Django's daemonize=true: a new session, the working directory,
// umask and log files, and a ready report back to the parent), the pidfile
// that runfcgi's stop uses, and switching the process to another user once
// its socket exists (php-fpm's pool user, uWSGI's --uid).
//
// The name is what an administrator calls these steps; none of them serves
// a request or opens a listener.
//
// Layering: daemon imports only the standard library and internal/account.
// serve and the command line import it; it imports neither listen nor
// prefork.
package daemon
