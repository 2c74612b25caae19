package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// An env file holds the app's secrets outside the document root ([app]
// env_file): one KEY=VALUE per line, as shells and most "dotenv" loaders
// read them.
//
//	# comments (a line starting with #) and blank lines are ignored
//	DATABASE_URL=postgres://u:p#1@localhost/db
//	export SECRET_KEY='single quotes: literal'
//	GREETING="double quotes: \" \\ \n \t escapes"
//
// An unquoted value is the rest of the line, verbatim but for surrounding
// blanks (a # in it is part of the value).
//
// A name is letters, digits and _ (not starting with a digit); a name set
// twice, a line without "=", an unterminated quote or a NUL byte is an error
// naming the line. Errors never contain values.

// maxEnvFile bounds what ReadEnvFile reads.
const maxEnvFile = 1 << 20

// ParseEnvFile parses the contents of an env file; path only names it in
// errors.
func ParseEnvFile(path string, data []byte) (map[string]string, error) {
	env := map[string]string{}
	first := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		bad := func(key, format string, args ...any) error {
			return &Error{File: path, Line: n, Key: key, Msg: fmt.Sprintf(format, args...)}
		}
		line = strings.TrimSuffix(line, "\r")
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(t, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			t = strings.TrimSpace(rest)
		}
		k, v, ok := strings.Cut(t, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return nil, bad("", "want NAME=VALUE")
		}
		if !validEnvName(k) {
			return nil, bad("", "%q is not a variable name (letters, digits and _, not starting with a digit)", k)
		}
		if m, dup := first[k]; dup {
			return nil, bad(k, "set again (first on line %d)", m)
		}
		val, err := envValue(strings.TrimSpace(v))
		if err != nil {
			return nil, bad(k, "%s", err.Error())
		}
		env[k], first[k] = val, n
	}
	return env, nil
}

func validEnvName(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range []byte(k) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// envValue unquotes one value. The errors describe the value's shape, never
// its content.
func envValue(v string) (string, error) {
	if strings.IndexByte(v, 0) >= 0 {
		return "", errors.New("the value contains a NUL byte")
	}
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	q := v[0]
	end := -1
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		if c == q {
			end = i
			break
		}
		if q == '"' && c == '\\' && i+1 < len(v) {
			i++
			switch v[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case '"', '\\', '$':
				b.WriteByte(v[i])
			default:
				b.WriteByte('\\')
				b.WriteByte(v[i])
			}
			continue
		}
		b.WriteByte(c)
	}
	if end < 0 {
		return "", fmt.Errorf("the value's %c quote is not closed on its line", q)
	}
	if rest := strings.TrimSpace(v[end+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
		return "", fmt.Errorf("text after the closing %c quote", q)
	}
	return b.String(), nil
}

// ReadEnvFile reads and parses the env file at path, which must be a regular
// file owned by the user we run as and neither readable nor writable by
// other users (group-readable is allowed: some hosts share a group with the
// web server). Secrets that others can read are refused, not used.
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("[app] env_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("[app] env_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("[app] env_file %s: not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("[app] env_file %s: owned by uid %d, not by us (uid %d): refusing secrets another user controls", path, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o027 != 0 {
		return nil, fmt.Errorf("[app] env_file %s: mode %04o lets other users read or change it: refusing it; run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxEnvFile+1))
	if err != nil {
		return nil, fmt.Errorf("[app] env_file: %w", err)
	}
	if len(data) > maxEnvFile {
		return nil, fmt.Errorf("[app] env_file %s: larger than %d bytes", path, maxEnvFile)
	}
	return ParseEnvFile(path, data)
}

// EnvFilePath is the env file to read: [app] env_file with a leading "~/"
// replaced by home (the account's home directory); "" when none is set.
func (c *Config) EnvFilePath(home string) (string, error) {
	p := c.App.EnvFile
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home == "" {
			return "", fmt.Errorf("[app] env_file %s: no home directory to expand ~ in", strconv.Quote(p))
		}
		return filepath.Join(home, rest), nil
	}
	return p, nil
}
