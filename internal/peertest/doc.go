// Package peertest starts real web servers (Apache, nginx, lighttpd) on loopback
// with throwaway configs for tests, and a suEXEC shared host (Apache with
// mod_userdir, mod_fcgid and suEXEC) with throwaway Unix users. A missing
// server skips the test, except under CI=true, where it fails it: in CI every
// peer must be installed. Eventually is the one way tests poll for what no
// event announces (a process started or gone, a line in another process's
// log).
package peertest
