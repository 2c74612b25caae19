package main

import (
	"fmt"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/account"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/serve"
)

// socketOptions are who may use the server's unix socket and who the
// server runs as, spelt as php-fpm (listen.owner/group/mode, user) or as
// uWSGI (chown-socket, chmod-socket). Each value comes from [server] unless
// the command line gives it.
type socketOptions struct {
	Owner, Group, Mode string // php-fpm's listen.owner, listen.group, listen.mode
	Chown, Chmod       string // uWSGI's chown-socket, chmod-socket
	User               string
}

// fromConfig takes the [server] values.
func (s *socketOptions) fromConfig(c config.Server) {
	s.Owner, s.Group, s.Mode = c.Listen.Owner, c.Listen.Group, c.Listen.Mode
	s.Chown, s.Chmod, s.User = c.ChownSocket, c.ChmodSocket, c.User
}

// override applies the values given in o (the command line) over s (the
// file). A spelling used in o replaces the other spelling in s, so
// "chmod-socket=666" overrides listen.mode from the file; o itself may use
// only one spelling of each.
func (s *socketOptions) override(o socketOptions) error {
	if err := o.oneSpelling(); err != nil {
		return err
	}
	if o.Chown != "" {
		s.Owner, s.Group, s.Chown = "", "", o.Chown
	}
	if o.Owner != "" || o.Group != "" {
		if s.Chown != "" {
			s.Owner, s.Group, _ = listen.ParseChown(s.Chown)
			s.Chown = ""
		}
		if o.Owner != "" {
			s.Owner = o.Owner
		}
		if o.Group != "" {
			s.Group = o.Group
		}
	}
	if o.Chmod != "" || o.Mode != "" {
		s.Mode, s.Chmod = o.Mode, o.Chmod
	}
	if o.User != "" {
		s.User = o.User
	}
	return nil
}

func (s socketOptions) oneSpelling() error {
	if s.Chown != "" && (s.Owner != "" || s.Group != "") {
		return fmt.Errorf("set the socket's owner and group with listen.owner/listen.group or with chown-socket, not both")
	}
	if s.Chmod != "" && s.Mode != "" {
		return fmt.Errorf("set the socket's mode with listen.mode or with chmod-socket, not both")
	}
	return nil
}

// access checks the options and returns them as spawn takes them.
func (s socketOptions) access() (listen.SocketAccess, error) {
	var a listen.SocketAccess
	if err := s.oneSpelling(); err != nil {
		return a, err
	}
	a.Owner, a.Group = s.Owner, s.Group
	if s.Chown != "" {
		var err error
		if a.Owner, a.Group, err = listen.ParseChown(s.Chown); err != nil {
			return a, err
		}
	}
	if m := s.Mode + s.Chmod; m != "" {
		mode, err := listen.ParseSocketMode(m)
		if err != nil {
			return a, err
		}
		a.Mode = mode
	}
	if s.User != "" && a.Owner == "" {
		// As php-fpm: the socket belongs to the user the server runs as,
		// and to that user's group unless another is named.
		a.Owner = s.User
		if a.Group == "" {
			u, err := account.Lookup(s.User)
			if err != nil {
				return a, err
			}
			a.Group = u.Gid
		}
	}
	return a, nil
}

// socketAccess (for serve) sets o's socket owner, group and mode and its user from
// [server] in the config (cfg, or the one beside the binary) and the flags
// in so, which replace the file's values.
func socketAccess(o *serve.Options, so socketOptions, cfg string) error {
	if cfg == "" {
		cfg = config.PathFor(serve.Executable(o.Args))
	}
	var sock socketOptions
	if c, err := config.Load(cfg); err == nil {
		sock.fromConfig(c.Server)
	} // else Run reports the broken config (and serves an error page)
	if err := sock.override(so); err != nil {
		return usageError{"serve: " + err.Error()}
	}
	a, err := sock.access()
	if err != nil {
		return usageError{"serve: " + err.Error()}
	}
	o.SocketAccess, o.User = a, sock.User
	return nil
}
