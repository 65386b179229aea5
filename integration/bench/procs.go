package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
func (r *reaper) track(p *ts.Proc) { r.procs = append(r.procs, p) }

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

// startOwn runs argv in dir as the harness's own process, with bgd's
// environment, its output in dir/logFile ("": discarded), tracked for the
// end of the run; with a port, it waits up to 5 s until argv listens there.
func (b *bench) startOwn(dir, name, logFile string, port int, argv ...string) (*ts.Proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, b.env
	if logFile != "" {
		log, err := os.Create(filepath.Join(dir, logFile))
		if err != nil {
			return nil, err
		}
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
	}
	p, err := ts.Start(name, cmd)
	if err != nil {
		return nil, err
	}
	b.reaper.track(p)
	if port == 0 {
		return p, nil
	}
	return p, ts.WaitListening(port, 5*time.Second, p)
}

// startWrk runs wrk with its script in the work directory, until stopped
// (or stopAll).
func (b *bench) startWrk(url string, l ts.WrkLoad) (*ts.Wrk, error) {
	w, err := ts.StartWrk(b.wrk, b.work, url, l)
	if err != nil {
		return nil, err
	}
	b.reaper.track(w.Proc)
	return w, nil
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

// cleanEnv is the harness's environment without the variables that would
// override the bench configurations (a developer may have them set).
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains([]string{"BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT", "BG_STATE_FILE", "BG_CONFIG"}, k)
	})
}

// expect runs bgd with args in dir, as a user's shell would, and fails
// unless it exits code (a missing load-balancer binary or a broken config
// is an error of the run, never a skip); with code anyExit any exit will
// do. On ctx's end the process gets SIGTERM.
func (b *bench) expect(ctx context.Context, dir string, code int, args ...string) (*ts.Run, error) {
	r, err := ts.RunProcess(ctx, b.bgd, dir, b.env, args...)
	if err == nil && code != anyExit && r.Code != code {
		err = fmt.Errorf("bgd %s exited %d, want %d: %s", strings.Join(args, " "), r.Code, code, strings.TrimSpace(r.Stderr))
	}
	return r, err
}

const anyExit = -1

// timed is what every figure keeps of a bgd process.
func timed(r *ts.Run) Timed {
	return Timed{WallMs: ms(r.Wall), InProcessMs: ms(jsonDuration(r.Stdout)), RSSKB: r.MaxRSSKB, CPUMs: ms(r.CPU)}
}

// jsonDuration reads duration_ns from a --json answer (the time bgd spent
// inside its workflow, without process start-up); 0 if absent.
func jsonDuration(stdout string) time.Duration {
	var v struct {
		D int64 `json:"duration_ns"`
	}
	if json.Unmarshal([]byte(stdout), &v) != nil {
		return 0
	}
	return time.Duration(v.D)
}

// writeConfig writes a bgd config. JSON is YAML, and the strict loader
// checks every key, so a typo here fails loudly.
func writeConfig(path, stateDir string, services map[string]any) error {
	data, err := json.MarshalIndent(map[string]any{"state_dir": stateDir, "services": services}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// serviceConfig is one service of a bench config.
func serviceConfig(command []string, blue, green int, lb map[string]any) map[string]any {
	return map[string]any{
		"command":    command,
		"blue":       map[string]any{"port": blue},
		"green":      map[string]any{"port": green},
		"health":     map[string]any{"path": "/health", "interval": "1s", "timeout": "20s", "request_timeout": "2s"},
		"stop_grace": "5s",
		"lb":         lb,
	}
}

// demoCommand is the demo app as a slot command; extra flags are appended.
func demoCommand(bgd string, extra ...string) []string {
	return append([]string{bgd, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"}, extra...)
}

// demoApp is the argv of `bgd demo-app` as the harness's own process.
func demoApp(bgd string, port int, color, release string) []string {
	return []string{bgd, "demo-app", "--port", strconv.Itoa(port), "--color", color, "--release", release}
}

// logLines keeps bgd's verbose log without the line of every failed probe.
func logLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.Contains(l, "not healthy yet") {
			out = append(out, l)
		}
	}
	return out
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
