package scgi

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

// appendHeader encodes a header, names in the given order; the inverse of
// readHeader.
func appendHeader(dst []byte, kv ...string) []byte {
	var block []byte
	for _, s := range kv {
		block = append(block, s...)
		block = append(block, 0)
	}
	dst = fmt.Appendf(dst, "%d:", len(block))
	dst = append(dst, block...)
	return append(dst, ',')
}

var minimal = "CONTENT_LENGTH\x000\x00SCGI\x001\x00"

// headerTests are raw header bytes and what readHeader must make of them.
// bad: "" = accepted, "close" = framing error, "400" = errBadParams.
var headerTests = []struct {
	id, in string
	want   map[string]string
	bad    string
}{
	{"ok", "24:" + minimal + ",", map[string]string{"CONTENT_LENGTH": "0", "SCGI": "1"}, ""},
	{"ok-spec-example", "70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,",
		map[string]string{"CONTENT_LENGTH": "27", "SCGI": "1", "REQUEST_METHOD": "POST", "REQUEST_URI": "/deepthought"}, ""},
	{"ok-empty-value", "31:CONTENT_LENGTH\x000\x00SCGI\x001\x00EMPTY\x00\x00,",
		map[string]string{"CONTENT_LENGTH": "0", "SCGI": "1", "EMPTY": ""}, ""},
	{"SCGI-01 non-digit", "2x:" + minimal + ",", nil, "close"},
	{"SCGI-01 leading zero", "024:" + minimal + ",", nil, "close"},
	{"SCGI-01 endless digits", "12345678" + strings.Repeat("9", 100), nil, "close"},
	{"SCGI-01 over cap", "99999:" + minimal, nil, "close"},
	{"SCGI-01 sign", "+24:" + minimal + ",", nil, "close"},
	{"SCGI-01 empty length", ":" + minimal + ",", nil, "close"},
	{"SCGI-02 missing colon", "24" + minimal + ",", nil, "close"},
	{"SCGI-02 missing comma", "24:" + minimal + ";", nil, "close"},
	{"SCGI-02 eof in block", "24:CONTENT_LENGTH\x000", nil, "close"},
	{"SCGI-02 eof before comma", "24:" + minimal, nil, "close"},
	{"SCGI-02 eof in length", "24", nil, "close"},
	{"SCGI-03 odd strings", "26:" + minimal + "X\x00,", nil, "400"},
	{"SCGI-03 no final NUL", "23:" + minimal[:23] + ",", nil, "400"},
	{"SCGI-03 empty name", "27:" + minimal + "\x00v\x00,", nil, "400"},
	{"SCGI-03 empty block", "0:,", nil, "400"},
	{"SCGI-04 CONTENT_LENGTH not first", "24:SCGI\x001\x00CONTENT_LENGTH\x000\x00,", nil, "400"},
	{"SCGI-04 CONTENT_LENGTH missing", "7:SCGI\x001\x00,", nil, "400"},
	{"SCGI-04 SCGI missing", "17:CONTENT_LENGTH\x000\x00,", nil, "400"},
	{"SCGI-04 SCGI=2", "24:CONTENT_LENGTH\x000\x00SCGI\x002\x00,", nil, "400"},
	{"SCGI-04 duplicate", "31:" + minimal + "SCGI\x001\x00,", nil, "400"},
}

func TestHeader_SCGI01to04(t *testing.T) {
	for _, tt := range headerTests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := readHeader(bufio.NewReader(strings.NewReader(tt.in)), 4096)
			switch {
			case tt.bad == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.bad == "" && !maps.Equal(got, tt.want):
				t.Fatalf("got %q, want %q", got, tt.want)
			case tt.bad == "close" && (err == nil || errors.Is(err, errBadParams)):
				t.Fatalf("got %q, %v; want a framing error", got, err)
			case tt.bad == "400" && !errors.Is(err, errBadParams):
				t.Fatalf("got %q, %v; want errBadParams", got, err)
			}
			if tt.bad == "" {
				// The other way: encoding the result reads back the same.
				names := []string{"CONTENT_LENGTH", got["CONTENT_LENGTH"]}
				for k, v := range got {
					if k != "CONTENT_LENGTH" {
						names = append(names, k, v)
					}
				}
				enc := appendHeader(nil, names...)
				again, err := readHeader(bufio.NewReader(strings.NewReader(string(enc))), 4096)
				if err != nil || !maps.Equal(again, got) {
					t.Fatalf("re-encoded %q read as %q, %v", enc, again, err)
				}
			}
		})
	}
}

// The length cap applies before any block byte is read or allocated.
func TestHeaderCapBeforeRead_SCGI01(t *testing.T) {
	in := "1000:" + strings.Repeat("x", 1000) + ","
	if _, err := readHeader(bufio.NewReader(strings.NewReader(in)), 999); err == nil {
		t.Fatal("header over the cap accepted")
	}
	if _, err := readHeader(bufio.NewReader(strings.NewReader("24:"+minimal+",")), 24); err != nil {
		t.Fatalf("header exactly at the cap: %v", err)
	}
}

func FuzzNetstring(f *testing.F) {
	for _, tt := range headerTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(strings.NewReader(string(in)))
		got, err := readHeader(br, 512)
		if err != nil {
			return
		}
		if got["SCGI"] != "1" || got["CONTENT_LENGTH"] == "" && len(in) < 4 {
			t.Fatalf("accepted %q as %q", in, got)
		}
		names := []string{"CONTENT_LENGTH", got["CONTENT_LENGTH"]}
		for k, v := range got {
			if k != "CONTENT_LENGTH" {
				names = append(names, k, v)
			}
		}
		enc := appendHeader(nil, names...)
		again, err := readHeader(bufio.NewReader(strings.NewReader(string(enc))), 512)
		if err != nil || !maps.Equal(again, got) {
			t.Fatalf("%q: re-encoded %q read as %q, %v", in, enc, again, err)
		}
	})
}
