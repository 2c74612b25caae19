package peertest

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Children returns the PIDs of pid's live (not zombie) child processes,
// read from every /proc/N/stat: it needs no CONFIG_PROC_CHILDREN.
func Children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	want := strconv.Itoa(pid)
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces and parentheses.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 2 && f[0] != "Z" && f[1] == want {
			out = append(out, n)
		}
	}
	return out
}
