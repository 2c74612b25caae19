package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// FastCGI record types and roles this client uses (FastCGI 1.0 spec).
const (
	fcgiVersion         = 1
	typeBeginRequest    = 1
	typeEndRequest      = 3
	typeParams          = 4
	typeStdin           = 5
	typeStdout          = 6
	typeStderr          = 7
	roleResponder       = 1
	fcgiMaxContent      = 65535
	fcgiRequestID       = 1
	fcgiHeaderLen       = 8
	fcgiMaxResponseBody = 16 << 20
)

// Response is what a FastCGI application answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Stderr []byte
}

// FastCGIGet sends one GET request for path (with an optional query after
// '?') to a FastCGI server at network/addr and reads the whole response.
// header holds extra request headers. It closes the connection afterwards.
func FastCGIGet(ctx context.Context, network, addr, path string, header http.Header) (*Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("fastcgi: connect %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	if err := writeFCGIRequest(c, fcgiGetParams(path, header)); err != nil {
		return nil, fmt.Errorf("fastcgi: send request: %w", ctxErr(ctx, err))
	}
	return readFCGIResponse(ctx, c)
}

// fcgiGetParams is the CGI environment of a GET for path from 127.0.0.1, with
// header as HTTP_* variables.
func fcgiGetParams(path string, header http.Header) [][2]string {
	p, q, _ := strings.Cut(path, "?")
	params := [][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "fcgishim-check"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", "localhost"},
		{"SERVER_PORT", "80"},
		{"REMOTE_ADDR", "127.0.0.1"},
		{"REQUEST_METHOD", "GET"},
		{"REQUEST_URI", path},
		{"SCRIPT_NAME", ""},
		{"PATH_INFO", p},
		{"QUERY_STRING", q},
		{"CONTENT_LENGTH", "0"},
		{"HTTP_HOST", "localhost"},
	}
	for k, vs := range header {
		params = append(params, [2]string{"HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_")), strings.Join(vs, ", ")})
	}
	return params
}

// writeFCGIRequest sends a responder request with params and an empty body,
// asking the server to close the connection after it.
func writeFCGIRequest(c net.Conn, params [][2]string) error {
	w := bufio.NewWriter(c)
	var begin [8]byte
	binary.BigEndian.PutUint16(begin[0:], roleResponder) // flags 0: close after
	writeRecord(w, typeBeginRequest, begin[:])
	var pb bytes.Buffer
	for _, kv := range params {
		writeLen(&pb, len(kv[0]))
		writeLen(&pb, len(kv[1]))
		pb.WriteString(kv[0])
		pb.WriteString(kv[1])
	}
	for b := pb.Bytes(); len(b) > 0; {
		n := min(len(b), fcgiMaxContent)
		writeRecord(w, typeParams, b[:n])
		b = b[n:]
	}
	writeRecord(w, typeParams, nil)
	writeRecord(w, typeStdin, nil)
	return w.Flush()
}

// readFCGIResponse reads records up to FCGI_END_REQUEST, collecting stdout
// (up to 16 MiB) and the first 64 KiB of stderr, and parses the response.
func readFCGIResponse(ctx context.Context, c net.Conn) (*Response, error) {
	var stdout, stderr bytes.Buffer
	r := bufio.NewReader(c)
	var h [fcgiHeaderLen]byte
	content := make([]byte, fcgiMaxContent+255)
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, fmt.Errorf("fastcgi: read response: %w", ctxErr(ctx, err))
		}
		if h[0] != fcgiVersion {
			return nil, fmt.Errorf("fastcgi: bad record version %d", h[0])
		}
		n := int(binary.BigEndian.Uint16(h[4:])) + int(h[6])
		if _, err := io.ReadFull(r, content[:n]); err != nil {
			return nil, fmt.Errorf("fastcgi: read record: %w", ctxErr(ctx, err))
		}
		body := content[:binary.BigEndian.Uint16(h[4:])]
		if binary.BigEndian.Uint16(h[2:]) != fcgiRequestID {
			continue
		}
		switch h[1] {
		case typeStdout:
			if stdout.Len()+len(body) > fcgiMaxResponseBody {
				return nil, errors.New("fastcgi: response larger than 16 MiB")
			}
			stdout.Write(body)
		case typeStderr:
			if stderr.Len() < 64<<10 {
				stderr.Write(body)
			}
		case typeEndRequest:
			resp, err := parseCGIResponse(stdout.Bytes())
			if err != nil {
				return nil, err
			}
			resp.Stderr = stderr.Bytes()
			return resp, nil
		}
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func writeRecord(w *bufio.Writer, typ byte, content []byte) {
	pad := (8 - len(content)%8) % 8
	h := [fcgiHeaderLen]byte{fcgiVersion, typ, 0, fcgiRequestID, 0, 0, byte(pad), 0}
	binary.BigEndian.PutUint16(h[4:], uint16(len(content)))
	w.Write(h[:])
	w.Write(content)
	var zero [8]byte
	w.Write(zero[:pad])
}

func writeLen(b *bytes.Buffer, n int) {
	if n < 128 {
		b.WriteByte(byte(n))
		return
	}
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], uint32(n)|1<<31)
	b.Write(x[:])
}

// parseCGIResponse splits a CGI response into status, header and body.
func parseCGIResponse(b []byte) (*Response, error) {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	mh, err := tr.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("fastcgi: bad response header: %w", err)
	}
	resp := &Response{Status: http.StatusOK, Header: http.Header(mh)}
	if s := resp.Header.Get("Status"); s != "" {
		code, _, _ := strings.Cut(s, " ")
		n, err := strconv.Atoi(code)
		if err != nil {
			return nil, fmt.Errorf("fastcgi: bad Status %q", s)
		}
		resp.Status = n
		resp.Header.Del("Status")
	}
	rest, _ := io.ReadAll(tr.R)
	resp.Body = rest
	return resp, nil
}
