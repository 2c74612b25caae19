package prefork

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// fcgiRecord builds one record: version 1, type, id, content, padding.
func fcgiRecord(typ byte, id uint16, content []byte, pad int) []byte {
	b := []byte{1, typ, byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), byte(pad), 0}
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// headers returns what walk reports for b cut into pieces at cuts.
func headers(b []byte, cuts ...int) []string {
	var f recordFollower
	var got []string
	on := func(typ byte, id uint16, clen int) { got = append(got, fmt.Sprintf("%d/%d/%d", typ, id, clen)) }
	prev := 0
	for _, c := range cuts {
		f.walk(b[prev:c], on)
		prev = c
	}
	f.walk(b[prev:], on)
	return got
}

// A request as nginx sends it, and an answer, cut at every byte boundary:
// the follower sees the same headers, and content that looks like a header
// (PARAMS bytes equal to an END_REQUEST header) is skipped.
func TestRecordFollowerAcrossCuts(t *testing.T) {
	fake := fcgiRecord(fcgiEndRequest, 1, nil, 0)
	var stream []byte
	stream = append(stream, fcgiRecord(1, 1, []byte{0, 1, 1, 0, 0, 0, 0, 0}, 0)...)
	stream = append(stream, fcgiRecord(fcgiParams, 1, fake, 3)...)
	stream = append(stream, fcgiRecord(fcgiParams, 1, nil, 0)...)
	stream = append(stream, fcgiRecord(5, 1, make([]byte, 300), 4)...)
	stream = append(stream, fcgiRecord(fcgiEndRequest, 1, make([]byte, 8), 0)...)
	want := []string{"1/1/8", "4/1/8", "4/1/0", "5/1/300", "3/1/8"}
	if got := headers(stream); !slices.Equal(got, want) {
		t.Fatalf("whole: %v, want %v", got, want)
	}
	for i := 0; i <= len(stream); i++ {
		for _, j := range []int{i, min(i+1, len(stream)), min(i+7, len(stream))} {
			if got := headers(stream, i, j); !slices.Equal(got, want) {
				t.Fatalf("cut at %d and %d: %v, want %v", i, j, got, want)
			}
		}
	}
}

// A connection is in flight from the end of a request's PARAMS to its
// END_REQUEST; one refused before its PARAMS ended never was.
func TestFlightFollowsRequests(t *testing.T) {
	start := time.Now()
	f := newFlight(start)
	if _, idle := f.idleSince(); !idle {
		t.Fatal("new connection: in flight")
	}
	f.read(fcgiRecord(1, 1, make([]byte, 8), 0))
	f.read(fcgiRecord(fcgiParams, 1, []byte("ab"), 6))
	if _, idle := f.idleSince(); !idle {
		t.Fatal("PARAMS not ended: in flight")
	}
	f.read(fcgiRecord(fcgiParams, 1, nil, 0))
	if _, idle := f.idleSince(); idle {
		t.Fatal("PARAMS ended: idle")
	}
	f.wrote(fcgiRecord(6, 1, []byte("Status: 200\r\n\r\n"), 1))
	if _, idle := f.idleSince(); idle {
		t.Fatal("STDOUT written: idle before END_REQUEST")
	}
	f.wrote(fcgiRecord(fcgiEndRequest, 1, make([]byte, 8), 0))
	since, idle := f.idleSince()
	if !idle || since.Before(start) {
		t.Fatalf("after END_REQUEST: idle %v since %v", idle, since)
	}
	// Refused (FCGI_OVERLOADED) before its PARAMS ended: still idle.
	f.wrote(fcgiRecord(fcgiEndRequest, 2, make([]byte, 8), 0))
	if _, idle := f.idleSince(); !idle {
		t.Fatal("END_REQUEST of a request never in flight: in flight")
	}
}

// Any bytes, cut anywhere: the follower reports what it reports for the
// whole, and never panics.
func FuzzRecordFollower(f *testing.F) {
	f.Add(fcgiRecord(fcgiParams, 1, []byte("abc"), 5), uint16(3), uint16(9))
	f.Add(append(fcgiRecord(fcgiEndRequest, 1, make([]byte, 8), 0), 1, 4), uint16(0), uint16(1))
	f.Add([]byte{1, 4, 0, 1, 255, 255, 255, 0}, uint16(8), uint16(8))
	f.Fuzz(func(t *testing.T, b []byte, i, j uint16) {
		ci, cj := min(int(i), len(b)), min(int(j), len(b))
		if ci > cj {
			ci, cj = cj, ci
		}
		if got, want := headers(b, ci, cj), headers(b); !slices.Equal(got, want) {
			t.Fatalf("cut at %d and %d: %v, whole: %v", ci, cj, got, want)
		}
	})
}
