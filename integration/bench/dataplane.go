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
	targets := []dpTarget{{"direct", loopURL(appPort)}}
	var proxy *ts.Proc
	for _, d := range []string{"builtin", "nginx", "haproxy"} {
		if d != "builtin" && !b.wants(d) {
			continue
		}
		if why := b.lbErr[d]; why != "" {
			dp.Unavailable[d] = why
			continue
		}
		lb, port, err := b.front(d, "dp")
		if err != nil {
			return err
		}
		cfg := filepath.Join(dir, d+".yml")
		dpSvc := serviceConfig(demoCommand(b.bgd), appPort, standby, lb)
		if err := writeConfig(cfg, filepath.Join(dir, d, "state"), map[string]any{"dp": dpSvc}); err != nil {
			return err
		}
		if d == "builtin" {
			// The proxy in the foreground, as systemd runs it, routing to
			// blue as the (absent) state file's defaults say.
			os.MkdirAll(filepath.Join(dir, d, "state"), 0o755)
			if proxy, err = b.startOwn(dir, "bgd proxy", "proxy.log", "--config", cfg, "proxy"); err != nil {
				return err
			}
			if err := ts.WaitListening(port, 5*time.Second, proxy); err != nil {
				return err
			}
		} else if _, err := b.expect(ctx, dir, 0, "--config", cfg, "switch", "blue"); err != nil {
			// nginx and HAProxy are configured by bgd itself.
			return fmt.Errorf("%s: %w", d, err)
		}
		targets = append(targets, dpTarget{d, loopURL(port)})
	}
	// Go's own reverse proxy, plain, beside the builtin one.
	var plainPort int
	if err := freePorts(&plainPort); err != nil {
		return err
	}
	plain, err := b.startHarness(dir, "plain-proxy.log", plainProxyArg, fmt.Sprintf("127.0.0.1:%d", plainPort), loopURL(appPort))
	if err != nil {
		return err
	}
	if err := ts.WaitListening(plainPort, 5*time.Second, plain); err != nil {
		return err
	}
	at := slices.IndexFunc(targets, func(t dpTarget) bool { return t.name == "builtin" }) + 1
	targets = slices.Insert(targets, at, dpTarget{"httputil", loopURL(plainPort)})
	for _, t := range targets {
		if err := waitAnswer(t.url, "blue", 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}

	// Round 0 is a short unrecorded warm-up per target (connection pools,
	// heap growth).
	for round := range b.o.dpRounds + 1 {
		for _, t := range targets {
			d := b.o.dpDuration
			if round == 0 {
				d = min(time.Second, d/2)
			}
			res, err := b.fixedLoad(ctx, t.url, d)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", t.name, round, err)
			}
			if round > 0 {
				dp.Runs[t.name] = append(dp.Runs[t.name], res)
				b.log.Info("data plane", "target", t.name, "round", round, "rps", int(res.RPS), "p50_ms", res.P50Ms, "p99_ms", res.P99Ms, "failures", res.Failures)
			}
		}
	}
	if dp.ProxyHWMKB, err = procStatusKB(proxy.Pid(), "VmHWM"); err != nil {
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

// startHarness runs this harness itself (args name its role, e.g.
// plainProxyArg) as the harness's own process, its output in dir/logFile.
func (b *bench) startHarness(dir, logFile string, args ...string) (*ts.Proc, error) {
	return b.startCmd(dir, args[0], logFile, exec.Command(b.exe, args...))
}

// startOwn runs bgd with args as the harness's own process, its output in
// dir/logFile ("": discarded).
func (b *bench) startOwn(dir, name, logFile string, args ...string) (*ts.Proc, error) {
	return b.startCmd(dir, name, logFile, exec.Command(b.bgd, args...))
}

// startCmd starts cmd in dir with the harness's environment, its output
// in dir/logFile ("": discarded), and tracks it for the end of the run.
func (b *bench) startCmd(dir, name, logFile string, cmd *exec.Cmd) (*ts.Proc, error) {
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
	return b.reaper.track(p), nil
}
