package config

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	good := "# secrets\n\nDATABASE_URL=postgres://u:p#1@localhost/db\r\n" +
		"export SECRET_KEY='a b \\n $x'\n" +
		"  GREETING = \"say \\\"hi\\\"\\n\\tto \\\\ \\$HOME\" # trailing comment\n" +
		"EMPTY=\n_UNDER9=x=y\nexportX=1\n"
	got, err := ParseEnvFile("/h/.config/s.env", []byte(good))
	want := map[string]string{
		"DATABASE_URL": "postgres://u:p#1@localhost/db",
		"SECRET_KEY":   `a b \n $x`,
		"GREETING":     "say \"hi\"\n\tto \\ $HOME",
		"EMPTY":        "",
		"_UNDER9":      "x=y",
		"exportX":      "1",
	}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("got %q, %v\nwant %q", got, err, want)
	}
	for _, tc := range []struct{ in, want string }{
		{"A=1\nnot a line\n", "/e:2: want NAME=VALUE"},
		{"1A=x\n", `/e:1: "1A" is not a variable name`},
		{"A-B=x\n", `/e:1: "A-B" is not a variable name`},
		{"=x\n", `/e:1: "" is not a variable name`},
		{"A=1\n\nA=2\n", `/e:3: key "A": set again (first on line 1)`},
		{"K='topsecret\n", `/e:1: key "K": the value's ' quote is not closed on its line`},
		{"K=\"topsecret\" more\n", `/e:1: key "K": text after the closing " quote`},
		{"K=top\x00secret\n", `/e:1: key "K": the value contains a NUL byte`},
	} {
		_, err := ParseEnvFile("/e", []byte(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error shows the value: %v", tc.in, err)
		}
	}
}

// ReadEnvFile refuses a file other users can read or change, and one that
// is not ours; a private file of ours is read.
func TestReadEnvFilePermissions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	os.WriteFile(p, []byte("KEY=v\n"), 0o600)
	for _, tc := range []struct {
		mode os.FileMode
		want string // "" = read
	}{
		{0o600, ""}, {0o400, ""}, {0o640, ""},
		{0o644, "mode 0644 lets other users read or change it"},
		{0o604, "mode 0604"}, {0o620, "mode 0620"}, {0o602, "mode 0602"},
	} {
		os.Chmod(p, tc.mode)
		env, err := ReadEnvFile(p)
		switch {
		case tc.want == "" && (err != nil || env["KEY"] != "v"):
			t.Errorf("mode %04o: %v %v", tc.mode, env, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "chmod 600")):
			t.Errorf("mode %04o: error %v, want %q", tc.mode, err, tc.want)
		}
	}
	os.Chmod(p, 0o600)
	if os.Geteuid() == 0 {
		os.Chown(p, 12345, 12345)
		if _, err := ReadEnvFile(p); err == nil || !strings.Contains(err.Error(), "owned by uid 12345, not by us") {
			t.Errorf("someone else's file: %v", err)
		}
	}
	if _, err := ReadEnvFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadEnvFile(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
}

func TestEnvFileSetting(t *testing.T) {
	if _, err := Parse("/s/mysite.toml", []byte("[app]\nenv_file = \"secrets.env\"\n")); err == nil ||
		!strings.Contains(err.Error(), `/s/mysite.toml:2: key "app.env_file": want an absolute path or ~/...`) {
		t.Errorf("relative env_file: %v", err)
	}
	c, err := Parse("/s/mysite.toml", []byte("[app]\nenv_file = \"~/.config/mysite.env\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.EnvFilePath("/home/alice"); p != "/home/alice/.config/mysite.env" || err != nil {
		t.Errorf("EnvFilePath = %q, %v", p, err)
	}
	if _, err := c.EnvFilePath(""); err == nil {
		t.Error("~ expanded without a home")
	}
}
