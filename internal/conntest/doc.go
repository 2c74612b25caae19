// Package conntest gives protocol tests an in-memory net.Conn, so a
// server's connection code can run on fixed input bytes in the test's own
// goroutine and its output be compared byte for byte.
package conntest
