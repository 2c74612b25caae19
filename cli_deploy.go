package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/deploy"
	"github.com/fcgishim/fcgishim/serve"
)

// cmdDeploy prints a web server configuration for TARGET, or the list of
// targets. Defaults come from where the binary is and its mysite.toml.
func cmdDeploy(ctx context.Context, o serve.Options, args []string) error {
	exe := serve.Executable(o.Args)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintf(o.Stdout, "Usage: %s deploy TARGET [flags]   (%s deploy TARGET --help lists the flags)\n\nTargets:\n", progName(o.Args), progName(o.Args))
		for _, t := range deploy.Targets() {
			fmt.Fprintf(o.Stdout, "  %-24s %s\n", t.Name, t.Summary)
		}
		return nil
	}
	target, rest := args[0], args[1:]
	fs := flag.NewFlagSet("deploy "+target, flag.ContinueOnError)
	fs.SetOutput(o.Stderr)
	var p deploy.Params
	fs.StringVar(&p.Name, "name", filepath.Base(exe), "the binary's file `name`")
	fs.StringVar(&p.Dir, "dir", filepath.Dir(exe), "`directory` holding the binary (document root)")
	cfgPath := fs.String("config", "", "config `file` to read [static] and [server] from (default: beside the binary)")
	fs.StringVar(&p.Socket, "socket", "", "unix socket `path` of the external server (default DIR/NAME.sock)")
	fs.StringVar(&p.Host, "host", "", "TCP `host` of the external server (with --port; default 127.0.0.1)")
	fs.IntVar(&p.Port, "port", 0, "TCP `port` of the external server (instead of a socket)")
	fs.StringVar(&p.ServerName, "server-name", "", "the site's host `name` (default example.com)")
	fs.StringVar(&p.Listen, "listen", "", "`address` the web server listens on (default port 80)")
	fs.StringVar(&p.Prefix, "prefix", "", "URL `path` the site is mounted at (default the root)")
	fs.StringVar(&p.User, "user", "", "`user` the external server runs as (default www-data; init-script: whoever runs it)")
	fs.StringVar(&p.WebGroup, "web-group", "", "`group` the external server's socket is given to (default: the web server's, www-data or haproxy)")
	backends := fs.String("backends", "", "several external servers: `host:port,host:port` (haproxy, nginx)")
	sites := fs.String("sites", "", "several lighttpd sites: `host=dir,host=dir` (each dir holds its binary)")
	if err := fs.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("deploy %s: unexpected argument %q", target, fs.Arg(0))}
	}
	if *cfgPath == "" {
		*cfgPath = config.PathFor(filepath.Join(p.Dir, p.Name))
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	if len(cfg.Static) > 0 {
		p.Static = map[string]string{}
		for k, v := range cfg.Static {
			p.Static[k] = cfg.Resolve(v)
		}
	}
	if cfg.File != "" {
		p.Config = cfg.File
	}
	s := cfg.Server
	if p.Socket == "" && p.Port == 0 {
		if s.Port != 0 {
			p.Host, p.Port = s.Host, s.Port
		} else if s.Socket != "" {
			p.Socket = cfg.Resolve(s.Socket)
		}
	}
	if *backends != "" {
		p.Backends = splitList(*backends)
	}
	if *sites != "" {
		for _, s := range splitList(*sites) {
			host, dir, ok := strings.Cut(s, "=")
			if !ok || host == "" || dir == "" {
				return usageError{fmt.Sprintf("deploy: --sites: want host=dir, got %q", s)}
			}
			p.Sites = append(p.Sites, deploy.Site{Host: host, Dir: dir})
		}
	}
	out, err := deploy.Render(target, p)
	if err != nil {
		return usageError{"deploy: " + err.Error()}
	}
	_, err = io.WriteString(o.Stdout, out)
	return err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseDirArgs parses fs's flags with one optional DIR before or after them.
func parseDirArgs(fs *flag.FlagSet, args []string) (string, error) {
	dir, rest := "", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dir, rest = args[0], args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return "", usageError{err.Error()}
	}
	if dir == "" && fs.NArg() == 1 {
		dir = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return "", usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return dir, nil
}

// cmdInstall copies this binary into DIR with a config template and the
// .htaccess block.
func cmdInstall(ctx context.Context, o serve.Options, args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(o.Stderr)
	name := fs.String("name", "mysite.fcgi", "the binary's file `name` in DIR")
	handler := fs.String("handler", "fcgid", "the .htaccess handler: fcgid, fastcgi, cgi, or none")
	dir, err := parseDirArgs(fs, args)
	if err != nil {
		return err
	}
	if dir == "" {
		return usageError{"Usage: " + progName(o.Args) + " install DIR [--name mysite.fcgi] [--handler fcgid|fastcgi|cgi|none]"}
	}
	_, err = deploy.Install(deploy.InstallOptions{
		Source: serve.Executable(o.Args), Dir: dir, Name: *name, Handler: *handler, Out: o.Stdout,
	})
	return err
}

// cmdCheck diagnoses a site directory (default: the binary's own).
func cmdCheck(ctx context.Context, o serve.Options, args []string) error {
	exe := serve.Executable(o.Args)
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(o.Stderr)
	name := fs.String("name", "", "the binary's file `name` in DIR (default: this binary's name, or the only *.fcgi there)")
	suexec := fs.String("suexec", "auto", "does the web server run the site through suEXEC: auto (guess from /etc/apache2), on or off")
	url := fs.String("url", "", "also request the live site at `URL` (https://host/mysite/) and explain what it answers")
	dir, err := parseDirArgs(fs, args)
	if err != nil {
		return err
	}
	if dir == "" {
		dir = filepath.Dir(exe)
	}
	switch *suexec {
	case "auto":
		*suexec = ""
	case "on", "off":
	default:
		return usageError{fmt.Sprintf("check: --suexec %q: want auto, on or off", *suexec)}
	}
	if *name == "" {
		*name = filepath.Base(exe)
		if _, err := os.Stat(filepath.Join(dir, *name)); err != nil {
			if m, _ := filepath.Glob(filepath.Join(dir, "*.fcgi")); len(m) == 1 {
				*name = filepath.Base(m[0])
			}
		}
	}
	getenv := func(k string) string {
		for _, kv := range o.Env {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	r := deploy.Check(ctx, deploy.CheckOptions{
		Dir: dir, Name: *name, Out: o.Stdout, Getenv: getenv, Suexec: *suexec, URL: *url,
		Color: isTerminal(o.Stdout) && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb",
	})
	if r.Failed > 0 {
		return fmt.Errorf("check: %d item(s) failed", r.Failed)
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
