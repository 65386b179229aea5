package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// healthSweep: figure 6. `bgd health-check` with no --service sweeps every
// service of the config; it is timed over o.services services (two real
// demo-app slots each) and over a config of one service, alternately.
// The slots are the harness's own processes: the sweep probes ports and
// records results, which does not depend on who started them.
func (b *bench) healthSweep(ctx context.Context) error {
	n := b.o.services
	sw := &SweepResult{Services: n, Slots: 2 * n}
	b.res.Sweep = sw
	dir := filepath.Join(b.work, "sweep")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var listen int // never listened on: health-check does not ask HAProxy
	if err := freePorts(&listen); err != nil {
		return err
	}
	all := map[string]any{}
	var apps []*ts.Proc
	var ports []int
	for i := range n {
		name := fmt.Sprintf("svc%03d", i)
		var slot [2]int
		if err := freePorts(&slot[0], &slot[1]); err != nil {
			return err
		}
		for j, c := range []string{"blue", "green"} {
			app, err := b.startOwn(dir, "demo-app", "", 0, demoApp(b.bgd, slot[j], c, name)...)
			if err != nil {
				return err
			}
			apps, ports = append(apps, app), append(ports, slot[j])
		}
		// The HAProxy driver: a sweep probes the slots and never asks HAProxy
		// (a builtin proxy that is not running would fail the sweep). Distinct
		// loopback hosts keep the (unused) listens apart.
		lb := map[string]any{"driver": "haproxy",
			"haproxy": map[string]any{"listen": fmt.Sprintf("127.0.%d.%d:%d", 1+i/250, 1+i%250, listen)}}
		all[name] = serviceConfig(demoCommand(b.bgd), slot[0], slot[1], lb)
	}
	for i, p := range ports {
		if err := ts.WaitListening(p, 20*time.Second, apps[i]); err != nil {
			return err
		}
	}
	allCfg, oneCfg := filepath.Join(dir, "all.yml"), filepath.Join(dir, "one.yml")
	if err := errors.Join(writeConfig(allCfg, filepath.Join(dir, "all", "state"), all),
		writeConfig(oneCfg, filepath.Join(dir, "one", "state"), map[string]any{"svc000": all["svc000"]})); err != nil {
		return err
	}
	// The three sweeps, then the floor (args nil); round 0, the first sweep
	// of each, writes the state files and is not timed.
	runs := []sweepRun{
		{"all", &sw.All, []string{"--json", "--config", allCfg, "health-check"}},
		{"one", &sw.One, []string{"--json", "--config", oneCfg, "health-check"}},
		{"one of many", &sw.OneOfMany, []string{"--json", "--config", allCfg, "--service", "svc000", "health-check"}},
		{name: "floor"},
	}
	return rounds(b.o.sweeps, runs, false, func(r sweepRun, round int) error {
		switch {
		case r.args != nil:
			res, err := b.expect(ctx, dir, 0, r.args...)
			if err == nil && round > 0 {
				*r.into = append(*r.into, timed(res))
			}
			return err
		case round > 0:
			floor, err := probeFloor(ports)
			if err == nil {
				sw.ProbeFloorMs = append(sw.ProbeFloorMs, ms(floor))
			}
			return err
		}
		return nil
	})
}

type sweepRun struct {
	name string
	into *[]Timed
	args []string
}

func (r sweepRun) String() string { return r.name }

// probeFloor times the HTTP probes a sweep of these slots cannot avoid: one
// GET /health per port, each on a new connection, 32 at a time (as bgd's
// sweep), from this already running process: no process start, no config,
// no state. The sweep's time above it is bgd's own cost.
func probeFloor(ports []int) (time.Duration, error) {
	sem := make(chan struct{}, 32)
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	start := time.Now()
	for i, p := range ports {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := ts.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p))
			if err == nil && a.Status != http.StatusOK {
				err = fmt.Errorf("port %d: /health answered %d", p, a.Status)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}
