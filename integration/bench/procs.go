package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/internal/freeport"
)

// reaper owns every process the harness starts, and knows where to find
// the ones bgd starts for it (slots and builtin proxies run detached, in
// their own sessions, and are named only in state files). stopAll ends
// them all, on success, on error and on interrupt alike.
type reaper struct {
	// owners are substrings of the command line of a process bgd started
	// for us (the bgd binary, this harness's own executable); a pid read
	// from a state file is only signalled when its command line has one,
	// so a recycled pid is never touched.
	owners []string
	// stateGlobs find the state files of every bench service.
	stateGlobs []string

	mu    sync.Mutex
	procs []*proc
}

// proc is one process the harness started, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs cmd in its own process group (so a terminal's ^C reaches the
// harness, which then stops everything in order) and registers it.
func (r *reaper) start(name string, cmd *exec.Cmd) (*proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process group, then SIGKILL after grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p.exited() {
		syscall.Kill(-p.pid(), syscall.SIGKILL) // children that outlived it
		return
	}
	syscall.Kill(-p.pid(), sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
}

// statePIDs are the fields of a bgd state file that name processes.
type statePIDs struct {
	BluePID  int `json:"blue_pid"`
	GreenPID int `json:"green_pid"`
	ProxyPID int `json:"proxy_pid"`
}

// bgdPIDs returns the live processes a state file names that bgd started
// for the harness.
func (r *reaper) bgdPIDs(stateFile string) []int {
	data, err := os.ReadFile(stateFile)
	if err != nil {
		return nil
	}
	var s statePIDs
	if json.Unmarshal(data, &s) != nil {
		return nil
	}
	var out []int
	for _, pid := range []int{s.BluePID, s.GreenPID, s.ProxyPID} {
		if pid > 0 && alive(pid) && r.ours(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func (r *reaper) ours(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	cmdline := string(data)
	for _, o := range r.owners {
		if o != "" && strings.Contains(cmdline, o) {
			return true
		}
	}
	return false
}

// killState stops the processes a state file names: SIGTERM to each one's
// group (each is a session leader), SIGKILL after grace.
func (r *reaper) killState(stateFile string, grace time.Duration) {
	killGroups(r.bgdPIDs(stateFile), grace)
}

func killGroups(pids []int, grace time.Duration) {
	for _, pid := range pids {
		syscall.Kill(-pid, syscall.SIGTERM)
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// stopAll ends everything: first what bgd started (slots, proxies), then
// the harness's own processes (load generators, nginx, HAProxy, apps).
func (r *reaper) stopAll() {
	var pids []int
	for _, g := range r.stateGlobs {
		files, _ := filepath.Glob(g)
		for _, f := range files {
			pids = append(pids, r.bgdPIDs(f)...)
		}
	}
	killGroups(pids, 5*time.Second)
	r.mu.Lock()
	procs := append([]*proc{}, r.procs...)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sig := syscall.SIGTERM
			if strings.HasPrefix(p.name, "nginx") {
				sig = syscall.SIGQUIT // graceful; TERM is nginx's fast shutdown
			}
			p.stop(sig, 5*time.Second)
		}()
	}
	wg.Wait()
}

// alive reports whether pid runs and is not a zombie (bgd's detached
// children are reparented; whoever adopts them may reap them late).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	st := data[i+2]
	return st != 'Z' && st != 'X'
}

// procStatusKB reads a "VmHWM:"-style line of /proc/<pid>/status, in kB.
func procStatusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// portPool hands out free loopback ports in 20000-31999 (see
// internal/freeport: below the ephemeral range, so a load client's TIME_WAIT
// can never block a slot's bind), never the same one twice.
type portPool struct{}

func (portPool) get() (int, error) { return freeport.Pick(20000, 32000) }

// waitListening waits until something accepts TCP connections on port, or
// p (when not nil) exits.
func waitListening(port int, within time.Duration, p *proc) error {
	deadline := time.Now().Add(within)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %d", p.name, port)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %s: %w", port, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statePID reads one pid field of a bgd state file; 0 when absent.
func statePID(stateFile, field string) int {
	data, err := os.ReadFile(stateFile)
	if err != nil {
		return 0
	}
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return 0
	}
	v, _ := m[field].(float64)
	return int(v)
}
