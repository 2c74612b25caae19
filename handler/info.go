package handler

import (
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// InfoPage is the built-in app served when no [app] is configured. It shows
// how the process was started and the request as an app would see it, and
// never the values of the process environment or of non-standard CGI
// variables (a SetEnv DB_PASSWORD stays private).
type InfoPage struct {
	Process *Process
}

// info is the JSON document; its keys are a contract with users (the README
// lists them), so they are only ever added, never renamed.
type info struct {
	PID            int     `json:"pid"`
	Mode           string  `json:"mode"`
	Protocol       string  `json:"protocol"`
	Method         string  `json:"method"`
	ScriptName     string  `json:"script_name"`
	PathInfo       string  `json:"path_info"`
	RequestURI     string  `json:"request_uri"`
	QueryString    string  `json:"query_string"`
	RemoteAddr     string  `json:"remote_addr"`
	HTTPS          bool    `json:"https"`
	Host           string  `json:"host"`
	RemoteUser     string  `json:"remote_user"`
	ContentType    string  `json:"content_type"`
	BodyBytes      int64   `json:"body_bytes"`
	BodyError      string  `json:"body_error,omitempty"`
	RequestsServed int64   `json:"requests_served"`
	Started        string  `json:"started"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Version        string  `json:"version"`
	// VarNames lists the CGI variables the web server sent, names only.
	VarNames []string `json:"cgi_variable_names"`
}

func (p *InfoPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read the whole body so a person can test their host's upload limit.
	n, err := io.Copy(io.Discard, r.Body)
	req := RequestOf(r)
	in := info{
		PID:         os.Getpid(),
		Method:      r.Method,
		ScriptName:  req.ScriptName,
		PathInfo:    req.PathInfo,
		RequestURI:  r.RequestURI,
		QueryString: r.URL.RawQuery,
		HTTPS:       r.TLS != nil,
		Host:        r.Host,
		ContentType: r.Header.Get("Content-Type"),
		BodyBytes:   n,
	}
	if err != nil {
		in.BodyError = err.Error()
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		in.RemoteAddr = host
	} else {
		in.RemoteAddr = r.RemoteAddr
	}
	if vars := req.Vars(); vars != nil {
		in.RemoteUser = vars["REMOTE_USER"]
		for k := range vars {
			in.VarNames = append(in.VarNames, k)
		}
		slices.Sort(in.VarNames)
	}
	if in.RequestURI == "" {
		in.RequestURI = r.URL.RequestURI()
	}
	if pr := p.Process; pr != nil {
		in.Mode, in.Protocol, in.Version = pr.Mode, pr.Protocol, pr.Version
		in.RequestsServed = pr.Served.Load()
		in.Started = pr.Started.Format(time.RFC3339Nano)
		in.UptimeSeconds = time.Since(pr.Started).Seconds()
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if wantsJSON(r) {
		h.Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(in)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	_ = writeInfoHTML(w, &in)
}

func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(mt) == "application/json" {
			return true
		}
	}
	return r.URL.Query().Get("format") == "json"
}

// writeInfoHTML writes the info page for in. It is written out by hand, not
// with html/template: text/template looks methods up by name through
// reflect, which makes the linker keep every exported method of every type in
// the binary (3 MB more), and every spawned copy maps part of that at start.
// Every value is escaped with html.EscapeString; all of them sit in element
// content.
func writeInfoHTML(w io.Writer, in *info) error {
	var b strings.Builder
	b.WriteString(infoHead)
	b.WriteString("<h2>This process</h2>\n<table>\n")
	infoRow(&b, "mode", in.Mode)
	infoRow(&b, "protocol", in.Protocol)
	infoRow(&b, "pid", strconv.Itoa(in.PID))
	infoRow(&b, "started", in.Started)
	infoRow(&b, "uptime", strconv.FormatFloat(in.UptimeSeconds, 'f', 1, 64)+" s")
	infoRow(&b, "requests served", strconv.FormatInt(in.RequestsServed, 10))
	infoRow(&b, "version", in.Version)
	b.WriteString("</table>\n<h2>This request, as your app would see it</h2>\n<table>\n")
	infoRow(&b, "method", in.Method)
	infoRow(&b, "SCRIPT_NAME (mount prefix)", in.ScriptName)
	infoRow(&b, "PATH_INFO", in.PathInfo)
	infoRow(&b, "REQUEST_URI", in.RequestURI)
	infoRow(&b, "QUERY_STRING", in.QueryString)
	infoRow(&b, "REMOTE_ADDR", in.RemoteAddr)
	infoRow(&b, "REMOTE_USER", in.RemoteUser)
	infoRow(&b, "HTTPS", strconv.FormatBool(in.HTTPS))
	infoRow(&b, "Host", in.Host)
	infoRow(&b, "body bytes read", strconv.FormatInt(in.BodyBytes, 10))
	b.WriteString("</table>\n")
	if len(in.VarNames) > 0 {
		b.WriteString("<h2>CGI variables sent by the web server (names only)</h2>\n<p>")
		for i, n := range in.VarNames {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("<code>" + html.EscapeString(n) + "</code>")
		}
		b.WriteString("</p>")
	}
	b.WriteString("\n<p>JSON: send <code>Accept: application/json</code>.</p>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// infoRow writes one row of a table: a fixed heading and an escaped value.
func infoRow(b *strings.Builder, name, value string) {
	b.WriteString("<tr><th>" + name + "</th><td>" + html.EscapeString(value) + "</td></tr>\n")
}

const infoHead = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fcgishim is running</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}
th{text-align:left;padding-right:1em;font-weight:600;vertical-align:top}td{font-family:ui-monospace,monospace}
code{background:#f2f2f2;padding:0 .2em}</style></head><body>
<h1>fcgishim is running</h1>
<p>This is the built-in info page: no <code>[app]</code> is configured in the
<code>.toml</code> file beside the binary. Add one to serve your application.</p>
`
