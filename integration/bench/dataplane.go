package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// dpTarget is one way to reach the data-plane backend.
type dpTarget struct {
	name, url string
}

// dataPlane: figure 5 and the first half of figure 7. One demo app is the
// backend of all: wrk loads it directly, then through the builtin proxy
// (`bgd proxy`, as systemd runs it), nginx and HAProxy (both configured by
// `bgd switch blue`), in interleaved rounds so that a noisy neighbour
// weighs on every target alike.
func (b *bench) dataPlane(ctx context.Context) error {
	dp := &DataPlane{Unavailable: map[string]string{}, Runs: map[string][]ts.WrkResult{}}
	b.res.DataPlane = dp
	dir := filepath.Join(b.work, "dataplane")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var appPort, standby int
	if b.haDP != nil {
		appPort, standby = b.haDP.blue, b.haDP.grn
	} else if err := freePorts(&appPort, &standby); err != nil {
		return err
	}
	app, err := b.startDemoApp(dir, appPort, "blue", "dp")
	if err != nil {
		return err
	}
	if err := ts.WaitListening(appPort, 5*time.Second, app); err != nil {
		return err
	}
	targets := []dpTarget{{"direct", fmt.Sprintf("http://127.0.0.1:%d/", appPort)}}
	config := func(name string, lb map[string]any) (string, error) {
		path := filepath.Join(dir, name+".yml")
		return path, writeConfig(path, map[string]any{"state_dir": filepath.Join(dir, name, "state"),
			"services": map[string]any{"dp": serviceConfig(demoCommand(b.cli.bin), appPort, standby, lb)}})
	}

	// builtin: the proxy in the foreground, as systemd runs it, routing to
	// blue as the (absent) state file's defaults say.
	var pxPort int
	if err := freePorts(&pxPort); err != nil {
		return err
	}
	cfg, err := config("builtin", builtinLB(pxPort))
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(dir, "builtin", "state"), 0o755)
	proxy, err := b.startOwn(dir, "bgd proxy", "proxy.log", "--config", cfg, "proxy")
	if err != nil {
		return err
	}
	if err := ts.WaitListening(pxPort, 5*time.Second, proxy); err != nil {
		return err
	}
	targets = append(targets, dpTarget{"builtin", fmt.Sprintf("http://127.0.0.1:%d/", pxPort)})

	// nginx and HAProxy, configured by bgd itself.
	for _, d := range []string{"nginx", "haproxy"} {
		if !b.wants(d) {
			continue
		}
		if why := b.lbErr[d]; why != "" {
			dp.Unavailable[d] = why
			continue
		}
		lb, url := b.haDP.lb(), b.haDP.url()
		if d == "nginx" {
			var port int
			if err := freePorts(&port); err != nil {
				return err
			}
			lb, url = b.nginxLB("dp", port), fmt.Sprintf("http://127.0.0.1:%d/", port)
		}
		cfg, err := config(d, lb)
		if err != nil {
			return err
		}
		if _, why, err := b.cli.try(ctx, dir, "--config", cfg, "switch", "blue"); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		} else if why != "" {
			dp.Unavailable[d] = why
			continue
		}
		targets = append(targets, dpTarget{d, url})
	}
	for _, t := range targets {
		if err := waitAnswer(t.url, "blue", 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}

	// A short unrecorded warm-up per target (connection pools, heap growth).
	for _, t := range targets {
		if _, err := b.fixedLoad(ctx, t.url, min(time.Second, b.o.dpDuration/2)); err != nil {
			return fmt.Errorf("%s warm-up: %w", t.name, err)
		}
	}
	for round := range b.o.dpRounds {
		for _, t := range targets {
			res, err := b.fixedLoad(ctx, t.url, b.o.dpDuration)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", t.name, round+1, err)
			}
			dp.Runs[t.name] = append(dp.Runs[t.name], res)
			b.log.Info("data plane", "target", t.name, "round", round+1, "rps", int(res.RPS), "p50_ms", res.P50Ms, "p99_ms", res.P99Ms, "failures", res.Failures)
		}
	}
	dp.ProxyHWMKB, err = procStatusKB(proxy.Pid(), "VmHWM")
	if err != nil {
		return err
	}
	dp.ProxyRSSKB, _ = procStatusKB(proxy.Pid(), "VmRSS")
	return nil
}

// fixedLoad runs wrk at full speed (no pacing) against url for d.
func (b *bench) fixedLoad(ctx context.Context, url string, d time.Duration) (ts.WrkResult, error) {
	w, err := b.startWrk(url, ts.WrkLoad{Conns: b.o.dpConns})
	if err != nil {
		return ts.WrkResult{}, err
	}
	serr := sleepCtx(ctx, d)
	res, err := w.Stop()
	if serr != nil {
		return res, serr
	}
	return res, err
}

func (b *bench) wants(driver string) bool { return slices.Contains(b.o.drivers, driver) }

// startDemoApp runs `bgd demo-app` as the harness's own process.
func (b *bench) startDemoApp(dir string, port int, color, release string) (*ts.Proc, error) {
	return b.startOwn(dir, "demo-app", "", "demo-app", "--port", strconv.Itoa(port), "--color", color, "--release", release)
}

// startOwn runs bgd with args as the harness's own process, its output in
// dir/logFile ("": discarded).
func (b *bench) startOwn(dir, name, logFile string, args ...string) (*ts.Proc, error) {
	cmd := exec.Command(b.cli.bin, args...)
	cmd.Dir, cmd.Env = dir, b.cli.env
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
	return b.reaper.track(p), nil
}
