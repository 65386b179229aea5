package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	dp := &DataPlane{Unavailable: map[string]string{}, Runs: map[string][]wrkResult{}}
	b.res.DataPlane = dp
	dir := filepath.Join(b.work, "dataplane")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var appPort, standby int
	if b.haDP != nil {
		appPort, standby = b.haDP.blue, b.haDP.grn
	} else {
		var err error
		if appPort, err = b.ports.get(); err != nil {
			return err
		}
		if standby, err = b.ports.get(); err != nil {
			return err
		}
	}
	app, err := b.startDemoApp(dir, appPort, "blue", "dp")
	if err != nil {
		return err
	}
	if err := waitListening(appPort, 5*time.Second, app); err != nil {
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
	pxPort, err := b.ports.get()
	if err != nil {
		return err
	}
	cfg, err := config("builtin", builtinLB(pxPort))
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(dir, "builtin", "state"), 0o755)
	log, err := os.Create(filepath.Join(dir, "proxy.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(b.cli.bin, "--config", cfg, "proxy")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, b.cli.env, log, log
	proxy, err := b.reaper.start("bgd proxy", cmd)
	if err != nil {
		return err
	}
	if err := waitListening(pxPort, 5*time.Second, proxy); err != nil {
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
		var lb map[string]any
		var url string
		if d == "nginx" {
			port, err := b.ports.get()
			if err != nil {
				return err
			}
			lb, url = b.nginx.lbConfig("dp", port), fmt.Sprintf("http://127.0.0.1:%d/", port)
		} else {
			lb, url = b.haDP.lbConfig(), fmt.Sprintf("http://127.0.0.1:%d/", b.haDP.port)
		}
		cfg, err := config(d, lb)
		if err != nil {
			return err
		}
		r, err := b.cli.run(ctx, dir, "--config", cfg, "switch", "blue")
		if err != nil {
			return err
		}
		if notAvailable(r) {
			dp.Unavailable[d] = "driver not available: " + strings.TrimSpace(strings.TrimPrefix(r.Stderr, "bgd: "))
			continue
		}
		if r.Code != 0 {
			return fmt.Errorf("%s: bgd switch blue exited %d: %s", d, r.Code, strings.TrimSpace(r.Stderr))
		}
		targets = append(targets, dpTarget{d, url})
	}
	for _, t := range targets {
		// HAProxy's own checks see the backend UP only a few checks after
		// the app started.
		deadline := time.Now().Add(10 * time.Second)
		for {
			by, err := answeredBy(t.url)
			if err == nil && by == "blue" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s (%s) answers from %q: %v", t.name, t.url, by, err)
			}
			time.Sleep(50 * time.Millisecond)
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
	dp.ProxyHWMKB, err = procStatusKB(proxy.pid(), "VmHWM")
	if err != nil {
		return err
	}
	dp.ProxyRSSKB, _ = procStatusKB(proxy.pid(), "VmRSS")
	return nil
}

// fixedLoad runs wrk at full speed (no pacing) against url for d.
func (b *bench) fixedLoad(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	w, err := startWrk(b.reaper, b.wrk, b.work, url, wrkLoad{conns: b.o.dpConns})
	if err != nil {
		return wrkResult{}, err
	}
	serr := sleepCtx(ctx, d)
	res, err := w.stop()
	if serr != nil {
		return res, serr
	}
	return res, err
}

func (b *bench) wants(driver string) bool {
	for _, d := range b.o.drivers {
		if d == driver {
			return true
		}
	}
	return false
}

// startDemoApp runs `bgd demo-app` as the harness's own process.
func (b *bench) startDemoApp(dir string, port int, color, release string) (*proc, error) {
	cmd := exec.Command(b.cli.bin, "demo-app", "--port", strconv.Itoa(port), "--color", color, "--release", release)
	cmd.Dir, cmd.Env = dir, b.cli.env
	return b.reaper.start("demo-app", cmd)
}
