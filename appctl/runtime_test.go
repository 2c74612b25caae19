package appctl

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/config"
)

// notOurs returns a directory that exists but is owned by another user.
func notOurs(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		return "/" // root's
	}
	d := t.TempDir()
	if err := os.Chown(d, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return d
}

// The one runtime-directory rule (RuntimeDir): item 2 of the shared-host
// review. suEXEC passes no HOME, so the home comes from the password
// database; a shared /tmp is the last resort, after the site directory.
func TestRuntimeDirRule(t *testing.T) {
	base := t.TempDir()
	site := filepath.Join(base, "site")
	home := filepath.Join(base, "home")
	xdg := filepath.Join(base, "xdg")
	long := filepath.Join(base, strings.Repeat("d", 90))
	for _, d := range []string{site, home, xdg, long} {
		os.MkdirAll(d, 0o700)
	}
	other := notOurs(t)
	cfg := &config.Config{File: filepath.Join(site, "mysite.toml"), App: config.App{Command: []string{"app"}}}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	h := RuntimeDir(cfg, env("HOME", home))
	hash := filepath.Base(h)
	if h != filepath.Join(home, ".cache", "fcgishim", hash) || len(hash) != 12 {
		t.Fatalf("HOME set: %s", h)
	}
	cfg2 := &config.Config{File: filepath.Join(site, "blog.toml")}
	if h2 := RuntimeDir(cfg2, env("HOME", home)); h2 == h {
		t.Errorf("two configs share %s", h)
	}
	cases := []struct {
		name string
		env  func(string) string
		file string // config file; "" = cfg's
		want string
	}{
		{"XDG_RUNTIME_DIR is not used (web servers do not pass it)", env("XDG_RUNTIME_DIR", xdg, "HOME", home), "", h},
		{"HOME not ours: beside the config", env("HOME", other), "", filepath.Join(site, ".fcgishim-mysite")},
		{"HOME too long for a socket path", env("HOME", long), "", filepath.Join(site, ".fcgishim-mysite")},
		{"nothing ours: TMPDIR", env("HOME", other, "TMPDIR", base), filepath.Join(other, "mysite.toml"),
			filepath.Join(base, "fcgishim-"+strconv.Itoa(os.Getuid())+"-")},
		{"nothing ours, no TMPDIR: /tmp", env("HOME", other), filepath.Join(other, "mysite.toml"),
			"/tmp/fcgishim-" + strconv.Itoa(os.Getuid()) + "-"},
	}
	for _, tc := range cases {
		c := cfg
		if tc.file != "" {
			c = &config.Config{File: tc.file}
		}
		got := RuntimeDir(c, tc.env)
		if got != tc.want && !(strings.HasSuffix(tc.want, "-") && strings.HasPrefix(got, tc.want) && len(got) == len(tc.want)+12) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	cfg.App.RuntimeDir = "run"
	if got := RuntimeDir(cfg, env("HOME", home)); got != filepath.Join(site, "run") {
		t.Errorf("[app] runtime_dir: %s", got)
	}
}

// Under suEXEC HOME is unset: the home comes from the password database,
// not from /tmp (which any local user can write).
func TestRuntimeDirHomeFromPasswd(t *testing.T) {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Skipf("no password entry for uid %d: %v", os.Getuid(), err)
	}
	if !ownedBy(u.HomeDir, os.Getuid()) {
		t.Skipf("home %s is not ours", u.HomeDir)
	}
	cfg := &config.Config{File: filepath.Join(t.TempDir(), "mysite.toml")}
	got := RuntimeDir(cfg, func(string) string { return "" })
	if want := filepath.Join(u.HomeDir, ".cache", "fcgishim") + "/"; !strings.HasPrefix(got, want) {
		t.Errorf("HOME unset: %s, want below %s", got, want)
	}
	if got != RuntimeDir(cfg, func(k string) string { return map[string]string{"HOME": u.HomeDir}[k] }) {
		t.Errorf("HOME unset and HOME set to the same home give different directories")
	}
}
