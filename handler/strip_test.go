package handler

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/config"
)

// With [app] strip_prefix the app gets the path below the mount; without,
// the full path (as today).
func TestAppURLStripsMountPrefix(t *testing.T) {
	cases := []struct {
		strip         bool
		path, script  string // request path; mount prefix
		want, wantRaw string // request-target path sent to the app
	}{
		{false, "/mysite/a/b", "/mysite", "/mysite/a/b", ""},
		{true, "/mysite/a/b", "/mysite", "/a/b", ""},
		{true, "/mysite/", "/mysite", "/", ""},
		{true, "/mysite", "/mysite", "/", ""},
		{true, "/other", "", "/other", ""},
		{true, "/mysite/a%2Fb", "/mysite", "/a/b", "/a%2Fb"},
		{true, "/my%73ite/x%20y", "/mysite", "/x y", "/x%20y"},
	}
	for _, tc := range cases {
		in := httptest.NewRequest("GET", tc.path, nil)
		script, info := scriptName(&Request{}, in.URL.Path, &tc.script)
		a := &app{cfg: config.App{StripPrefix: tc.strip}}
		u := a.appURL(in, &Request{ScriptName: script, PathInfo: info})
		if u.Path != tc.want || u.RawPath != tc.wantRaw {
			t.Errorf("strip=%v %s under %q: path %q raw %q, want %q raw %q", tc.strip, tc.path, tc.script, u.Path, u.RawPath, tc.want, tc.wantRaw)
		}
	}
}

// A stripped app that redirects to "/foo" means the site's /foo: the
// prefix goes back on; links already under it, elsewhere, or relative stay.
func TestPrefixLocation(t *testing.T) {
	cases := []struct{ in, want string }{
		{"/sub/", "/mysite/sub/"},
		{"/", "/mysite/"},
		{"/?q=1", "/mysite/?q=1"},
		{"/mysite/sub/", "/mysite/sub/"},
		{"/mysite", "/mysite"},
		{"/mysitex/", "/mysite/mysitex/"},
		{"sub/", "sub/"},
		{"../up", "../up"},
		{"//evil.example/x", "//evil.example/x"},
		{"http://example.test/sub/", "http://example.test/mysite/sub/"},
		{"https://EXAMPLE.test", "https://EXAMPLE.test/mysite/"},
		{"http://example.test/mysite/x", "http://example.test/mysite/x"},
		{"http://other.test/sub/", "http://other.test/sub/"},
		{"http://u@example.test/sub/", "http://u@example.test/sub/"},
		{"mailto:a@example.test", "mailto:a@example.test"},
	}
	for _, tc := range cases {
		if got := prefixLocation(tc.in, "/mysite", "example.test"); got != tc.want {
			t.Errorf("prefixLocation(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := prefixLocation("/sub/", "", "example.test"); got != "/sub/" {
		t.Errorf("at the site root: %q", got)
	}
}

// A stripped app's cookie for Path=/ or Path=/a is the site's: the prefix
// goes in front, other attributes stay as they are.
func TestPrefixCookiePath(t *testing.T) {
	cases := []struct{ in, want string }{
		{"a=1; Path=/", "a=1; Path=/mysite/"},
		{"a=1; path=/cart; HttpOnly", "a=1; path=/mysite/cart; HttpOnly"},
		{"a=1; Path=/mysite/x", "a=1; Path=/mysite/x"},
		{"a=1; Path=/mysite", "a=1; Path=/mysite"},
		{"a=1", "a=1"},
		{"a=1; Domain=example.test; Path=relative", "a=1; Domain=example.test; Path=relative"},
		{"path=/x", "path=/x"}, // the cookie's own name and value
	}
	for _, tc := range cases {
		if got := prefixCookiePath(tc.in, "/mysite"); got != tc.want {
			t.Errorf("prefixCookiePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// gunicorn --proxy-protocol takes REMOTE_ADDR from the PROXY v1 line; a
// client that is not an IP gets none.
func TestProxyProtocolLine(t *testing.T) {
	cases := []struct{ remote, want string }{
		{"192.0.2.7:5123", "PROXY TCP4 192.0.2.7 127.0.0.1 5123 0\r\n"},
		{"[2001:db8::1]:443", "PROXY TCP6 2001:db8::1 ::1 443 0\r\n"},
		{"[::ffff:192.0.2.8]:80", "PROXY TCP4 192.0.2.8 127.0.0.1 80 0\r\n"},
		{"[fe80::1%eth0]:9", "PROXY TCP6 fe80::1 ::1 9 0\r\n"},
		{"192.0.2.9", "PROXY TCP4 192.0.2.9 127.0.0.1 0 0\r\n"},
		{"192.0.2.9:99999", "PROXY TCP4 192.0.2.9 127.0.0.1 0 0\r\n"},
		{"@", ""},
		{"", ""},
		{"1.2.3.4 PROXY:1", ""},
	}
	for _, tc := range cases {
		if got := proxyProtocolLine(tc.remote); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.remote, got, tc.want)
		}
	}
}

func FuzzPrefixLocation(f *testing.F) {
	for _, s := range []string{"/a", "http://example.test/x", "//x", "https://example.test", "/mysite/?", "%zz", "http://[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := prefixLocation(v, "/mysite", "example.test")
		if got != v && !strings.Contains(got, "/mysite") {
			t.Fatalf("%q became %q without the prefix", v, got)
		}
		if got != v && len(got) != len(v)+len("/mysite") && len(got) != len(v)+len("/mysite/") {
			t.Fatalf("%q became %q: more than the prefix was added", v, got)
		}
	})
}
