package peertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A suEXEC host is how most shared hosts run mod_fcgid: Apache 2.4 with
// mod_userdir, mod_fcgid, mod_rewrite and Debian's apache2-suexec-pristine,
// so that /~alice/... runs alice's programs as alice, with suEXEC's bare
// environment. A test builds one from throwaway Unix accounts:
//
//	alice := peer.NewUser(t, "alice")    // site owner, /home/aliceXXXXXX
//	bob := peer.NewUser(t, "bob")        // a neighbour on the same machine
//	h := peer.Suexec(t, peer.SuexecOptions{})
//	site := alice.InstallSite(t, bin, "mysite") // `./mysite.fcgi install ~/public_html/mysite`, as alice
//	code, body := peer.Get(t, nil, h.UserURL(alice, "/mysite/"))
//	bob.Run(t, "mkdir", "-m", "0700", "/tmp/somewhere")
//
// It needs root (to create users and because suEXEC only works when httpd
// starts as root); without root the test skips, and under CI=true it fails.
// Cleanup (registered with t.Cleanup, run in reverse order) stops Apache
// first, then kills every process of each throwaway user, removes what they
// left at the top of /tmp and deletes them with `userdel -r`.

// SuexecPath is where Debian's alternatives put the suEXEC helper httpd uses.
const SuexecPath = "/usr/lib/apache2/suexec"

// SuexecSafePath is the PATH suEXEC gives every program it runs (AP_SAFE_PATH
// of apache2-suexec-pristine); see SuexecRules for the compiled-in value.
const SuexecSafePath = "/usr/local/bin:/usr/bin:/bin"

// SuexecRules are suEXEC's compiled-in rules, as `suexec -V` prints them.
type SuexecRules struct {
	DocRoot       string // AP_DOC_ROOT: programs outside ~user/Suffix must be below it
	UIDMin        int    // AP_UID_MIN
	GIDMin        int    // AP_GID_MIN
	HTTPDUser     string // AP_HTTPD_USER: the only caller suEXEC accepts
	LogExec       string // AP_LOG_EXEC: suEXEC's own log (reasons for refusals)
	SafePath      string // AP_SAFE_PATH: the only PATH a program gets
	UserdirSuffix string // AP_USERDIR_SUFFIX: "public_html"
}

// NeedRoot skips t unless it runs as root; under CI=true it fails instead.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (it creates users and runs suEXEC); CI runs as root")
	}
	t.Skip("needs root: creates throwaway users and runs Apache with suEXEC")
}

// ReadSuexecRules runs `suexec -V` (as root, the only user it answers) and
// parses its -D NAME=value lines.
func ReadSuexecRules(t testing.TB) SuexecRules {
	t.Helper()
	NeedRoot(t)
	if _, err := os.Stat(SuexecPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("suEXEC (apache2-suexec-pristine) is required in CI: %v", err)
		}
		t.Skipf("suEXEC not installed (apache2-suexec-pristine): %v", err)
	}
	out, err := exec.Command(SuexecPath, "-V").CombinedOutput()
	if err != nil {
		t.Fatalf("suexec -V: %v\n%s", err, out)
	}
	r, err := ParseSuexecRules(string(out))
	if err != nil {
		t.Fatalf("suexec -V: %v\n%s", err, out)
	}
	return r
}

// ParseSuexecRules reads the output of `suexec -V` (lines like
// ` -D AP_UID_MIN=100`, string values in double quotes).
func ParseSuexecRules(out string) (SuexecRules, error) {
	var r SuexecRules
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "-D ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		switch k {
		case "AP_DOC_ROOT":
			r.DocRoot = v
		case "AP_UID_MIN":
			r.UIDMin, _ = strconv.Atoi(v)
		case "AP_GID_MIN":
			r.GIDMin, _ = strconv.Atoi(v)
		case "AP_HTTPD_USER":
			r.HTTPDUser = v
		case "AP_LOG_EXEC":
			r.LogExec = v
		case "AP_SAFE_PATH":
			r.SafePath = v
		case "AP_USERDIR_SUFFIX":
			r.UserdirSuffix = v
		}
	}
	if r.HTTPDUser == "" || r.SafePath == "" {
		return r, fmt.Errorf("no AP_HTTPD_USER or AP_SAFE_PATH in suexec -V output")
	}
	return r, nil
}

// SuexecOptions shape the host's <Directory /home/*/public_html> section.
type SuexecOptions struct {
	// AllowOverride is what .htaccess files may set; "" = "All" (cPanel's
	// and Plesk's default). Debian's own userdir.conf has
	// "FileInfo AuthConfig Limit Indexes".
	AllowOverride string
	// Options for the user directories; "" = "SymLinksIfOwnerMatch" (the
	// site's .htaccess adds ExecCGI itself, as install writes it).
	Options string
	// Modules are loaded in addition to userdir, suexec, fcgid and rewrite.
	Modules []string
	// Conf is added at server level ("{{DIR}}" = the server's directory).
	Conf string
}

// SuexecHost is a running Apache whose ~user requests run through suEXEC.
type SuexecHost struct {
	*Server
	Rules    SuexecRules
	logStart int64 // size of Rules.LogExec when the host started
}

// Suexec starts the host. Users may be created before or after.
func Suexec(t testing.TB, o SuexecOptions) *SuexecHost {
	t.Helper()
	rules := ReadSuexecRules(t)
	Need(t, "apache2", "useradd", "userdel")
	if o.AllowOverride == "" {
		o.AllowOverride = "All"
	}
	if o.Options == "" {
		o.Options = "SymLinksIfOwnerMatch"
	}
	h := &SuexecHost{Rules: rules}
	if fi, err := os.Stat(rules.LogExec); err == nil {
		h.logStart = fi.Size()
	}
	mods := append([]string{"userdir", "suexec", "fcgid", "rewrite"}, o.Modules...)
	h.Server = Apache(t, mods, fmt.Sprintf(`
UserDir %[1]s
UserDir disabled root
FcgidIPCDir {{DIR}}/fcgid
FcgidProcessTableFile {{DIR}}/fcgid_shm
FcgidMaxRequestsPerProcess 0
<Directory /home/*/%[1]s>
    AllowOverride %[2]s
    Options %[3]s
    Require all granted
</Directory>
%[4]s
`, rules.UserdirSuffix, o.AllowOverride, o.Options, o.Conf))
	// Apache may listen before its second configuration pass logs this.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.Log(), "suEXEC mechanism enabled"); {
		if time.Now().After(deadline) {
			t.Fatalf("Apache started without suEXEC (is %s setuid root, group %s?):\n%s", SuexecPath, rules.HTTPDUser, h.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling the log for a condition
	}
	return h
}

// UserURL is the URL of path below u's public directory: /~name/path.
func (h *SuexecHost) UserURL(u *User, path string) string {
	return h.URL + "/~" + u.Name + "/" + strings.TrimPrefix(path, "/")
}

// SuexecLog returns what suEXEC logged since the host started (every
// program it ran, and why it refused one). Other tests on the machine share
// the file, so look for your user's name.
func (h *SuexecHost) SuexecLog() string {
	f, err := os.Open(h.Rules.LogExec)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(h.logStart, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// User is a throwaway Unix account with a home directory and ~/public_html.
type User struct {
	Name       string
	UID, GID   int
	Home       string // from the password database
	PublicHTML string // Home/public_html, 0755, the user's
}

// NewUser creates a fresh unprivileged user named prefix plus six random hex
// digits (concurrent test runs never share one), with a home directory
// (0711: the web server may traverse it, neighbours may not list it) and an
// empty ~/public_html (0755). The account and everything it runs or owns at
// the top of /tmp are removed when t ends.
func NewUser(t testing.TB, prefix string) *User {
	t.Helper()
	NeedRoot(t)
	Need(t, "useradd", "userdel")
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	name := prefix + hex.EncodeToString(suffix[:])
	if err := useradd(name); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	u := &User{Name: name}
	t.Cleanup(func() { u.remove(t) })
	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up new user %s: %v", name, err)
	}
	u.UID, _ = strconv.Atoi(pw.Uid)
	u.GID, _ = strconv.Atoi(pw.Gid)
	u.Home = pw.HomeDir
	u.PublicHTML = filepath.Join(u.Home, "public_html")
	if err := os.Chmod(u.Home, 0o711); err != nil {
		t.Fatal(err)
	}
	u.Run(t, "mkdir", "-m", "0755", u.PublicHTML)
	return u
}

// useradd creates name with a home and its own group, retrying while
// another process holds the password database's lock.
func useradd(name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name).CombinedOutput()
		if err == nil {
			return nil
		}
		if !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			return fmt.Errorf("useradd %s: %v: %s", name, err, out)
		}
		time.Sleep(50 * time.Millisecond) // another useradd/userdel holds /etc/passwd: try again
	}
}

// LoginEnv is the environment of u's login shell (what `runuser -l` gives).
func (u *User) LoginEnv() []string {
	return []string{"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name, "SHELL=/bin/sh",
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
}

// SuexecEnv is all suEXEC passes to a program besides CGI variables: its
// safe PATH. No HOME, TMPDIR, XDG_RUNTIME_DIR or LANG.
func SuexecEnv() []string { return []string{"PATH=" + SuexecSafePath} }

// Command returns a command that runs as u (uid, gid, and only u's own
// group) in u's home directory with env; nil env = u.LoginEnv().
func (u *User) Command(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if env == nil {
		env = u.LoginEnv()
	}
	cmd.Env = env
	cmd.Dir = u.Home
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}},
		Setpgid:    true,
	}
	return cmd
}

// Run runs name as u in a login environment and returns its combined
// output, failing t when it fails.
func (u *User) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := u.Command(nil, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("as %s: %s %s: %v\n%s", u.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Shell runs a /bin/sh command line as u in a login environment (so ~
// expands to u's home), failing t when it fails.
func (u *User) Shell(t testing.TB, line string) string {
	t.Helper()
	return u.Run(t, "/bin/sh", "-c", line)
}

// WriteFile puts data at path (relative paths are below u's home), owned by
// u with perm, through a temporary file and a rename, as an editor would.
// The directory must exist.
func (u *User) WriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if !filepath.IsAbs(path) {
		path = filepath.Join(u.Home, path)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(tmp, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// InstallSite follows the README's recipe as u: the binary at bin is put in
// u's home as ~/NAME (NAME = bin's base name, owned by u, 0755, as if u had
// built or downloaded it there), then `./NAME install ~/public_html/site`
// runs in u's login shell. It returns the site's directory.
func (u *User) InstallSite(t testing.TB, bin, site string) string {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(bin)
	u.WriteFile(t, name, data, 0o755)
	u.Shell(t, "./"+name+" install ~/public_html/"+site)
	return filepath.Join(u.PublicHTML, site)
}

// Processes lists the PIDs of every process running as u (real uid).
func (u *User) Processes() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if uid, ok := ProcessUID(pid); ok && uid == u.UID {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ProcessUID returns the real uid of pid from /proc/pid/status.
func ProcessUID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				uid, err := strconv.Atoi(f[0])
				return uid, err == nil
			}
		}
	}
	return 0, false
}

// remove kills u's processes until none is left, removes u's files at the
// top of /tmp, and deletes the account and its home.
func (u *User) remove(t testing.TB) {
	if u.UID != 0 {
		deadline := time.Now().Add(15 * time.Second)
		for {
			pids := u.Processes()
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("user %s: processes %v survive SIGKILL", u.Name, pids)
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond) // polling until the kernel reaped them
		}
		removeOwnedIn(os.TempDir(), u.UID)
		removeOwnedIn("/tmp", u.UID)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("userdel", "--remove", u.Name).CombinedOutput()
		// 6: no such user (never created); 12: home not removed (already gone).
		if err == nil || bytes.Contains(out, []byte("does not exist")) {
			return
		}
		if !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			t.Errorf("userdel %s: %v: %s", u.Name, err, out)
			return
		}
		time.Sleep(50 * time.Millisecond) // the password database is locked: try again
	}
}

// removeOwnedIn removes the entries of dir owned by uid.
func removeOwnedIn(dir string, uid int) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
			os.RemoveAll(p)
		}
	}
}
