// Package serve runs an http.Handler the way fcgishim runs a site: it detects
// how the process was started (FastCGI on fd 0, systemd sockets, CGI, or an
// explicit listener), repairs SCRIPT_NAME/PATH_INFO, serves the matching
// protocol, and restarts in place — draining first, keeping the listening
// socket — when the binary, its config or restart.txt changes.
//
// A Go program serves its own handler with the same behaviour in one line:
//
//	func main() { serve.Main(myHandler) }
package serve
