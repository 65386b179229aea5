package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/internal/freeport"
	ts "github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/slots"
)

// reaper owns every process the harness starts, and finds the ones bgd
// starts for it (slots and builtin proxies run detached, in their own
// sessions) by the marker bgd gives them: BGD_STATE=<the absolute state
// file>. stopAll ends them all, on success, on error and on interrupt alike.
type reaper struct {
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

// killState stops the processes bgd started with these state files, as
// `bgd stop` does (slots.Stop: SIGTERM to the group, SIGKILL after 5 s,
// the marker checked before each signal, so a recycled pid is never hit).
func (r *reaper) killState(stateFiles ...string) {
	var wg sync.WaitGroup
	for _, f := range stateFiles {
		for _, id := range slots.FindMarked([]string{"BGD_STATE=" + f}) {
			wg.Go(func() { slots.Stop(context.Background(), id, 5*time.Second) })
		}
	}
	wg.Wait()
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
