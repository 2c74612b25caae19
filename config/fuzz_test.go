package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: any bytes as mysite.toml never panic, and every error names
// the file (and a line within it when it has one).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"[app]\ncommand = [\"python3\", \"app.py\", \"{socket}\"]\nlog = \"app.log\"\n",
		"[app]\nupstream = \"http://127.0.0.1:8000\"\ntimeout = \"5s\"\n",
		"[static]\n\"/static\" = \"static\"\n",
		"[server]\nforce_script_name = \"/mysite\"\nmaxrequests = 10\ngrace = \"1s\"\n",
		"[limits]\nmax_params_bytes = 1024\nheader_timeout = \"1s\"\nrequest_timeout = \"-1s\"\n",
		"[app]\ncomand = [\"x\"]\n",
		"[app\n",
		"[app]\nwsgi = \"mysite.wsgi:app\"\npython = \"venv/bin/python\"\nworkers = 2\n",
		"[server]\numask = \"9\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("/site/mysite.toml", data)
		if err == nil {
			if c == nil || c.File != "/site/mysite.toml" {
				t.Fatalf("no config and no error")
			}
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error without a place: %v", err)
		}
		if ce.File != "/site/mysite.toml" || !strings.HasPrefix(err.Error(), "/site/mysite.toml") {
			t.Fatalf("error does not name the file: %v", err)
		}
		if lines := strings.Count(string(data), "\n") + 1; ce.Line < 0 || ce.Line > lines {
			t.Fatalf("line %d outside the %d-line file: %v", ce.Line, lines, err)
		}
	})
}

// FuzzEnvFile: any bytes as an env file never panic; an error names the file
// and a line in it; what parses has valid names and no NUL, and written back
// in double quotes parses to the same variables.
func FuzzEnvFile(f *testing.F) {
	for _, s := range []string{
		"", "A=1\n", "# c\nexport B='x y'\nC=\"a\\\"b\\n\"\n", "K=\"open\n", "1=2\n", "A=1\nA=2\n", "x\r\ny=\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvFile("/h/app.env", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "/h/app.env" {
				t.Fatalf("error without the file: %v", err)
			}
			if lines := strings.Count(string(data), "\n") + 1; ce.Line < 1 || ce.Line > lines {
				t.Fatalf("line %d outside the %d-line file: %v", ce.Line, lines, err)
			}
			return
		}
		var b strings.Builder
		for k, v := range env {
			if !validEnvName(k) || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("parsed %q=%q", k, v)
			}
			r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "$", `\$`)
			b.WriteString(k + "=\"" + r.Replace(v) + "\"\n")
		}
		back, err := ParseEnvFile("/h/app.env", []byte(b.String()))
		if err != nil || len(back) != len(env) {
			t.Fatalf("written back %q: %v", b.String(), err)
		}
		for k, v := range env {
			if back[k] != v {
				t.Fatalf("%s: %q written back reads %q", k, v, back[k])
			}
		}
	})
}
