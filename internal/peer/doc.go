// Package peer starts real web servers (Apache, nginx, lighttpd) on loopback
// with throwaway configs for tests, and a suEXEC shared host (Apache with
// mod_userdir, mod_fcgid and suEXEC) with throwaway Unix users. A missing
// server skips the test, except under CI=true, where it fails it: in CI every
// peer must be installed.
package peer
