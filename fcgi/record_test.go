package fcgi

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

var recordRows = []struct {
	name    string
	t       recType
	id      uint16
	content []byte
	wire    []byte
}{
	{"empty stdout", typeStdout, 1, nil, []byte{1, 6, 0, 1, 0, 0, 0, 0}},
	{"one byte pads 7", typeStdout, 1, []byte("x"), []byte{1, 6, 0, 1, 0, 1, 7, 0, 'x', 0, 0, 0, 0, 0, 0, 0}},
	{"eight bytes no pad", typeStdin, 0x0102, []byte("12345678"), []byte{1, 5, 1, 2, 0, 8, 0, 0, '1', '2', '3', '4', '5', '6', '7', '8'}},
	{"get values result", typeGetValuesResult, 0, []byte{1, 1, 'a', 'b'}, []byte{1, 10, 0, 0, 0, 4, 4, 0, 1, 1, 'a', 'b', 0, 0, 0, 0}},
}

func TestRecordBytes(t *testing.T) {
	for _, row := range recordRows {
		t.Run(row.name, func(t *testing.T) {
			got := appendRecord(nil, row.t, row.id, row.content)
			if !bytes.Equal(got, row.wire) {
				t.Fatalf("encode: got %v want %v", got, row.wire)
			}
			var h header
			h.decode(row.wire)
			if h.Version != 1 || h.Type != row.t || h.ID != row.id || int(h.ContentLength) != len(row.content) ||
				int(h.PaddingLength) != padLen(len(row.content)) {
				t.Fatalf("decode: %+v", h)
			}
		})
	}
	end := appendEndRequest(nil, 7, 0x01020304, statusUnknownRole)
	if want := []byte{1, 3, 0, 7, 0, 8, 0, 0, 1, 2, 3, 4, 3, 0, 0, 0}; !bytes.Equal(end, want) {
		t.Fatalf("end request: %v", end)
	}
	ut := appendUnknownType(nil, 200)
	if want := []byte{1, 11, 0, 0, 0, 8, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(ut, want) {
		t.Fatalf("unknown type: %v", ut)
	}
}

// pairRows are name-value streams, both ways; err rows must be rejected.
var pairRows = []struct {
	name  string
	wire  string
	pairs []string
	err   bool
}{
	{"empty", "", nil, false},
	{"short", "\x01\x02Aab", []string{"A", "ab"}, false},
	{"empty value", "\x04\x00NAME", []string{"NAME", ""}, false},
	{"127 is 1-byte", "\x01\x7fX" + strings.Repeat("v", 127), []string{"X", strings.Repeat("v", 127)}, false},
	{"128 is 4-byte", "\x01\x80\x00\x00\x80X" + strings.Repeat("v", 128), []string{"X", strings.Repeat("v", 128)}, false},
	{"4-byte name", "\x80\x00\x00\x81\x00" + strings.Repeat("n", 129), []string{strings.Repeat("n", 129), ""}, false},
	{"two pairs", "\x01\x01ab\x01\x01cd", []string{"a", "b", "c", "d"}, false},
	{"value past end", "\x01\x05ab", nil, true},
	{"name past end", "\x05\x01ab", nil, true},
	{"4-byte length past end", "\x01\xff\xff\xff\xffab", nil, true},
	{"truncated 4-byte length", "\x01\x80\x00", nil, true},
	{"missing value length", "\x01", nil, true},
	{"good then truncated", "\x01\x01ab\x01\x05cd", nil, true},
	{"31-bit length huge", "\x01\xbf\xff\xff\xffa", nil, true},
}

func decodeAll(s string) ([]string, error) {
	var out []string
	for len(s) > 0 {
		n, v, rest, err := nextPair(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n, v)
		s = rest
	}
	return out, nil
}

func TestPairs_FCGI08(t *testing.T) {
	for _, row := range pairRows {
		t.Run(row.name, func(t *testing.T) {
			got, err := decodeAll(row.wire)
			if row.err {
				if err == nil {
					t.Fatalf("decoded %q, want error", got)
				}
				return
			}
			if err != nil || strings.Join(got, "|") != strings.Join(row.pairs, "|") {
				t.Fatalf("got %q, %v", got, err)
			}
			if enc := string(pairs(row.pairs...)); enc != row.wire {
				t.Fatalf("encode: got %q want %q", enc, row.wire)
			}
		})
	}
}

// Fuzz targets, seeded from the tables above.

func FuzzParams(f *testing.F) {
	for _, row := range pairRows {
		f.Add([]byte(row.wire))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAll(string(b))
		if err != nil {
			return
		}
		if enc := pairs(got...); len(enc) > len(b) {
			t.Fatalf("re-encoding grew: %d > %d", len(enc), len(b))
		}
		total := 0
		for _, s := range got {
			total += len(s)
		}
		if total > len(b) {
			t.Fatalf("decoded %d bytes from %d", total, len(b))
		}
	})
}

func FuzzRecordReader(f *testing.F) { fuzzRecords(f) }

// fuzzRecords feeds one connection arbitrary input; under a fuzz target
// named FuzzServeFD* it is served inline, as ServeFD does.
func fuzzRecords(f *testing.F) {
	for _, row := range recordRows {
		f.Add(row.wire)
	}
	get := pairs("GET", "", "FCGI_MAX_CONNS", "", "FCGI_MPXS_CONNS", "")
	f.Add(append(requestBytes(1, true, reqParams("GET", "/"), []byte{}), rec(typeGetValues, 0, get, 0)...))
	f.Add(requestBytes(1, false, reqParams("POST", "/p", "CONTENT_LENGTH", "3"), []byte("abcdef")))
	f.Add(append(requestBytes(1, true, reqParams("POST", "/p", "CONTENT_LENGTH", "9"), nil),
		append(rec(typeAbortRequest, 1, nil, 3), requestBytes(1, true, reqParams("GET", "/x"), []byte{})...)...))
	f.Add(append(rec(typeBeginRequest, 2, beginBody(roleAuthorizer, 1), 0), rec(typeParams, 2, []byte("\x01\x05ab"), 0)...))
	f.Add(rec(12, 0, []byte("zz"), 255))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b := make([]byte, 512)
				for {
					if _, err := r.Body.Read(b); err != nil {
						break
					}
				}
				w.Write([]byte("ok"))
			}),
			Authorizer:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) }),
			MaxParamsBytes: 4 << 10,
			MaxReqsPerConn: 8,
			MaxBodyBytes:   64 << 10,
		}
		out := runConn(t, s, in)
		checkOutput(t, in, out)
	})
}
