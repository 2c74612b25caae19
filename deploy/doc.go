// Package deploy gets a site from a downloaded binary to a working setup:
// Render writes web server configurations (shared-hosting .htaccess, Apache,
// lighttpd, nginx, Caddy, HAProxy, systemd, an init script) from Params,
// Install puts the binary, a config template and the .htaccess block into a
// directory, and Check diagnoses a directory one item at a time, ending with
// a request through a minimal FastCGI client. Flags, the running binary's
// path and the terminal are the caller's.
package deploy
