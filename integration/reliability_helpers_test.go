package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// rig is one service on free ports behind its own builtin proxy, driven
// through the real bgd binary in its own directory. Everything it starts
// (slots, the proxy bgd spawns) is killed when the test ends.
type rig struct {
	t                  *testing.T
	dir                string
	cfgPath, statePath string
	blue, green, proxy int

	mu      sync.Mutex   // guards tracked: tests run the rig from several goroutines
	tracked map[int]bool // pids to kill at the end
}

// rigOptions shape the service's config. Zero values are the defaults.
type rigOptions struct {
	// slotArgs are added to the demo app's arguments (e.g. --ready-after).
	slotArgs []string
	// command replaces the slot command entirely ({{.Port}} etc. allowed).
	command []string
	// failover enables failover in the health sweep.
	failover bool
	// stopGrace is stop_grace. Default 2s.
	stopGrace time.Duration
	// healthTimeout is health.timeout. Default 15s.
	healthTimeout time.Duration
	// noRestarts sets health.max_restarts to 0: health sweeps restart no
	// slot.
	noRestarts bool
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dir: dir, cfgPath: filepath.Join(dir, "bluegreen.yml"),
		statePath: filepath.Join(dir, ".local_context", "bg_state.json"),
		blue:      freePort(t), tracked: map[int]bool{}}
	for r.green = freePort(t); r.green == r.blue; r.green = freePort(t) {
	}
	for r.proxy = freePort(t); r.proxy == r.blue || r.proxy == r.green; r.proxy = freePort(t) {
	}
	if o.stopGrace == 0 {
		o.stopGrace = 2 * time.Second
	}
	if o.healthTimeout == 0 {
		o.healthTimeout = 15 * time.Second
	}
	cmd := o.command
	if cmd == nil {
		cmd = append([]string{bgdBin, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"}, o.slotArgs...)
	}
	restarts := ""
	if o.noRestarts {
		restarts = ", max_restarts: 0"
	}
	quoted := make([]string, len(cmd))
	for i, a := range cmd {
		b, _ := json.Marshal(a)
		quoted[i] = string(b)
	}
	cfg := fmt.Sprintf(`services:
  app:
    command: [%s]
    blue: {port: %d}
    green: {port: %d}
    health: {interval: 100ms, timeout: %s, request_timeout: 1s%s}
    stop_grace: %s
    failover: %v
    lb: {driver: builtin, builtin: {listen: "127.0.0.1:%d"}}
`, strings.Join(quoted, ", "), r.blue, r.green, o.healthTimeout, restarts, o.stopGrace, o.failover, r.proxy)
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.killAll)
	return r
}

// run runs `bgd --config <cfg> args...` in the rig's directory.
func (r *rig) run(args ...string) (string, string, int) {
	r.t.Helper()
	out, errOut, code := bgd(r.t, r.dir, nil, append([]string{"--config", r.cfgPath}, args...)...)
	r.trackState()
	return out, errOut, code
}

// must runs a command that has to succeed.
func (r *rig) must(args ...string) string {
	r.t.Helper()
	out, errOut, code := r.run(args...)
	if code != 0 {
		r.t.Fatalf("bgd %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// start runs bgd in the background with -v, returning the command and its
// stderr lines as they come.
func (r *rig) start(args ...string) (*exec.Cmd, <-chan string) {
	r.t.Helper()
	cmd := exec.Command(bgdBin, append([]string{"--config", r.cfgPath, "-v"}, args...)...)
	cmd.Dir = r.dir
	pipe, err := cmd.StderrPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	r.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, lines
}

// state decodes the state file strictly; a file that does not parse fails the test.
func (r *rig) state() *state.State {
	r.t.Helper()
	data, err := os.ReadFile(r.statePath)
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := state.Decode(data)
	if err != nil {
		r.t.Fatalf("state file does not parse: %v\n%s", err, data)
	}
	return st
}

// status is `bgd --json status`.
func (r *rig) status() *orchestrator.Status {
	r.t.Helper()
	out := r.must("--json", "status")
	var s orchestrator.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return &s
}

// servedBy asks the proxy and returns the colour that answered "/".
func (r *rig) servedBy() string {
	r.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", r.proxy))
	if err != nil {
		r.t.Fatalf("request through the proxy: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Slot")
}

// waitServedBy polls the proxy until color answers.
func (r *rig) waitServedBy(color config.Color) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.servedBy()
		if got == color.String() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the proxy serves %q, want %s", got, color)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trackState remembers every pid the state names, to kill them at the end.
func (r *rig) trackState() {
	data, err := os.ReadFile(r.statePath)
	if err != nil {
		return
	}
	if st, err := state.Decode(data); err == nil {
		for _, pid := range []int{st.BluePID, st.GreenPID, st.ProxyPID} {
			r.track(pid)
		}
	}
}

func (r *rig) track(pid int) {
	if pid > 0 {
		r.mu.Lock()
		r.tracked[pid] = true
		r.mu.Unlock()
	}
}

// killAll kills the process groups of everything the rig started: pids
// the state named, and whatever of ours listens on the rig's ports.
func (r *rig) killAll() {
	r.trackState()
	for _, port := range []int{r.blue, r.green, r.proxy} {
		if o, ok := slots.ListenerOf(port); ok && o.PID > 0 && strings.Contains(slots.CommandLine(o.PID), bgdBin) {
			r.track(o.PID)
		}
	}
	r.mu.Lock()
	pids := make([]int, 0, len(r.tracked))
	for pid := range r.tracked {
		pids = append(pids, pid)
	}
	r.mu.Unlock()
	for _, pid := range pids {
		killGroup(pid)
	}
}

// killGroup SIGKILLs the process group pid leads (bgd starts slots and the
// proxy in their own sessions), or pid alone; never the test's own group.
func killGroup(pid int) {
	if pg, err := syscall.Getpgid(pid); err == nil && pg == pid && pg != syscall.Getpgrp() {
		syscall.Kill(-pid, syscall.SIGKILL)
		return
	}
	if slots.Alive(pid) && pid != os.Getpid() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// snapshot is every file under dir with its content and mode, to prove a
// command wrote nothing.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			line += " " + strconv.Quote(string(data))
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
