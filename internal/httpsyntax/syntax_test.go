package httpsyntax

import (
	"strings"
	"testing"
)

func TestValidToken(t *testing.T) {
	for _, s := range []string{"GET", "X-Foo", "M-SEARCH", "a!#$%&'*+-.^_`|~z", "0"} {
		if !ValidToken(s) {
			t.Errorf("ValidToken(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "GE T", "X(Y", "a:b", "a\"b", "x\x00", "é", "a/b", "{}", "\x7f"} {
		if ValidToken(s) {
			t.Errorf("ValidToken(%q) = true, want false", s)
		}
	}
}

// Every byte is classified as RFC 9110 says: visible ASCII except the
// delimiters.
func TestValidTokenEveryByte(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
		if got := ValidToken(string([]byte{byte(c)})); got != want {
			t.Errorf("ValidToken(%#x) = %t, want %t", c, got, want)
		}
	}
}

func TestParseLength(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "5": 5, "0012": 12, "9223372036854775807": 1<<63 - 1} {
		if n, ok := ParseLength(s); !ok || n != want {
			t.Errorf("ParseLength(%q) = %d, %t; want %d, true", s, n, ok, want)
		}
	}
	for _, s := range []string{"", "-1", "+5", " 5", "5 ", "5,5", "1e3", "0x10", "9223372036854775808"} {
		if n, ok := ParseLength(s); ok {
			t.Errorf("ParseLength(%q) = %d, true; want false", s, n)
		}
	}
}

func TestBadText(t *testing.T) {
	for s, want := range map[string]bool{"": false, "a b\t": false, "a\rb": true, "a\nb": true, "a\x00": true} {
		if got := BadText(s); got != want {
			t.Errorf("BadText(%q) = %t, want %t", s, got, want)
		}
	}
}

func FuzzParseLength(f *testing.F) {
	for _, s := range []string{"0", "12", "-1", "1e3", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseLength(s)
		if ok && (n < 0 || strings.TrimLeft(s, "0123456789") != "") {
			t.Fatalf("ParseLength(%q) = %d, true", s, n)
		}
	})
}
