// Command rssprobe measures where the memory of an idle spawned copy goes.
// It starts a program the way mod_fcgid does (a listening unix socket on
// fd 0, nothing else open), sends it one FastCGI request as Apache would,
// lets it sit idle for a moment and then prints, from /proc:
//
//   - VmRSS, the threads, and smaps_rollup's totals;
//
//   - every mapping with its Rss, Pss, clean/dirty, shared/private and
//     anonymous kilobytes;
//
//   - which pages of the executable are resident (pagemap, needs root),
//     by ELF section and, with -symbols N, the N symbols with most
//     resident pages.
//
//     go build -o /tmp/hello.fcgi ./bench/hello
//     go run ./bench/rssprobe [-settle 1s] [-path /ping] [-symbols 30] /tmp/hello.fcgi
//
// Put a mysite.toml beside a mysite.fcgi first if it should read one.
package main

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	settle := flag.Duration("settle", time.Second, "idle time after the request, before measuring")
	pathInfo := flag.String("path", "", "PATH_INFO of the request (e.g. /ping)")
	nsym := flag.Int("symbols", 0, "list the N symbols with most resident pages")
	requests := flag.Int("requests", 1, "requests to send before measuring")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: rssprobe [flags] PROGRAM [ENV=VALUE...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := probe(flag.Arg(0), flag.Args()[1:], *pathInfo, *requests, *settle, *nsym); err != nil {
		fmt.Fprintln(os.Stderr, "rssprobe:", err)
		os.Exit(1)
	}
}

func probe(prog string, env []string, pathInfo string, requests int, settle time.Duration, nsym int) error {
	prog, err := filepath.Abs(prog)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rssprobe")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening for the child: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		return err
	}
	l.Close()
	cmd := exec.Command(prog)
	cmd.Stdin = f
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", prog, err)
	}
	f.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	req := request(prog, pathInfo)
	for i := 0; i < requests; i++ {
		body, err := roundTrip(sock, req)
		if err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
		if i == 0 {
			fmt.Printf("first answer after %v: %q\n", time.Since(start).Round(10*time.Microsecond), firstLine(body))
		}
	}
	time.Sleep(settle)
	pid := cmd.Process.Pid
	fmt.Printf("pid %d idle for %v after %d request(s)\n\n", pid, settle, requests)
	if err := status(pid); err != nil {
		return err
	}
	maps, err := smaps(pid)
	if err != nil {
		return err
	}
	printMaps(maps)
	exe, _ := filepath.EvalSymlinks(prog)
	return residentSections(pid, exe, maps, nsym)
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.LastIndex(s, "\r\n\r\n"); i >= 0 {
		s = s[i+4:]
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func status(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "VmSize", "Threads", "VmStk"} {
			if strings.HasPrefix(line, k+":") {
				fmt.Println(line)
			}
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return err
	}
	fmt.Println("--- smaps_rollup")
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) == 3 && f[1] != "0" {
			fmt.Println(line)
		}
	}
	fmt.Println()
	return nil
}

// mapping is one entry of /proc/PID/smaps.
type mapping struct {
	lo, hi uint64
	perm   string
	off    uint64
	name   string
	kb     map[string]int
}

func smaps(pid int) ([]mapping, error) {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var ms []mapping
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			var m mapping
			a, b, _ := strings.Cut(f[0], "-")
			m.lo, _ = strconv.ParseUint(a, 16, 64)
			m.hi, _ = strconv.ParseUint(b, 16, 64)
			m.perm = f[1]
			m.off, _ = strconv.ParseUint(f[2], 16, 64)
			if len(f) >= 6 {
				m.name = f[5]
			}
			m.kb = map[string]int{}
			ms = append(ms, m)
			continue
		}
		if len(ms) > 0 && len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.Atoi(f[1])
			ms[len(ms)-1].kb[strings.TrimSuffix(f[0], ":")] = n
		}
	}
	return ms, sc.Err()
}

func printMaps(ms []mapping) {
	cols := []string{"Size", "Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous"}
	fmt.Printf("%-33s %-4s %-28s", "mapping", "perm", "name")
	for _, c := range cols {
		fmt.Printf(" %8s", strings.TrimPrefix(strings.Replace(c, "_", "", 1), ""))
	}
	fmt.Println("  (kB)")
	tot := map[string]int{}
	for _, m := range ms {
		if m.kb["Rss"] == 0 {
			continue
		}
		name := m.name
		if len(name) > 28 {
			name = "…" + name[len(name)-27:]
		}
		fmt.Printf("%016x-%016x %-4s %-28s", m.lo, m.hi, m.perm, name)
		for _, c := range cols {
			fmt.Printf(" %8d", m.kb[c])
			tot[c] += m.kb[c]
		}
		fmt.Println()
	}
	fmt.Printf("%-33s %-4s %-28s", "total (mappings with Rss)", "", "")
	for _, c := range cols {
		fmt.Printf(" %8d", tot[c])
	}
	fmt.Println()
	fmt.Println()
}

// residentSections reads pagemap for the executable's mappings and counts
// the present pages per ELF section and, with nsym > 0, per symbol.
func residentSections(pid int, exe string, ms []mapping, nsym int) error {
	ef, err := elf.Open(exe)
	if err != nil {
		return err
	}
	defer ef.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return err
	}
	defer pm.Close()
	present := map[uint64]bool{} // page address -> present
	for _, m := range ms {
		if m.name != exe && !(m.name == "" && isBSS(ef, m.lo)) {
			continue
		}
		n := (m.hi - m.lo) / 4096
		buf := make([]byte, 8*n)
		if _, err := pm.ReadAt(buf, int64(m.lo/4096*8)); err != nil && err != io.EOF {
			return fmt.Errorf("reading pagemap: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
				present[m.lo+4096*i] = true
			}
		}
	}
	fmt.Println("--- resident pages of the executable's segments, by section (pagemap)")
	fmt.Printf("%-20s %10s %10s %8s\n", "section", "size kB", "resident", "%")
	for _, s := range ef.Sections {
		if s.Addr == 0 || s.Size == 0 {
			continue
		}
		r := 0
		for p := s.Addr &^ 4095; p < s.Addr+s.Size; p += 4096 {
			if present[p] {
				r++
			}
		}
		fmt.Printf("%-20s %10d %10d %7.1f%%\n", s.Name, s.Size/1024, r*4, 100*float64(r*4096)/float64(s.Size))
	}
	fmt.Println()
	if nsym > 0 {
		return topSymbols(ef, present, nsym)
	}
	return nil
}

func isBSS(ef *elf.File, addr uint64) bool {
	for _, s := range ef.Sections {
		if (s.Name == ".bss" || s.Name == ".noptrbss") && addr >= s.Addr&^4095 && addr < s.Addr+s.Size {
			return true
		}
	}
	return false
}

// topSymbols charges each present page to the symbols overlapping it (a
// page shared by several counts once per symbol) and lists the largest.
func topSymbols(ef *elf.File, present map[uint64]bool, n int) error {
	syms, err := ef.Symbols()
	if err != nil {
		return err
	}
	type row struct {
		name string
		size uint64
		pg   int
	}
	var rows []row
	pkg := map[string]int{}
	for _, s := range syms {
		if s.Size == 0 || s.Value == 0 {
			continue
		}
		r := 0
		for p := s.Value &^ 4095; p < s.Value+s.Size; p += 4096 {
			if present[p] {
				r++
			}
		}
		if r > 0 {
			rows = append(rows, row{s.Name, s.Size, r})
			pkg[pkgOf(s.Name)] += r
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].pg > rows[j].pg })
	fmt.Printf("--- top %d symbols by resident pages\n", n)
	for i := 0; i < n && i < len(rows); i++ {
		fmt.Printf("%6d kB  %9d B  %s\n", rows[i].pg*4, rows[i].size, rows[i].name)
	}
	type prow struct {
		name string
		pg   int
	}
	var prows []prow
	for k, v := range pkg {
		prows = append(prows, prow{k, v})
	}
	sort.Slice(prows, func(i, j int) bool { return prows[i].pg > prows[j].pg })
	fmt.Printf("\n--- top %d packages by resident pages of their symbols (pages shared by packages count for each)\n", n)
	for i := 0; i < n && i < len(prows); i++ {
		fmt.Printf("%6d kB  %s\n", prows[i].pg*4, prows[i].name)
	}
	return nil
}

func pkgOf(sym string) string {
	s := sym
	if i := strings.LastIndex(s, "/"); i >= 0 {
		if j := strings.Index(s[i:], "."); j >= 0 {
			return s[:i+j]
		}
	}
	if j := strings.Index(s, "."); j > 0 {
		return s[:j]
	}
	return s
}

// request is what Apache + mod_fcgid sends for GET /PROGRAM-NAME+pathInfo.
func request(prog, pathInfo string) []byte {
	script := "/site/" + filepath.Base(prog)
	params := [][2]string{
		{"HTTP_HOST", "127.0.0.1"}, {"HTTP_USER_AGENT", "rssprobe"}, {"HTTP_ACCEPT", "*/*"},
		{"SERVER_SOFTWARE", "Apache"}, {"SERVER_NAME", "127.0.0.1"}, {"SERVER_ADDR", "127.0.0.1"},
		{"SERVER_PORT", "80"}, {"REMOTE_ADDR", "127.0.0.1"}, {"REMOTE_PORT", "40000"},
		{"DOCUMENT_ROOT", filepath.Dir(filepath.Dir(prog))}, {"REQUEST_SCHEME", "http"},
		{"SCRIPT_FILENAME", prog}, {"GATEWAY_INTERFACE", "CGI/1.1"}, {"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_METHOD", "GET"}, {"QUERY_STRING", ""}, {"REQUEST_URI", script + pathInfo},
		{"SCRIPT_NAME", script}, {"PATH_INFO", pathInfo},
	}
	var pb []byte
	for _, kv := range params {
		pb = appendLen(pb, len(kv[0]))
		pb = appendLen(pb, len(kv[1]))
		pb = append(pb, kv[0]...)
		pb = append(pb, kv[1]...)
	}
	b := record(nil, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}) // responder, close after
	b = record(b, 4, pb)
	b = record(b, 4, nil)
	return record(b, 5, nil)
}

func appendLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|1<<31)
}

func record(b []byte, typ byte, content []byte) []byte {
	pad := -len(content) & 7
	b = append(b, 1, typ, 0, 1, byte(len(content)>>8), byte(len(content)), byte(pad), 0)
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// roundTrip sends req on a new connection and returns the STDOUT content.
func roundTrip(sock string, req []byte) ([]byte, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	var out []byte
	var h [8]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return out, fmt.Errorf("reading the answer: %w", err)
		}
		n, pad := int(binary.BigEndian.Uint16(h[4:])), int(h[6])
		body := make([]byte, n+pad)
		if _, err := io.ReadFull(br, body); err != nil {
			return out, err
		}
		switch h[1] {
		case 6: // STDOUT
			out = append(out, body[:n]...)
		case 3: // END_REQUEST
			return out, nil
		}
	}
}
