// Package reload decides when the program should restart or stop: a change
// to watched files (the binary, its config, restart.txt) seen by fsnotify on
// their directories or by stat polling. It reports; signals, draining and
// re-executing are the caller's.
package reload
