package peertest

import (
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records a Fatalf instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r)
}

func eventuallyOn(t *testing.T, d time.Duration, cond func() bool) (failed string) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
		failed = r.failed
	}()
	Eventually(r, d, "the condition", cond)
	return ""
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	n := 0
	if failed := eventuallyOn(t, 10*time.Second, func() bool { n++; return n == 3 }); failed != "" || n != 3 {
		t.Fatalf("failed %q after %d polls, want success on the 3rd", failed, n)
	}
}

func TestEventuallyFailsAfterTheDeadline(t *testing.T) {
	start := time.Now()
	failed := eventuallyOn(t, 50*time.Millisecond, func() bool { return false })
	if !strings.Contains(failed, "timed out") {
		t.Fatalf("a condition that never holds passed (%q)", failed)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before the deadline", time.Since(start))
	}
}
