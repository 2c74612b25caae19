package httpsyntax

import (
	"strconv"
	"strings"
)

// TokenChar reports whether RFC 9110 allows c in a token: letters, digits
// and !#$%&'*+-.^_`|~.
func TokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ValidHost reports whether s can be sent as a Host field value: no
// control byte, space, non-ASCII byte or delimiter that has no place in a
// host[:port].
func ValidHost(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>\\^`{|}/", c) >= 0 {
			return false
		}
	}
	return true
}

// ValidToken reports whether s is a non-empty RFC 9110 token, as a method
// or a field name must be.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !TokenChar(s[i]) {
			return false
		}
	}
	return true
}

// ParseLength parses a Content-Length: only ^[0-9]+$ within int64, so no
// sign, space, list or exponent slips through.
func ParseLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// BadText reports CR, LF or NUL, which would let a value split a header.
func BadText(s string) bool {
	return strings.ContainsAny(s, "\r\n\x00")
}
