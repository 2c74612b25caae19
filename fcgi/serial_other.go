//go:build !linux

package fcgi

import "errors"

// ServeFD is only available on Linux; elsewhere it fails at once and the
// caller serves a net.Listener with Serve.
func (s *Server) ServeFD(fd int) error {
	return errors.New("fcgi: ServeFD is not supported on this system")
}
