package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	nr := &NginxRuntime{Flips: map[string][]Flip{}, Runs: map[string][]ts.WrkResult{}}
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
	for round := range b.o.dpRounds + 1 {
		for _, mode := range nginxModes {
			d := b.o.dpDuration
			if round == 0 {
				d = min(time.Second, d/2)
			}
			res, err := b.fixedLoad(ctx, svcs[mode].url, d)
			if err != nil {
				return fmt.Errorf("mode %s round %d: %w", mode, round, err)
			}
			if round > 0 {
				nr.Runs[mode] = append(nr.Runs[mode], res)
				b.log.Info("nginx mode data plane", "mode", mode, "round", round, "rps", int(res.RPS), "p99_ms", res.P99Ms, "failures", res.Failures)
			}
		}
	}
	return nil
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
			rows = append(rows, unavailableRow(mode, nr.Unavailable, 7))
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
			fmt.Sprintf("%.2f ms", median(pick(nr.Runs[mode], p99)))})
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
		rows = append(rows, []string{"runtime / reload", "", "", "", "", ratio(rps), ratio(p99)})
	}
	table(b, []string{"mode", "failed keep-alive requests per flip", "failed new-conn requests per flip",
		"flip in bgd (in-process)", "`bgd switch` (whole process)", "data plane req/s", "data plane p99"}, rows...)
}
