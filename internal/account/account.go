// Package account resolves the user a socket or a process is given to, named
// the way the options accept it: a login name or a numeric ID. It is its own
// package because several concerns need the same answer — listen (the owner
// of a unix socket), daemon (the user the process switches to) and the
// command line (the socket's group defaults to that user's) — and listen and
// daemon should not import each other. It imports only the standard library.
package account

import (
	"fmt"
	"os/user"
	"strconv"
)

// Lookup finds the user called name, or with the numeric ID name.
func Lookup(name string) (*user.User, error) {
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(name); nerr == nil {
		u, err = user.LookupId(name)
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}
