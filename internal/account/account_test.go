package account

import (
	"os/user"
	"strings"
	"testing"
)

// The options name a user by login or by number; both must find the same
// account, and an unknown one must say which name failed.
func TestLookupByNameAndByID(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	byName, err := Lookup(me.Username)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", me.Username, err)
	}
	byID, err := Lookup(me.Uid)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", me.Uid, err)
	}
	if byName.Uid != me.Uid || byID.Username != me.Username {
		t.Errorf("Lookup(%q).Uid = %s, Lookup(%q).Username = %s; want %s and %s",
			me.Username, byName.Uid, me.Uid, byID.Username, me.Uid, me.Username)
	}
	const missing = "fcgishim-no-such-user"
	if _, err := Lookup(missing); err == nil || !strings.Contains(err.Error(), `user "`+missing+`"`) {
		t.Errorf("Lookup(%q) error = %v, want one naming the user", missing, err)
	}
}
