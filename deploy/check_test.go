package deploy

import (
	"strings"
	"testing"
)

func TestScanHtaccess(t *testing.T) {
	cases := []struct {
		text string
		want htaccessScan
	}{
		{"AddHandler fcgid-script .fcgi\nRewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n",
			htaccessScan{handler: "fcgid-script", handlerLine: 1, ruleLine: 4, engine: true}},
		{"<Files \"mysite.fcgi\">\n    SetHandler fcgid-script\n</Files>\nRewriteEngine On\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n",
			htaccessScan{handler: "fcgid-script", handlerLine: 2, ruleLine: 5, loopLine: 5, engine: true}},
		{"<Files \"other.fcgi\">\n    SetHandler fcgid-script\n</Files>\n# AddHandler fcgid-script .fcgi\n", htaccessScan{}},
	}
	for _, tc := range cases {
		if got := scanHtaccess(tc.text, "mysite.fcgi"); got != tc.want {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.text, got, tc.want)
		}
	}
}

func FuzzScanHtaccess(f *testing.F) {
	f.Add("AddHandler fcgid-script .fcgi\nRewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]\n")
	f.Add("<FilesMatch \"\\.fcgi$\">\nSetHandler fcgid-script\n</FilesMatch>\nRewriteRule ( mysite.fcgi\n")
	f.Fuzz(func(t *testing.T, text string) {
		s := scanHtaccess(text, "mysite.fcgi")
		n := strings.Count(text, "\n") + 1
		if s.handlerLine > n || s.ruleLine > n || s.loopLine != 0 && s.loopLine != s.ruleLine {
			t.Fatalf("%+v for %d lines", s, n)
		}
	})
}
