package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/config"
	ts "github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb/nginx"
	"github.com/bgd-dev/bgd/slots"
)

var nginxModes = []string{config.NginxReload, config.NginxRuntime}

// luaModuleLines are the load_module lines of Debian's Lua module (and the
// NDK it needs), or an error naming the missing file.
func luaModuleLines() (string, error) {
	var lines []string
	for _, m := range []string{"ndk_http_module.so", filepath.Base(config.DefaultLuaModule)} {
		path := filepath.Join(filepath.Dir(config.DefaultLuaModule), m)
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("nginx's Lua module is not installed (%s): apt-get install libnginx-mod-http-lua (see .ci/run)", path)
		}
		lines = append(lines, "load_module "+path+";")
	}
	return strings.Join(lines, "\n"), nil
}

// nginxRuntime measures figure 10.
func (b *bench) nginxRuntime(ctx context.Context) error {
	nr := &NginxRuntime{Flips: map[string][]Flip{}, Runs: map[string][]ts.WrkResult{}, CPUPerReqUs: map[string][]float64{}}
	b.res.NginxRuntime = nr
	mods, err := luaModuleLines()
	if err == nil && b.nginxBin == "" {
		err = errors.New("nginx is not installed")
	}
	if err != nil {
		if ts.InCI() {
			return err
		}
		nr.Unavailable = err.Error()
		return nil
	}
	dir := filepath.Join(b.work, "nginx-runtime")
	ng, err := ts.StartNginx(b.nginxBin, filepath.Join(dir, "nginx"), ts.NginxOptions{MainExtra: mods, WorkerConnections: 4096})
	if err != nil {
		return err
	}
	b.reaper.track(ng.Proc())
	svcs, states := map[string]*service{}, []string{}
	defer func() { b.reaper.killState(states...) }()
	var targets []dpTarget
	for _, mode := range nginxModes {
		var port, blue, green int
		if err := freePorts(&port, &blue, &green); err != nil {
			return err
		}
		lb := nginxLB(ng, mode, port, map[string]any{"mode": mode})
		s, err := b.startService(ctx, filepath.Join(dir, mode), mode, port, blue, green, lb)
		if err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		svcs[mode], states = s, append(states, s.stateFile)
		targets = append(targets, dpTarget{mode, s.url})
	}
	for i := range b.o.flips {
		for _, mode := range nginxModes {
			f, err := b.loadedFlip(ctx, svcs[mode], flipTo(i))
			if err != nil {
				return fmt.Errorf("mode %s, flip %d: %w", mode, i+1, err)
			}
			nr.Flips[mode] = append(nr.Flips[mode], f)
			b.log.Info("nginx mode", "mode", mode, "flip", i+1, "switch_ms", f.SwitchMs, "in_process_ms", f.InProcessMs,
				"keep_alive_failed", f.KeepAlive.Failures, "new_conn_failed", f.NewConn.Failures)
		}
	}
	// The old workers of the last reload are gone before the CPU counts.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	master := ng.Proc().Pid()
	// ABBA: neither mode always goes first.
	err = rounds(b.o.dpRounds, targets, true, func(t dpTarget, round int) error {
		cpu0, err := workersCPU(master)
		if err != nil {
			return err
		}
		res, err := b.fixedLoad(ctx, t.url, round)
		if err != nil {
			return err
		}
		cpu1, err := workersCPU(master)
		if err != nil || round == 0 || res.Requests == 0 {
			return err
		}
		us := float64((cpu1 - cpu0).Microseconds()) / float64(res.Requests)
		nr.Runs[t.name] = append(nr.Runs[t.name], res)
		nr.CPUPerReqUs[t.name] = append(nr.CPUPerReqUs[t.name], us)
		b.log.Info("nginx mode data plane", "mode", t.name, "round", round, "rps", int(res.RPS), "p99_ms", res.P99Ms,
			"nginx_cpu_us_per_request", us, "failures", res.Failures)
		return nil
	})
	if err != nil {
		return err
	}
	ng.Stop() // it holds the ports that the counted nginx listens on
	nr.InstrPerReq, nr.InstrUnavailable, err = b.nginxInstructions(ctx, ng, mods, svcs)
	return err
}

// instrWarmup requests go before the counted instrRequests: LuaJIT
// compiles the balancer during the first ones.
const instrWarmup, instrRequests = 300, 2000

// nginxInstructions counts, with valgrind's callgrind, the instructions
// nginx executes per request of each mode: for each, one nginx process
// (master_process off) that loads only that mode's file (the runtime mode's
// route from its route file), instrWarmup requests, the counters zeroed,
// instrRequests requests on one keep-alive connection, the counters dumped.
// The count is of user space only (a request's kernel work, its sockets,
// is the same in both modes), and it agrees from run to run within 0.1%,
// where CPU time per request moves by 10% or more on a busy host. Without
// valgrind it says why, and the figure goes without the column.
func (b *bench) nginxInstructions(ctx context.Context, ng *ts.Nginx, mods string, svcs map[string]*service) (map[string]float64, string, error) {
	valgrind, err := exec.LookPath("valgrind")
	if err == nil {
		_, err = exec.LookPath("callgrind_control")
	}
	if err != nil {
		return nil, "valgrind is not installed (apt-get install valgrind)", nil
	}
	out := map[string]float64{}
	for _, mode := range nginxModes {
		n, err := b.countInstructions(ctx, valgrind, ng, mods, mode, svcs[mode].url)
		if err != nil {
			err = fmt.Errorf("mode %s under callgrind: %w", mode, err)
			if ts.InCI() || ctx.Err() != nil {
				return nil, "", err
			}
			// The rounds' numbers stand without the column.
			b.log.Error("nginx instructions per request", "err", err)
			return nil, "counting failed: " + err.Error(), nil
		}
		out[mode] = n
		b.log.Info("nginx mode instructions", "mode", mode, "instructions_per_request", int(n))
	}
	return out, "", nil
}

// countInstructions is nginxInstructions for one mode.
func (b *bench) countInstructions(ctx context.Context, valgrind string, ng *ts.Nginx, mods, mode, url string) (float64, error) {
	n, err := ts.NewNginx(ng.Bin, filepath.Join(ng.Prefix, "callgrind-"+mode), ts.NginxOptions{MainExtra: mods + "\nmaster_process off;"})
	if err != nil {
		return 0, err
	}
	inc := "include " + filepath.Join(ng.Prefix, "conf.d", "bgd-"+mode+".conf") + ";\n"
	if err := os.WriteFile(filepath.Join(n.Prefix, "conf.d", "mode.conf"), []byte(inc), 0o644); err != nil {
		return 0, err
	}
	dump := filepath.Join(n.Prefix, "callgrind.out")
	client := &http.Client{Timeout: 10 * time.Second}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(nginx.SlotHeader) == "" {
			return fmt.Errorf("status %d, %s %q", resp.StatusCode, nginx.SlotHeader, resp.Header.Get(nginx.SlotHeader))
		}
		return nil
	}
	deadline := time.Now().Add(time.Minute) // valgrind starts nginx in seconds
	p, err := b.startOwn(n.Prefix, "nginx", "valgrind.out", 0, append([]string{valgrind, "--tool=callgrind",
		"--smc-check=all-non-file", "--callgrind-out-file=" + dump}, n.Command("-g", "daemon off;")...)...)
	if err != nil {
		return 0, err
	}
	defer p.Stop(syscall.SIGQUIT, 5*time.Second)
	for err := get(); err != nil; err = get() {
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			out, _ := os.ReadFile(filepath.Join(n.Prefix, "valgrind.out"))
			return 0, fmt.Errorf("no answer from %s (%v); nginx's error log:\n%s\nvalgrind's output:\n%s", url, err, n.ErrorLog(), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	control := func(arg string) error {
		if out, err := exec.CommandContext(ctx, "callgrind_control", arg, strconv.Itoa(p.Pid())).CombinedOutput(); err != nil {
			return fmt.Errorf("callgrind_control %s: %w: %s", arg, err, out)
		}
		return nil
	}
	for i := range instrWarmup + instrRequests {
		if i == instrWarmup {
			if err := control("-z"); err != nil {
				return 0, err
			}
		}
		if err := get(); err != nil {
			return 0, fmt.Errorf("request %d: %w", i+1, err)
		}
	}
	if err := control("-d"); err != nil {
		return 0, err
	}
	files, _ := filepath.Glob(dump + ".*") // callgrind.out.1: the dump of -d
	if len(files) != 1 {
		return 0, fmt.Errorf("callgrind_control -d left %d dumps (%v), want 1", len(files), files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		return 0, err
	}
	total, err := callgrindTotal(string(data))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", files[0], err)
	}
	return total / instrRequests, nil
}

// callgrindTotal is the first number of a callgrind dump's totals line.
func callgrindTotal(dump string) (float64, error) {
	for _, line := range strings.Split(dump, "\n") {
		if v, ok := strings.CutPrefix(line, "totals: "); ok {
			n, _, _ := strings.Cut(v, " ")
			return strconv.ParseFloat(n, 64)
		}
	}
	return 0, errors.New("no totals line")
}

// workersCPU is the user + system CPU time of the children of nginx's
// master (its workers).
func workersCPU(master int) (time.Duration, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	var ticks int64
	parent := strconv.Itoa(master)
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if f, err := slots.ProcStat(pid); err == nil && f[1] == parent { // gone: skipped
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / 100, err // USER_HZ is 100 on Linux
}
