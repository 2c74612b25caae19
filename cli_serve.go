package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/serve"
)

// cmdServe is the modern spelling: serve --http ADDR, or --listen ADDR with
// --protocol.
func cmdServe(ctx context.Context, o serve.Options, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	httpAddr := fs.String("http", "", "serve plain HTTP on `ADDR` (a local preview)")
	listen := fs.String("listen", "", "serve on `ADDR`: host:port or unix:/path")
	protocol := fs.String("protocol", "fcgi", "fcgi, scgi or ajp")
	var so socketOptions
	fs.StringVar(&so.Owner, "listen-owner", "", "`user` owning the unix socket (php-fpm's listen.owner; needs root)")
	fs.StringVar(&so.Group, "listen-group", "", "`group` of the unix socket, e.g. the web server's (php-fpm's listen.group; needs root or membership)")
	fs.StringVar(&so.Mode, "listen-mode", "", "octal `mode` of the unix socket (php-fpm's listen.mode; default 0660 with an owner or group, else from --umask)")
	fs.StringVar(&so.Chown, "chown-socket", "", "uWSGI's spelling of --listen-owner/--listen-group: `user[:group]` or :group")
	fs.StringVar(&so.Chmod, "chmod-socket", "", "uWSGI's spelling of --listen-mode: octal `mode`")
	fs.StringVar(&so.User, "user", "", "run as this `user` once the socket exists (start as root); the socket then belongs to that user unless --listen-owner says otherwise")
	cfg := fs.String("config", "", "config `FILE` (default: the binary's name with .toml)")
	umask := fs.String("umask", "077", "umask for a unix socket (octal)")
	noApp := fs.Bool("no-app", false, "answer with the info page; never start or proxy to [app] (check's self-test)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	switch {
	case *httpAddr != "" && *listen != "":
		return usageError{"serve: use --http or --listen, not both"}
	case *httpAddr != "":
		o.Listen, o.Protocol = *httpAddr, "http"
	case *listen != "":
		o.Listen, o.Protocol = *listen, *protocol
	case serve.Getenv(o.Env)("LISTEN_FDS") != "":
		o.Protocol = *protocol // systemd passes the socket
	default:
		return usageError{"serve: need --http ADDR or --listen ADDR"}
	}
	switch o.Protocol {
	case "fcgi", "scgi", "ajp", "http":
	default:
		return usageError{fmt.Sprintf("serve: unknown protocol %q (want fcgi, scgi or ajp)", o.Protocol)}
	}
	m, err := strconv.ParseUint(*umask, 8, 32)
	if err != nil {
		return usageError{fmt.Sprintf("serve: umask %q is not octal", *umask)}
	}
	if err := socketAccess(&o, so, *cfg); err != nil {
		return err
	}
	u := int(m)
	o.Umask = &u
	o.ConfigPath = *cfg
	if *noApp {
		withoutApp(&o)
	}
	return serve.Run(ctx, o)
}

// withoutApp loads the config now with its [app] removed, so that serving
// proves the binary and the config work without starting the app. A config
// that does not load is left to Run, which answers with its error page.
func withoutApp(o *serve.Options) {
	path := o.ConfigPath
	if path == "" {
		path = config.PathFor(serve.Executable(o.Args))
	}
	if cfg, err := config.Load(path); err == nil {
		cfg.App = config.App{}
		o.Config, o.ConfigPath = cfg, path
	}
}
