package fcgi

import "errors"

// Record layer constants from the FastCGI 1.0 specification.
const (
	version1      = 1
	headerLen     = 8
	maxContentLen = 65535
)

type recType uint8

const (
	typeBeginRequest    recType = 1
	typeAbortRequest    recType = 2
	typeEndRequest      recType = 3
	typeParams          recType = 4
	typeStdin           recType = 5
	typeStdout          recType = 6
	typeStderr          recType = 7
	typeData            recType = 8
	typeGetValues       recType = 9
	typeGetValuesResult recType = 10
	typeUnknownType     recType = 11
)

const (
	roleResponder  = 1
	roleAuthorizer = 2
	roleFilter     = 3
)

const flagKeepConn = 1

// Protocol status values of FCGI_END_REQUEST.
const (
	statusRequestComplete = 0
	statusCantMPXConn     = 1
	statusOverloaded      = 2
	statusUnknownRole     = 3
)

// header is a decoded record header.
type header struct {
	Version       uint8
	Type          recType
	ID            uint16
	ContentLength uint16
	PaddingLength uint8
}

func (h *header) decode(b []byte) {
	_ = b[7]
	h.Version = b[0]
	h.Type = recType(b[1])
	h.ID = uint16(b[2])<<8 | uint16(b[3])
	h.ContentLength = uint16(b[4])<<8 | uint16(b[5])
	h.PaddingLength = b[6]
}

// padLen is the padding we write: at most 7 bytes, aligning to 8.
func padLen(n int) int { return -n & 7 }

func appendHeader(b []byte, t recType, id uint16, contentLen, pad int) []byte {
	return append(b, version1, byte(t), byte(id>>8), byte(id),
		byte(contentLen>>8), byte(contentLen), byte(pad), 0)
}

var zeros [8]byte

// appendRecord appends one record carrying content (at most maxContentLen
// bytes) with padding to a multiple of 8.
func appendRecord(b []byte, t recType, id uint16, content []byte) []byte {
	p := padLen(len(content))
	b = appendHeader(b, t, id, len(content), p)
	b = append(b, content...)
	return append(b, zeros[:p]...)
}

func appendEndRequest(b []byte, id uint16, appStatus uint32, protoStatus uint8) []byte {
	b = appendHeader(b, typeEndRequest, id, 8, 0)
	return append(b, byte(appStatus>>24), byte(appStatus>>16), byte(appStatus>>8), byte(appStatus),
		protoStatus, 0, 0, 0)
}

func appendUnknownType(b []byte, t recType) []byte {
	b = appendHeader(b, typeUnknownType, 0, 8, 0)
	return append(b, byte(t), 0, 0, 0, 0, 0, 0, 0)
}

// appendLen appends a name-value pair length in its 1- or 4-byte form.
func appendLen(b []byte, n int) []byte {
	if n <= 127 {
		return append(b, byte(n))
	}
	return append(b, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
}

func appendPair(b []byte, name, value string) []byte {
	b = appendLen(b, len(name))
	b = appendLen(b, len(value))
	b = append(b, name...)
	return append(b, value...)
}

var errMalformedPair = errors.New("fcgi: malformed name-value pair")

func readLen(s string) (int, string, bool) {
	if len(s) == 0 {
		return 0, s, false
	}
	if s[0]&0x80 == 0 {
		return int(s[0]), s[1:], true
	}
	if len(s) < 4 {
		return 0, s, false
	}
	n := int(s[0]&0x7f)<<24 | int(s[1])<<16 | int(s[2])<<8 | int(s[3])
	return n, s[4:], true
}

// nextPair decodes the first name-value pair of s. Any truncation is an
// error: callers reject the whole stream, never the pairs decoded so far.
func nextPair(s string) (name, value, rest string, err error) {
	nl, s, ok := readLen(s)
	if !ok {
		return "", "", "", errMalformedPair
	}
	vl, s, ok := readLen(s)
	if !ok || nl > len(s) || vl > len(s)-nl {
		return "", "", "", errMalformedPair
	}
	return s[:nl], s[nl : nl+vl], s[nl+vl:], nil
}
