package peertest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails t if it still does not
// after d. It is for conditions no event announces (a process started or
// gone, a file written by another process); the pause between polls starts
// at 5ms and doubles up to 100ms, so a quick condition is seen at once and
// a slow one does not keep a core busy.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	pause := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(pause) // polling a condition, bounded by the deadline
		pause = min(2*pause, 100*time.Millisecond)
	}
}
