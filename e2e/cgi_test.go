package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/textproto"
	"os/exec"
	"strings"
	"testing"
)

// Run as a plain CGI program, the binary answers exactly one request on
// stdout and ignores argv (Apache passes a query string without '=' as
// arguments: CGI-01).
func TestCGIModeServesOneRequestIgnoringArgv(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "--listen=0.0.0.0:80", "-h")
	cmd.Env = []string{
		"GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=POST", "SERVER_PROTOCOL=HTTP/1.1",
		"SCRIPT_NAME=/app/mysite.cgi", "PATH_INFO=/x", "REQUEST_URI=/app/x?--listen=0.0.0.0:80+-h",
		"QUERY_STRING=--listen=0.0.0.0:80+-h", "HTTP_HOST=example.test", "REMOTE_ADDR=192.0.2.7",
		"REDIRECT_URL=/app/x", "CONTENT_LENGTH=5", "HTTP_ACCEPT=application/json",
		"HTTP_X_FORWARDED_FOR=6.6.6.6", "HTTP_PROXY=http://evil.test", "SECRET_TOKEN=hunter2",
	}
	cmd.Stdin = strings.NewReader("hello")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("CGI run: %v\n%s", err, stderr.String())
	}
	if bytes.Contains(out, []byte("hunter2")) {
		t.Fatal("a CGI variable's value (a secret) was printed")
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(out)))
	status, err := tp.ReadLine()
	if err != nil || status != "Status: 200 OK" {
		t.Fatalf("first line %q (%v)\n%s", status, err, out)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if ct := http.Header(hdr).Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(tp.R)
	var in infoJSON
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if in.Mode != "cgi" || in.Protocol != "cgi" || in.ScriptName != "/app" || in.PathInfo != "/x" ||
		in.BodyBytes != 5 || in.RemoteAddr != "192.0.2.7" || in.Method != "POST" {
		t.Fatalf("info: %+v", in)
	}
}

// A GET carries no CONTENT_LENGTH; net/http/cgi then leaves Body nil, and
// every handler must still be able to read it.
func TestCGIModeGET(t *testing.T) {
	cmd := exec.Command(binary(t))
	cmd.Env = []string{"GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=GET", "SERVER_PROTOCOL=HTTP/1.1",
		"SCRIPT_NAME=/mysite.cgi", "PATH_INFO=/", "REQUEST_URI=/", "HTTP_HOST=example.test",
		"REMOTE_ADDR=192.0.2.7", "HTTP_ACCEPT=application/json"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !bytes.HasPrefix(out, []byte("Status: 200 OK\r\n")) || !bytes.Contains(out, []byte(`"body_bytes": 0`)) {
		t.Fatalf("GET under CGI: %v\n%s\n%s", err, out, stderr.String())
	}
}
