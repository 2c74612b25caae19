// Package e2e holds the end-to-end tests: each builds the module's main
// package once into a temporary directory (go build -o ... ..), installs the
// binary as a user would, and drives it through the real web servers that
// internal/peertest starts on loopback (Apache with mod_fcgid, suEXEC and
// mod_proxy_fcgi, nginx, lighttpd, HAProxy, Caddy, Django, systemd) or
// through the command line (deploy, install, check, runfcgi, serve, CGI).
// Tests that check what the repository promises read README.md and demo.sh
// from the module root.
//
// The package has no code of its own. Run it with
//
//	go test -race ./e2e/
//
// A missing web server skips its tests; with CI=true it fails them instead.
// Most tests that touch suEXEC, user switching or socket ownership need root.
// Unit tests of the command line itself (the runfcgi option parser) stay
// beside main.go in the module root.
package e2e
