package scgi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

type paramsKey struct{}

// Params returns a copy of the CGI variables r arrived with, minus the ones
// dropped for safety (HTTP_PROXY and the framing headers), or nil if r was
// not built by this package. Front-end-asserted facts such as REMOTE_USER
// live only here, never in r.Header.
func Params(r *http.Request) map[string]string {
	p, _ := r.Context().Value(paramsKey{}).(map[string]string)
	if p == nil {
		return nil
	}
	return maps.Clone(p)
}

// droppedParams never become headers: httpoxy, and framing that the front
// end already consumed.
var droppedParams = [...]string{
	"HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_CONNECTION",
	"HTTP_UPGRADE", "HTTP_TE", "HTTP_EXPECT", "HTTP_KEEP_ALIVE",
}

// newRequest builds the request from SCGI variables with its body read from
// body. On error it returns the status to answer with.
func newRequest(ctx context.Context, params map[string]string, body io.Reader, maxBody int64) (*http.Request, int, error) {
	for _, k := range droppedParams {
		delete(params, k)
	}
	n, status, err := contentLength(params, maxBody)
	if err != nil {
		return nil, status, err
	}
	method := params["REQUEST_METHOD"]
	if !httpsyntax.ValidToken(method) {
		return nil, http.StatusBadRequest, fmt.Errorf("REQUEST_METHOD %q", method)
	}
	proto, major, minor, err := protocol(params)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	uri, host, u, err := target(params)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	h, err := header(params)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}

	r := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         proto,
		ProtoMajor:    major,
		ProtoMinor:    minor,
		Header:        h,
		ContentLength: n,
		Host:          host,
		RequestURI:    uri,
		RemoteAddr:    params["REMOTE_ADDR"],
		Body:          http.NoBody,
	}
	if p := params["REMOTE_PORT"]; p != "" && r.RemoteAddr != "" {
		r.RemoteAddr = net.JoinHostPort(r.RemoteAddr, p)
	}
	if https := strings.ToLower(params["HTTPS"]); https == "on" || https == "1" {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	}
	if n > 0 {
		r.Body = &bodyReader{r: io.LimitReader(body, n), left: n}
	}
	return r.WithContext(context.WithValue(ctx, paramsKey{}, params)), 0, nil
}

// contentLength parses CONTENT_LENGTH (SCGI requires it) and holds it to
// maxBody; on error it returns the status to answer with.
func contentLength(params map[string]string, maxBody int64) (int64, int, error) {
	n, ok := httpsyntax.ParseLength(params["CONTENT_LENGTH"])
	if !ok {
		return 0, http.StatusBadRequest, fmt.Errorf("CONTENT_LENGTH %q", params["CONTENT_LENGTH"])
	}
	if maxBody > 0 && n > maxBody {
		return 0, http.StatusRequestEntityTooLarge, fmt.Errorf("CONTENT_LENGTH %d over %d", n, maxBody)
	}
	return n, 0, nil
}

// protocol parses SERVER_PROTOCOL; an absent one is HTTP/1.0.
func protocol(params map[string]string) (proto string, major, minor int, err error) {
	proto = params["SERVER_PROTOCOL"]
	if proto == "" {
		proto = "HTTP/1.0"
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return "", 0, 0, fmt.Errorf("SERVER_PROTOCOL %q", proto)
	}
	return proto, major, minor, nil
}

// target returns the request URI (REQUEST_URI, or one rebuilt from
// SCRIPT_NAME, PATH_INFO and QUERY_STRING), the host and the parsed URL.
func target(params map[string]string) (uri, host string, u *url.URL, err error) {
	uri, ok := params["REQUEST_URI"]
	if !ok {
		uri = params["SCRIPT_NAME"] + params["PATH_INFO"]
		if q := params["QUERY_STRING"]; q != "" {
			uri += "?" + q
		}
	}
	host = params["HTTP_HOST"]
	if httpsyntax.BadText(uri) || httpsyntax.BadText(host) {
		return "", "", nil, errors.New("control character in REQUEST_URI or HTTP_HOST")
	}
	if u, err = requestURL(uri, host); err != nil {
		return "", "", nil, err
	}
	return uri, host, u, nil
}

// header builds the request headers from the HTTP_* variables and
// CONTENT_TYPE, rejecting bad names and control characters in values.
func header(params map[string]string) (http.Header, error) {
	h := make(http.Header)
	for k, v := range params {
		name, ok := strings.CutPrefix(k, "HTTP_")
		if !ok {
			if k != "CONTENT_TYPE" {
				continue
			}
			name = k
		}
		if k == "HTTP_HOST" || k == "HTTP_CONTENT_TYPE" && params["CONTENT_TYPE"] != "" {
			continue
		}
		name = strings.ReplaceAll(name, "_", "-")
		if !httpsyntax.ValidToken(name) {
			return nil, fmt.Errorf("header name %q", k)
		}
		if httpsyntax.BadText(v) {
			return nil, fmt.Errorf("control character in %s", k)
		}
		h[http.CanonicalHeaderKey(name)] = []string{v}
	}
	return h, nil
}

// requestURL parses a request target: origin form, "*", or absolute form
// whose host must agree with HTTP_HOST (it is then reduced to origin form).
func requestURL(uri, host string) (*url.URL, error) {
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, fmt.Errorf("REQUEST_URI: %w", err)
	}
	if u.IsAbs() {
		if !strings.EqualFold(u.Host, host) {
			return nil, fmt.Errorf("REQUEST_URI host %q differs from HTTP_HOST %q", u.Host, host)
		}
		u.Scheme, u.Host, u.User = "", "", nil
	}
	return u, nil
}

// bodyReader turns a body cut short by the peer into io.ErrUnexpectedEOF.
type bodyReader struct {
	r    io.Reader
	left int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }
