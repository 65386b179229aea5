package slots

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PortOwner is the process listening on a TCP port.
type PortOwner struct {
	PID     int    // 0 when the socket is known but its process is not visible
	Command string // its command line, space-joined
}

// ListenerOf finds who listens on a TCP port (IPv4 or IPv6, any address),
// from /proc/net/tcp{,6} and /proc/*/fd. ok is false when nobody listens.
func ListenerOf(port int) (owner PortOwner, ok bool) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, ino := range listeningInodes(f, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return PortOwner{}, false
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				return PortOwner{PID: pid, Command: CommandLine(pid)}, true
			}
		}
	}
	return PortOwner{}, true
}

// listeningInodes returns the socket inodes in LISTEN state on port.
func listeningInodes(file string, port int) []string {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	want := strings.ToUpper(strconv.FormatInt(int64(port), 16))
	for len(want) < 4 {
		want = "0" + want
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		if _, p, ok := strings.Cut(fields[1], ":"); ok && p == want {
			out = append(out, fields[9])
		}
	}
	return out
}

// CommandLine is the process's argv joined by spaces ("" if unknown).
func CommandLine(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))
}

// InGroup reports whether pid belongs to the process group led by leader
// (a slot's children hold its port on its behalf).
func InGroup(pid, leader int) bool {
	if pid == leader {
		return true
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	// After "comm)": state ppid pgrp ...
	f := strings.Fields(s[i+1:])
	return len(f) >= 3 && f[2] == strconv.Itoa(leader)
}

// ProcessGroup returns the process group id of pid.
func ProcessGroup(pid int) (int, error) { return syscall.Getpgid(pid) }
