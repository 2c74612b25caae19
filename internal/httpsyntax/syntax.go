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
