// Package peer starts real web servers (Apache, nginx, lighttpd) on loopback
// with throwaway configs for tests. A missing server skips the test, except
// under CI=true, where it fails it: in CI every peer must be installed.
package peer
