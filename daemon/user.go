package daemon

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/fcgishim/fcgishim/internal/account"
)

// SwitchUser makes the whole process run as the named user (a name or a
// numeric ID), with that user's primary and supplementary groups — what
// php-fpm's pool `user` and uWSGI's --uid do once the socket exists. It is
// called after listening, so root can create a socket where the user could
// not and hand it over. Already running as that user is not an error (a
// re-executed restart passes the same option again); any other user than
// root asking to become someone else is. After the switch, HOME, USER and
// LOGNAME name the user (nameUser).
func SwitchUser(name string) error {
	u, err := account.Lookup(name)
	if err != nil {
		return fmt.Errorf("switch user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("switch user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("switch user %s: gid %q: %w", name, u.Gid, err)
	}
	if os.Geteuid() == uid && os.Getegid() == gid {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("switch to user %s: only root can, and this process runs as uid %d (drop the user option, or start as root)", name, os.Geteuid())
	}
	groups := []int{gid}
	if names, err := u.GroupIds(); err == nil {
		for _, g := range names {
			if n, err := strconv.Atoi(g); err == nil && n != gid {
				groups = append(groups, n)
			}
		}
	}
	// Groups first: once the uid is no longer 0 they cannot change.
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("switch to user %s: set groups: %w", name, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("switch to user %s: set gid %d: %w", name, gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("switch to user %s: set uid %d: %w", name, uid, err)
	}
	return nameUser(u)
}

// nameUser makes the environment (which the supervisor and the app
// inherit) name u, as a login would, instead of root's HOME, USER and
// LOGNAME: an app that keeps files under ~ or asks who it is sees the user
// it runs as. HOME is left out when the password database has none.
func nameUser(u *user.User) error {
	vars := [][2]string{{"USER", u.Username}, {"LOGNAME", u.Username}}
	if u.HomeDir != "" {
		vars = append(vars, [2]string{"HOME", u.HomeDir})
	}
	for _, kv := range vars {
		if err := os.Setenv(kv[0], kv[1]); err != nil {
			return fmt.Errorf("switch to user %s: set %s: %w", u.Username, kv[0], err)
		}
	}
	return nil
}
