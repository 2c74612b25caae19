package handler

import (
	"strings"
	"testing"
)

// The info page is written without html/template: every value the client
// or the web server controls comes out escaped, in its row.
func TestInfoHTMLEscapesEveryValue(t *testing.T) {
	in := info{
		PID: 42, Mode: "fastcgi-stdin", Protocol: "fastcgi", Method: "GET",
		ScriptName: "/a<b>", PathInfo: `/x"y`, RequestURI: "/a<b>/x?q=<script>alert(1)</script>",
		QueryString: "q=<script>alert(1)</script>&r='1'", RemoteAddr: "192.0.2.1",
		RemoteUser: "<u>", Host: `ex"ample`, BodyBytes: 7, RequestsServed: 3,
		UptimeSeconds: 1.25, Version: "v<1>", VarNames: []string{"HTTP_X_<I>", "REQUEST_METHOD"},
	}
	var b strings.Builder
	if err := writeInfoHTML(&b, &in); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script>", "<u>", "<b>", "<I>", "<1>", `x"y`, `ex"ample`, "'1'"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q unescaped", bad)
		}
	}
	for _, want := range []string{
		"<tr><th>pid</th><td>42</td></tr>",
		"<tr><th>uptime</th><td>1.2 s</td></tr>",
		"<tr><th>requests served</th><td>3</td></tr>",
		"<tr><th>SCRIPT_NAME (mount prefix)</th><td>/a&lt;b&gt;</td></tr>",
		"<tr><th>PATH_INFO</th><td>/x&#34;y</td></tr>",
		"<tr><th>QUERY_STRING</th><td>q=&lt;script&gt;alert(1)&lt;/script&gt;&amp;r=&#39;1&#39;</td></tr>",
		"<tr><th>REMOTE_USER</th><td>&lt;u&gt;</td></tr>",
		"<tr><th>HTTPS</th><td>false</td></tr>",
		"<tr><th>body bytes read</th><td>7</td></tr>",
		"<p><code>HTTP_X_&lt;I&gt;</code>, <code>REQUEST_METHOD</code></p>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if !strings.HasPrefix(page, "<!doctype html>") || !strings.HasSuffix(page, "</body></html>\n") {
		t.Errorf("not a whole page:\n%s", page)
	}
}
