package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/internal/freeport"
	ts "github.com/bgd-dev/bgd/internal/testsupport"
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
	// procs are the harness's own processes (each in its own group, see
	// testsupport.Start). Only the main goroutine starts and stops them.
	procs []*ts.Proc
}

// track registers a process the harness started for stopAll.
func (r *reaper) track(p *ts.Proc) *ts.Proc {
	r.procs = append(r.procs, p)
	return p
}

// killState stops the live processes the state files name that bgd
// started for the harness: SIGTERM to each one's group (each is a session
// leader), SIGKILL after 5 s.
func (r *reaper) killState(stateFiles ...string) {
	var pids []int
	for _, f := range stateFiles {
		for _, field := range []string{"blue_pid", "green_pid", "proxy_pid"} {
			pid := statePID(f, field)
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if pid > 0 && alive(pid) && slices.ContainsFunc(r.owners, func(o string) bool { return strings.Contains(string(cmdline), o) }) {
				pids = append(pids, pid)
			}
		}
	}
	signal := func(pid int, sig syscall.Signal) {
		syscall.Kill(-pid, sig)
		syscall.Kill(pid, sig)
	}
	for _, pid := range pids {
		signal(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			signal(pid, syscall.SIGKILL)
		}
	}
}

// stopAll ends everything: first what bgd started (slots, proxies), then
// the harness's own processes (load generators, nginx, HAProxy, apps).
func (r *reaper) stopAll() {
	var files []string
	for _, g := range r.stateGlobs {
		f, _ := filepath.Glob(g)
		files = append(files, f...)
	}
	r.killState(files...)
	var wg sync.WaitGroup
	for _, p := range r.procs {
		sig := syscall.SIGTERM
		if p.Name == "nginx" {
			sig = syscall.SIGQUIT // graceful; TERM is nginx's fast shutdown
		}
		wg.Go(func() { p.Stop(sig, 5*time.Second) })
	}
	wg.Wait()
}

// alive reports whether pid runs and is not a zombie (bgd's detached
// children are reparented; whoever adopts them may reap them late).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && procRunning(string(data))
}

// procRunning reads the state field of a /proc/<pid>/stat line: false for
// a zombie (Z) or a dead (X) process.
func procRunning(stat string) bool {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	st := stat[i+2]
	return st != 'Z' && st != 'X'
}

// procStatusKB reads a "VmHWM:"-style line of /proc/<pid>/status, in kB.
func procStatusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return statusKB(string(data), field)
}

// statusKB reads a "VmHWM:    20480 kB" line of a /proc/<pid>/status text.
func statusKB(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in the process status", field)
}

// freePorts fills each of ps with a free loopback port in 20000-31999
// (see internal/freeport: below the ephemeral range, so a load client's
// TIME_WAIT can never block a slot's bind), never the same one twice.
func freePorts(ps ...*int) (err error) {
	for _, p := range ps {
		if *p, err = freeport.Pick(20000, 32000); err != nil {
			return err
		}
	}
	return nil
}

// statePID reads one pid field of a bgd state file; 0 when absent.
func statePID(stateFile, field string) int {
	data, err := os.ReadFile(stateFile)
	if err != nil {
		return 0
	}
	return pidField(data, field)
}

// pidField reads one numeric field of a state file's JSON; 0 when absent.
func pidField(data []byte, field string) int {
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return 0
	}
	v, _ := m[field].(float64)
	return int(v)
}
