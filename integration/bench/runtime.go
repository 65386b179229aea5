package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// NginxRuntime is figure 10: nginx's two modes (lb.nginx.mode reload and
// runtime) side by side on one nginx that loads the Lua module, each mode
// a service (named after it) with its own slots: flips under load (the windows of figure 1)
// and data-plane load, the modes interleaved flip by flip and round by
// round.
type NginxRuntime struct {
	Unavailable string                    `json:"unavailable,omitempty"`
	Flips       map[string][]Flip         `json:"flips_under_load"` // mode -> flips
	Runs        map[string][]ts.WrkResult `json:"data_plane"`       // mode -> rounds
	// CPUPerReqUs is the CPU time (user + system) nginx's workers spent per
	// request of each round: the Lua balancer's cost, which other work on
	// the host disturbs far less than req/s and p99.
	CPUPerReqUs map[string][]float64 `json:"nginx_cpu_per_request_us"`
}

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
	svcs := map[string]*service{}
	for _, mode := range nginxModes {
		s := &service{dir: filepath.Join(dir, mode), cfg: filepath.Join(dir, mode, "bgd.yml"), stateFile: filepath.Join(dir, mode, "state", "bg_state.json")}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return err
		}
		var port, blue, green int
		if err := freePorts(&port, &blue, &green); err != nil {
			return err
		}
		s.url = loopURL(port)
		lb := map[string]any{"driver": "nginx", "nginx": map[string]any{
			"file":       filepath.Join(ng.Prefix, "conf.d", "bgd-"+mode+".conf"),
			"listen":     fmt.Sprintf("127.0.0.1:%d", port),
			"test":       ng.Command("-t", "-q"),
			"reload":     ng.Command("-s", "reload"),
			"verify_url": s.url,
			"mode":       mode,
		}}
		if err := writeConfig(s.cfg, filepath.Join(s.dir, "state"), map[string]any{mode: serviceConfig(demoCommand(b.bgd), blue, green, lb)}); err != nil {
			return err
		}
		for _, c := range []string{"green", "blue"} {
			if _, err := b.expect(ctx, s.dir, 0, "--config", s.cfg, "start", c); err != nil {
				return fmt.Errorf("mode %s: %w", mode, err)
			}
		}
		if err := waitAnswer(s.url, "blue", 10*time.Millisecond); err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		svcs[mode] = s
	}
	defer func() {
		for _, s := range svcs {
			b.reaper.killState(s.stateFile)
		}
	}()
	for i := range b.o.flips {
		for _, mode := range nginxModes {
			f, err := b.oneLoadedFlip(ctx, svcs[mode], flipTo(i))
			if err != nil {
				return fmt.Errorf("mode %s, flip %d: %w", mode, i+1, err)
			}
			nr.Flips[mode] = append(nr.Flips[mode], *f)
			b.log.Info("nginx mode", "mode", mode, "flip", i+1, "switch_ms", f.SwitchMs, "in_process_ms", f.InProcessMs,
				"keep_alive_failed", f.KeepAlive.Failures, "new_conn_failed", f.NewConn.Failures)
		}
	}
	// The old workers of the last reload are gone before the CPU counts.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	master := ng.Proc().Pid()
	for round := range b.o.dpRounds + 1 {
		order := nginxModes
		if round%2 == 0 {
			order = []string{nginxModes[1], nginxModes[0]} // ABBA: neither mode always goes first
		}
		for _, mode := range order {
			d := b.o.dpDuration
			if round == 0 {
				d = min(time.Second, d/2)
			}
			cpu0, err := workersCPU(master)
			if err != nil {
				return err
			}
			res, err := b.fixedLoad(ctx, svcs[mode].url, d)
			if err != nil {
				return fmt.Errorf("mode %s round %d: %w", mode, round, err)
			}
			cpu1, err := workersCPU(master)
			if err != nil {
				return err
			}
			if round > 0 && res.Requests > 0 {
				us := float64((cpu1 - cpu0).Microseconds()) / float64(res.Requests)
				nr.Runs[mode] = append(nr.Runs[mode], res)
				nr.CPUPerReqUs[mode] = append(nr.CPUPerReqUs[mode], us)
				b.log.Info("nginx mode data plane", "mode", mode, "round", round, "rps", int(res.RPS), "p99_ms", res.P99Ms,
					"nginx_cpu_us_per_request", us, "failures", res.Failures)
			}
		}
	}
	return nil
}

// workersCPU is the user + system CPU time of the children of nginx's
// master (its workers), from /proc/<pid>/stat.
func workersCPU(master int) (time.Duration, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		_, rest, ok := strings.Cut(string(data), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 13 || f[1] != strconv.Itoa(master) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// nginxRuntimeTable renders figure 10.
func (r *Results) nginxRuntimeTable(b *strings.Builder) {
	nr := r.NginxRuntime
	if nr == nil {
		return
	}
	fmt.Fprintf(b, "### nginx modes (figure 10): reload vs runtime (Lua balancer), one nginx, flips and rounds interleaved\n\n")
	var rows [][]string
	for _, mode := range nginxModes {
		if nr.Unavailable != "" {
			rows = append(rows, unavailableRow(mode, nr.Unavailable, 8))
			continue
		}
		fl := nr.Flips[mode]
		ka, nc := pick(fl, kaFailed), pick(fl, ncFailed)
		kaReq := pick(fl, func(f Flip) float64 { return float64(f.KeepAlive.Requests) })
		rows = append(rows, []string{mode,
			fmt.Sprintf("%s (%s of %s in %d flips)", medMax(ka, ""), num(sum(ka)), num(sum(kaReq)), len(fl)),
			fmt.Sprintf("%s (%s)", medMax(nc, ""), num(sum(nc))),
			medMax(pick(fl, func(f Flip) float64 { return f.InProcessMs }), " ms"),
			medMax(pick(fl, switchMs), " ms"),
			num(median(pick(nr.Runs[mode], rps))),
			fmt.Sprintf("%.2f ms", median(pick(nr.Runs[mode], p99))),
			fmt.Sprintf("%.1f µs", median(nr.CPUPerReqUs[mode]))})
	}
	if nr.Unavailable == "" {
		rt, rl := nginxModes[1], nginxModes[0]
		ratio := func(f func(ts.WrkResult) float64) string {
			a, c := median(pick(nr.Runs[rt], f)), median(pick(nr.Runs[rl], f))
			if c == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f×", a/c)
		}
		cpu := "–"
		if c := median(nr.CPUPerReqUs[rl]); c > 0 {
			cpu = fmt.Sprintf("%.2f×", median(nr.CPUPerReqUs[rt])/c)
		}
		rows = append(rows, []string{"runtime / reload", "", "", "", "", ratio(rps), ratio(p99), cpu})
	}
	table(b, []string{"mode", "failed keep-alive requests per flip", "failed new-conn requests per flip",
		"flip in bgd (in-process)", "`bgd switch` (whole process)", "data plane req/s", "data plane p99", "nginx CPU per request"}, rows...)
}
