// Command mysite.fcgi serves a web app where the host offers only CGI or
// FastCGI, and runs as an external FastCGI / SCGI / AJP server elsewhere.
// Copy it next to mysite.toml; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/listen"
	"github.com/fcgishim/fcgishim/serve"
)

func main() {
	err := run(context.Background(), os.Args, os.Environ(), os.Stdout, os.Stderr)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", progName(os.Args), err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func progName(args []string) string {
	if len(args) == 0 {
		return "mysite.fcgi"
	}
	s := args[0]
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// run dispatches on how the program was started: spawned by a web server
// (argv is ignored: under CGI it is the query string), or a subcommand.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	base := serve.Options{Args: args, Env: env, Stdout: stdout, Stderr: stderr}
	getenv := serve.Getenv(env)
	switch listen.Detect(getenv) {
	case listen.ModeFastCGIStdin, listen.ModeCGI:
		return serve.Run(ctx, base)
	}
	if len(args) < 2 {
		return serve.Run(ctx, base) // terminal status, or socket activation
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, base, rest)
	case "runfcgi":
		return cmdRunfcgi(ctx, base, rest)
	case "deploy":
		return cmdDeploy(ctx, base, rest)
	case "install":
		return cmdInstall(ctx, base, rest)
	case "check":
		return cmdCheck(ctx, base, rest)
	case "stop":
		return cmdStop(ctx, base, rest)
	case "_supervise":
		fs := flag.NewFlagSet("_supervise", flag.ContinueOnError)
		cfg := fs.String("config", "", "config file")
		if err := fs.Parse(rest); err != nil {
			return usageError{err.Error()}
		}
		// The supervisor outlives the copy that started it; SIGTERM must
		// stop its app gracefully rather than kill it outright.
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return appctl.Supervise(ctx, *cfg, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "fcgishim", serve.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage(progName(args)))
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q\n\n%s", cmd, usage(progName(args)))}
}

func usage(name string) string {
	return fmt.Sprintf(`Usage:
  %[1]s                            started by a web server: serves the site (FastCGI or CGI)
  %[1]s serve --http ADDR          local preview over HTTP
  %[1]s serve --listen ADDR [--protocol fcgi|scgi|ajp]
                                   an external server (ADDR: host:port or unix:/path;
                                   "serve --help" lists the socket's owner, group, mode and --user)
  %[1]s runfcgi [key=value …]      Django's runfcgi options ("runfcgi help" lists them)
  %[1]s stop pidfile=PATH          stop a runfcgi daemon and wait for it
  %[1]s deploy [TARGET]            print a web server configuration (no TARGET: list them)
  %[1]s install DIR                put this binary, a mysite.toml and .htaccess into DIR
  %[1]s check [DIR] [--url URL]    diagnose a site's setup (--url: also ask the live site)
  %[1]s version
`, name)
}
