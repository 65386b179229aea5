package slots

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PortOwner is the process listening on a TCP port.
type PortOwner struct {
	PID     int    // 0 when the socket is known but its process is not visible
	Command string // its command line, space-joined
}

// ListenerOf finds who listens on a TCP port (IPv4 or IPv6, any address),
// from /proc/net/tcp{,6} and /proc/*/fd. ok is false when nobody listens.
func ListenerOf(port int) (owner PortOwner, ok bool) {
	inodes := listeningInodes(port)
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

// ListensOn reports whether the process group led by leader listens on the
// port. It looks at the leader's own sockets first, so the common case
// costs a few reads; otherwise it finds the listener and checks its group.
// The owner is returned when someone else listens.
func ListensOn(leader, port int) (owner PortOwner, ours bool) {
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return PortOwner{}, false
	}
	if holdsSocket(leader, inodes) {
		return PortOwner{PID: leader}, true
	}
	owner, _ = ListenerOf(port)
	return owner, owner.PID > 0 && InGroup(owner.PID, leader)
}

func holdsSocket(pid int, inodes map[string]bool) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			return true
		}
	}
	return false
}

// listeningInodes returns the inodes of TCP sockets listening on port, from
// netlink sock_diag, or from /proc/net/tcp{,6} where netlink is refused.
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	if diag, err := listeningInodesDiag(port); err == nil {
		for ino := range diag {
			out[strconv.FormatUint(uint64(ino), 10)] = true
		}
		return out
	}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, ino := range procNetListeners(f, port) {
			out[ino] = true
		}
	}
	return out
}

// procNetListeners returns the socket inodes in LISTEN state on port.
func procNetListeners(file string, port int) []string {
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
	f, err := ProcStat(pid)
	return err == nil && f[2] == strconv.Itoa(leader)
}

// FindByEnv returns the live processes whose environment holds every one of
// the KEY=VALUE pairs. bgd gives each slot PORT, BG_COLOR and BG_RELEASE, so
// a slot whose pid was never recorded (bgd killed between starting it and
// saving its pid) can be found before it listens.
func FindByEnv(pairs ...string) []int {
	procs, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
		if err != nil {
			continue
		}
		env := map[string]bool{}
		for _, kv := range strings.Split(string(data), "\x00") {
			env[kv] = true
		}
		all := len(pairs) > 0
		for _, kv := range pairs {
			all = all && env[kv]
		}
		if all && Alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}
