package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/fcgishim/fcgishim/internal/account"
)

// SocketAccess says who may connect to a unix socket we create. These are
// the controls php-fpm calls listen.owner, listen.group and listen.mode and
// uWSGI calls chown-socket and chmod-socket. Connecting needs write
// permission on the socket file, so a web server running as www-data needs
// the socket to be its own, or in its group with mode 0660.
type SocketAccess struct {
	Owner string // user name or numeric ID; "" = the user we run as
	Group string // group name or numeric ID; "" = our primary group
	// Mode is the permission bits; 0 = 0660 when Owner or Group is set
	// (handing the socket to someone is only useful if they may use it),
	// otherwise 0777 minus the umask.
	Mode fs.FileMode
}

// IsZero reports whether a changes nothing about a new socket.
func (a SocketAccess) IsZero() bool { return a == SocketAccess{} }

// mode is the socket's final permission bits under umask.
func (a SocketAccess) mode(umask int) fs.FileMode {
	switch {
	case a.Mode != 0:
		return a.Mode
	case a.Owner != "" || a.Group != "":
		return 0o660
	}
	return 0o777 &^ fs.FileMode(umask) & fs.ModePerm
}

// String describes a for messages: "owner www-data, group www-data, mode 0660".
func (a SocketAccess) String() string {
	var parts []string
	if a.Owner != "" {
		parts = append(parts, "owner "+a.Owner)
	}
	if a.Group != "" {
		parts = append(parts, "group "+a.Group)
	}
	if a.Mode != 0 {
		parts = append(parts, fmt.Sprintf("mode %04o", a.Mode))
	}
	return strings.Join(parts, ", ")
}

// ParseSocketMode reads permission bits in octal, as chmod takes them
// ("660", "0660"). Only the nine permission bits are allowed.
func ParseSocketMode(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n == 0 || n > 0o777 {
		return 0, fmt.Errorf("socket mode %q: want octal permission bits between 1 and 0777, like 0660", s)
	}
	return fs.FileMode(n), nil
}

// ParseChown reads uWSGI's chown-socket value: "user", "user:group" or
// ":group".
func ParseChown(s string) (owner, group string, err error) {
	owner, group, _ = strings.Cut(s, ":")
	if owner == "" && group == "" || strings.ContainsAny(owner+group, ": \t") {
		return "", "", fmt.Errorf("chown-socket %q: want USER, USER:GROUP or :GROUP", s)
	}
	return owner, group, nil
}

// ids resolves Owner and Group to numeric IDs; -1 means "leave as is".
func (a SocketAccess) ids() (uid, gid int, err error) {
	uid, gid = -1, -1
	if a.Owner != "" {
		if uid, err = lookupUID(a.Owner); err != nil {
			return -1, -1, err
		}
	}
	if a.Group != "" {
		if gid, err = lookupGID(a.Group); err != nil {
			return -1, -1, err
		}
	}
	return uid, gid, nil
}

func lookupUID(name string) (int, error) {
	u, err := account.Lookup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(u.Uid)
}

func lookupGID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil // a numeric group need not be named in /etc/group
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// applyAccess gives the bound (not yet listening) socket at path its owner,
// group and mode. Nobody can connect before listen(2), so the socket is
// never reachable with anything but its final permissions.
func applyAccess(path string, a SocketAccess, umask int) error {
	uid, gid, err := a.ids()
	if err != nil {
		return err
	}
	if uid != -1 || gid != -1 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("give socket to %s: %w%s", a.ownerGroup(), err, chownHint(err))
		}
	}
	// chmod follows symlinks: make sure the name is still our socket.
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s was replaced by something that is not our socket", path)
	}
	if err := os.Chmod(path, a.mode(umask)); err != nil {
		return fmt.Errorf("set socket mode %04o: %w", a.mode(umask), err)
	}
	return nil
}

func (a SocketAccess) ownerGroup() string {
	switch {
	case a.Owner != "" && a.Group != "":
		return "user " + a.Owner + " and group " + a.Group
	case a.Owner != "":
		return "user " + a.Owner
	}
	return "group " + a.Group
}

func chownHint(err error) string {
	if !errors.Is(err, syscall.EPERM) {
		return ""
	}
	return fmt.Sprintf(" (running as uid %d: only root may give a socket to another user, and only root or a member of a group may give it to that group)", os.Geteuid())
}
