package ajp

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// methods maps AJP method codes to names; 0xFF means "see stored_method".
var methods = [...]string{
	1: "OPTIONS", 2: "GET", 3: "HEAD", 4: "POST", 5: "PUT", 6: "DELETE", 7: "TRACE",
	8: "PROPFIND", 9: "PROPPATCH", 10: "MKCOL", 11: "COPY", 12: "MOVE", 13: "LOCK",
	14: "UNLOCK", 15: "ACL", 16: "REPORT", 17: "VERSION-CONTROL", 18: "CHECKIN",
	19: "CHECKOUT", 20: "UNCHECKOUT", 21: "SEARCH", 22: "MKWORKSPACE", 23: "UPDATE",
	24: "LABEL", 25: "MERGE", 26: "BASELINE-CONTROL", 27: "MKACTIVITY",
}

const methodStored = 0xFF

// requestHeaders maps coded request header names (0xA001 + index).
var requestHeaders = [...]string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
	"Connection", "Content-Type", "Content-Length", "Cookie", "Cookie2", "Host",
	"Pragma", "Referer", "User-Agent",
}

// Attribute codes of a forward request.
const (
	attrContext      = 0x01
	attrServletPath  = 0x02
	attrRemoteUser   = 0x03
	attrAuthType     = 0x04
	attrQueryString  = 0x05
	attrRoute        = 0x06
	attrSSLCert      = 0x07
	attrSSLCipher    = 0x08
	attrSSLSession   = 0x09
	attrReqAttribute = 0x0A
	attrSSLKeySize   = 0x0B
	attrSecret       = 0x0C
	attrStoredMethod = 0x0D
	attrEnd          = 0xFF
)

// allowedAttributes are the only req_attribute names accepted; anything else
// (javax.servlet.include.*, the Ghostcat vector) rejects the request.
var allowedAttributes = map[string]string{
	"AJP_REMOTE_PORT":  "REMOTE_PORT",
	"AJP_LOCAL_ADDR":   "SERVER_ADDR",
	"AJP_SSL_PROTOCOL": "SSL_PROTOCOL",
	"JK_LB_ACTIVATION": "JK_LB_ACTIVATION",
}

// forwardRequest is a decoded Forward Request packet.
type forwardRequest struct {
	method                                            string
	protocol, uri, remoteAddr, remoteHost, serverName string
	serverPort                                        int
	isSSL                                             bool
	headers                                           []field // names as sent (coded ones canonical)
	attrs                                             []field // req_attribute pairs
	remoteUser, authType, queryString, route          string
	sslCert, sslCipher, sslSession, sslKeySize        string
	secret, storedMethod                              string
	hasQuery                                          bool
}

type field struct{ name, value string }

// decodeForwardRequest decodes a payload whose first byte is the type.
func decodeForwardRequest(p []byte) (*forwardRequest, error) {
	d := &decoder{b: p}
	if d.byte() != typeForwardRequest {
		return nil, fmt.Errorf("%w: not a forward request", errMalformed)
	}
	fr := &forwardRequest{}
	code := fr.decodeMethod(d)
	fr.decodeRequestLine(d)
	fr.decodeHeaders(d)
	fr.decodeAttributes(d)
	if d.err == nil && len(d.b) > 0 {
		d.fail("bytes after the terminator")
	}
	if d.err != nil {
		return nil, d.err
	}
	if code == methodStored {
		fr.method = fr.storedMethod
	}
	return fr, nil
}

// decodeMethod reads the method code and returns it; methodStored leaves
// the method to the stored_method attribute.
func (fr *forwardRequest) decodeMethod(d *decoder) int {
	code := int(d.byte())
	switch {
	case code > 0 && code < len(methods):
		fr.method = methods[code]
	case code == methodStored:
	default:
		d.fail(fmt.Sprintf("method code %d", code))
	}
	return code
}

// decodeRequestLine reads the fixed fields: protocol, URI, the remote and
// server addresses and the TLS flag.
func (fr *forwardRequest) decodeRequestLine(d *decoder) {
	fr.protocol, _ = d.string()
	fr.uri, _ = d.string()
	fr.remoteAddr, _ = d.string()
	fr.remoteHost, _ = d.string()
	fr.serverName, _ = d.string()
	fr.serverPort = d.int()
	fr.isSSL = d.byte() != 0
}

// decodeHeaders reads the counted headers, coded names as their canonical
// form.
func (fr *forwardRequest) decodeHeaders(d *decoder) {
	n := d.int()
	for i := 0; i < n && d.err == nil; i++ {
		var name string
		if d.peekByte() == 0xA0 {
			c := d.int() - 0xA001
			if c < 0 || c >= len(requestHeaders) {
				d.fail(fmt.Sprintf("header code %#x", c+0xA001))
				break
			}
			name = requestHeaders[c]
		} else {
			var ok bool
			if name, ok = d.string(); !ok {
				d.fail("null header name")
			}
		}
		value, ok := d.string()
		if !ok {
			d.fail("null header value")
		}
		fr.headers = append(fr.headers, field{name, value})
	}
}

// decodeAttributes reads attributes up to the terminator.
func (fr *forwardRequest) decodeAttributes(d *decoder) {
	for d.err == nil {
		a := d.byte()
		if a == attrEnd {
			break
		}
		var v string
		if a != attrSSLKeySize {
			v, _ = d.string()
		}
		fr.setAttribute(d, a, v)
	}
}

// setAttribute stores attribute a with value v; a req_attribute reads its
// value from d and ssl_key_size its number.
func (fr *forwardRequest) setAttribute(d *decoder, a byte, v string) {
	switch a {
	case attrContext, attrServletPath, attrRoute:
		if a == attrRoute {
			fr.route = v
		} // context and servlet_path are Tomcat's; ignored
	case attrRemoteUser:
		fr.remoteUser = v
	case attrAuthType:
		fr.authType = v
	case attrQueryString:
		fr.queryString, fr.hasQuery = v, true
	case attrSSLCert:
		fr.sslCert = v
	case attrSSLCipher:
		fr.sslCipher = v
	case attrSSLSession:
		fr.sslSession = v
	case attrSSLKeySize:
		fr.sslKeySize = strconv.Itoa(d.int())
	case attrReqAttribute:
		value, _ := d.string()
		fr.attrs = append(fr.attrs, field{v, value})
	case attrSecret:
		fr.secret = v
	case attrStoredMethod:
		fr.storedMethod = v
	default:
		d.fail(fmt.Sprintf("attribute code %#x", a))
	}
}

// requestError carries the status to answer a rejected request with.
type requestError struct {
	status int
	err    error
}

func (e *requestError) Error() string { return e.err.Error() }

func reject(status int, format string, args ...any) error {
	return &requestError{status, fmt.Errorf(format, args...)}
}

// dropHeaders never reach the handler: framing the front end consumed, and
// httpoxy. Content-Length and Host are moved to their Request fields.
var dropHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Upgrade": true,
	"Te": true, "Expect": true, "Proxy": true, "Trailer": true, "Proxy-Connection": true,
}

// checkAccess applies the secret and the attribute allow-list (AJP-05/06).
func (fr *forwardRequest) checkAccess(secret string) error {
	if secret != "" && subtle.ConstantTimeCompare([]byte(fr.secret), []byte(secret)) != 1 {
		return reject(http.StatusForbidden, "missing or wrong secret")
	}
	for _, a := range fr.attrs {
		if _, ok := allowedAttributes[a.name]; !ok {
			return reject(http.StatusForbidden, "request attribute %q not allowed", a.name)
		}
	}
	return nil
}

// newRequest builds the http.Request. Its body is attached by the caller.
func (fr *forwardRequest) newRequest(ctx context.Context) (*http.Request, error) {
	if !httpsyntax.ValidToken(fr.method) {
		return nil, reject(http.StatusBadRequest, "method %q", fr.method)
	}
	major, minor, ok := http.ParseHTTPVersion(fr.protocol)
	if !ok {
		return nil, reject(http.StatusBadRequest, "protocol %q", fr.protocol)
	}
	uri := fr.requestURI()
	if httpsyntax.BadText(uri) {
		return nil, reject(http.StatusBadRequest, "control character in the URI")
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, reject(http.StatusBadRequest, "URI: %v", err)
	}
	h := make(http.Header, len(fr.headers))
	r := &http.Request{
		Method: fr.method, URL: u, Proto: fr.protocol, ProtoMajor: major, ProtoMinor: minor,
		Header: h, RequestURI: uri, RemoteAddr: fr.remoteAddr, ContentLength: -1,
	}
	var hosts, lengths int
	for _, f := range fr.headers {
		if strings.Contains(f.name, "_") {
			continue // PARAM-02: X_Remote_User must not pose as X-Remote-User
		}
		if !httpsyntax.ValidToken(f.name) {
			return nil, reject(http.StatusBadRequest, "header name %q", f.name)
		}
		if httpsyntax.BadText(f.value) {
			return nil, reject(http.StatusBadRequest, "control character in header %s", f.name)
		}
		k := http.CanonicalHeaderKey(f.name)
		switch {
		case k == "Content-Length":
			if lengths++; lengths > 1 {
				return nil, reject(http.StatusBadRequest, "two Content-Length headers")
			}
			n, ok := httpsyntax.ParseLength(f.value)
			if !ok {
				return nil, reject(http.StatusBadRequest, "Content-Length %q", f.value)
			}
			r.ContentLength = n
		case k == "Host":
			if hosts++; hosts > 1 {
				return nil, reject(http.StatusBadRequest, "two Host headers")
			}
			r.Host = f.value
		case dropHeaders[k]:
		default:
			h[k] = append(h[k], f.value)
		}
	}
	if u.IsAbs() { // Tomcat's rule: keep the path, the Host must agree
		if !strings.EqualFold(u.Host, r.Host) {
			return nil, reject(http.StatusBadRequest, "URI host %q differs from Host %q", u.Host, r.Host)
		}
		u.Scheme, u.Host, u.User = "", "", nil
	}
	if p, ok := fr.attr("AJP_REMOTE_PORT"); ok && r.RemoteAddr != "" {
		r.RemoteAddr = net.JoinHostPort(r.RemoteAddr, p)
	}
	if fr.isSSL {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	}
	return r.WithContext(context.WithValue(ctx, paramsKey{}, fr)), nil
}

func (fr *forwardRequest) requestURI() string {
	if fr.hasQuery {
		return fr.uri + "?" + fr.queryString
	}
	return fr.uri
}

func (fr *forwardRequest) attr(name string) (string, bool) {
	for _, a := range fr.attrs {
		if a.name == name {
			return a.value, true
		}
	}
	return "", false
}

type paramsKey struct{}

// Params returns a CGI-style view of what the front end sent with r, so that
// callers can treat every protocol alike: REQUEST_METHOD, SERVER_PROTOCOL,
// REQUEST_URI, QUERY_STRING, SCRIPT_NAME (""), PATH_INFO (the URI path),
// REMOTE_ADDR, REMOTE_PORT, REMOTE_HOST, SERVER_NAME, SERVER_PORT,
// SERVER_ADDR, HTTPS, CONTENT_TYPE, CONTENT_LENGTH, the SSL_* facts,
// REMOTE_USER and AUTH_TYPE as asserted by the front end, and HTTP_* for the
// headers the handler sees. The secret is never included. It returns nil if
// r was not built by this package.
func Params(r *http.Request) map[string]string {
	fr, _ := r.Context().Value(paramsKey{}).(*forwardRequest)
	if fr == nil {
		return nil
	}
	p := map[string]string{
		"GATEWAY_INTERFACE": "AJP/1.3",
		"REQUEST_METHOD":    fr.method,
		"SERVER_PROTOCOL":   fr.protocol,
		"REQUEST_URI":       fr.requestURI(),
		"QUERY_STRING":      fr.queryString,
		"SCRIPT_NAME":       "",
		"PATH_INFO":         fr.uri,
		"REMOTE_ADDR":       fr.remoteAddr,
		"SERVER_NAME":       fr.serverName,
		"SERVER_PORT":       strconv.Itoa(fr.serverPort),
		"HTTPS":             "off",
	}
	if fr.isSSL {
		p["HTTPS"] = "on"
	}
	for k, v := range map[string]string{
		"REMOTE_HOST": fr.remoteHost, "REMOTE_USER": fr.remoteUser, "AUTH_TYPE": fr.authType,
		"SSL_CLIENT_CERT": fr.sslCert, "SSL_CIPHER": fr.sslCipher, "SSL_SESSION_ID": fr.sslSession,
		"SSL_CIPHER_USEKEYSIZE": fr.sslKeySize, "JVM_ROUTE": fr.route,
	} {
		if v != "" {
			p[k] = v
		}
	}
	for _, a := range fr.attrs {
		p[allowedAttributes[a.name]] = a.value
	}
	for _, f := range fr.headers {
		if strings.Contains(f.name, "_") {
			continue
		}
		k := http.CanonicalHeaderKey(f.name)
		switch {
		case k == "Content-Length" || k == "Content-Type":
			p[strings.ToUpper(strings.ReplaceAll(k, "-", "_"))] = f.value
		case dropHeaders[k]:
		default:
			name := "HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
			if old, ok := p[name]; ok {
				sep := ", "
				if k == "Cookie" {
					sep = "; "
				}
				f.value = old + sep + f.value
			}
			p[name] = f.value
		}
	}
	return p
}
