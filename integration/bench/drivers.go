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

	ts "github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/slots"
)

// service is one bench service ("app") behind one driver, run by bgd as a
// user would: bgd starts its slots and, for builtin, its proxy.
type service struct {
	dir       string // working directory of every bgd command
	cfg       string // the demo app with --ready-after
	crashCfg  string // the same service whose slot command exits at once
	stamps    string // where the crashing app writes the moment it exits
	url       string // where clients reach the service
	stateFile string
}

// crashAppArg makes this harness the crashing slot: it records the moment
// it exits, then exits 3 (bgd must notice at once, not after health.timeout).
const crashAppArg = "crash-app"

func crashApp(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: bench crash-app STAMP-FILE")
		return 2
	}
	fmt.Fprintln(os.Stderr, "crash-app: exiting at once, as a slot that crashes at start")
	os.WriteFile(args[0], []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644)
	return 3
}

// setupService writes the configs of the driver's service and starts its
// slots (blue active, green healthy standby). It returns a nil service, and
// says why in dr, when the driver's load balancer is not installed.
func (b *bench) setupService(ctx context.Context, dr *DriverResult) (*service, error) {
	driver := dr.Driver
	if why := b.lbErr[driver]; why != "" {
		dr.Unavailable = why
		b.log.Warn("driver not measured", "driver", driver, "why", why)
		return nil, nil
	}
	dir := filepath.Join(b.work, driver)
	s := &service{dir: dir, cfg: filepath.Join(dir, "bgd.yml"), crashCfg: filepath.Join(dir, "bgd-crash.yml"),
		stamps: filepath.Join(dir, "stamps"), stateFile: filepath.Join(dir, "state", "bg_state.json")}
	if err := os.MkdirAll(s.stamps, 0o755); err != nil {
		return nil, err
	}
	var blue, green int
	if driver == "haproxy" {
		blue, green = b.haApp.blue, b.haApp.grn
	} else if err := freePorts(&blue, &green); err != nil {
		return nil, err
	}
	lb, port, err := b.front(driver, "app")
	if err != nil {
		return nil, err
	}
	s.url = loopURL(port)
	cfg := func(path string, command ...string) error {
		return writeConfig(path, filepath.Join(dir, "state"), map[string]any{"app": serviceConfig(command, blue, green, lb)})
	}
	if err := errors.Join(cfg(s.cfg, demoCommand(b.bgd, "--ready-after", b.o.readyAfter.String())...),
		cfg(s.crashCfg, b.exe, crashAppArg, filepath.Join(s.stamps, "{{.Release}}"))); err != nil {
		return nil, err
	}
	for _, c := range []string{"blue", "green"} {
		if _, err := b.expect(ctx, dir, 0, "--config", s.cfg, "start", c); err != nil {
			return nil, err
		}
	}
	// bgd said blue is running and healthy and routed: the load balancer
	// should answer from it at once. HAProxy may still be running its own
	// checks (a `start` that finds the map already right does not wait for
	// them): wait, and record how long, rather than fail the whole run.
	t0 := time.Now()
	if err := waitAnswer(s.url, "blue", 10*time.Millisecond); err != nil {
		return nil, fmt.Errorf("after start, %w", err)
	}
	if w := time.Since(t0); w > 50*time.Millisecond {
		b.log.Warn("the load balancer did not serve blue at once after `bgd start blue`", "driver", driver, "waited", w.Round(time.Millisecond))
		dr.Notes = append(dr.Notes, fmt.Sprintf("after `bgd start blue` returned, the load balancer answered from blue only %s later",
			w.Round(time.Millisecond)))
	}
	return s, nil
}

// driverPhases measures figures 1-4, 8 and 9 (and the status process's memory) on
// one driver, then stops its slots.
func (b *bench) driverPhases(ctx context.Context, dr *DriverResult) error {
	s, err := b.setupService(ctx, dr)
	if s == nil {
		return err
	}
	defer b.reaper.killState(s.stateFile)
	// runs times n bgd processes, each of which must exit code; keep (when
	// not nil) adds to what is kept of run i.
	runs := func(into *[]Timed, n, code int, args func(i int) []string, keep func(int, *ts.Run, *Timed) error) func() error {
		return func() error {
			for i := range n {
				r, err := b.expect(ctx, s.dir, code, args(i)...)
				if err != nil {
					return err
				}
				t := timed(r)
				if keep != nil {
					if err := keep(i, r, &t); err != nil {
						return err
					}
				}
				*into = append(*into, t)
			}
			return nil
		}
	}
	release := func(prefix string, i int) string { return fmt.Sprintf("%s%02d", prefix, i+1) }
	steps := []struct {
		name string
		f    func() error
	}{
		// Figure 1 (and the switch time under load).
		{"flips under load", func() error { return b.flipsUnderLoad(ctx, s, dr) }},
		// Figure 2: `bgd switch` as a whole process, no load, target healthy.
		{"idle flips", runs(&dr.IdleFlips, b.o.flips, 0, func(i int) []string {
			return []string{"--json", "--config", s.cfg, "switch", flipTo(i)}
		}, nil)},
		// Figure 7's second half: one `bgd status` process's peak RSS.
		{"status", runs(&dr.Status, b.o.statusRuns, 0, func(int) []string {
			return []string{"--json", "--config", s.cfg, "status"}
		}, nil)},
		// Figure 3: `bgd deploy` wall time minus the app's --ready-after.
		{"deploys", runs(&dr.Deploys, b.o.deploys, 0, func(i int) []string {
			return []string{"--json", "--verbose", "--config", s.cfg, "deploy", "--release", release("d", i)}
		}, func(_ int, r *ts.Run, t *Timed) error {
			t.Log, t.OverheadMs = logLines(r.Stderr), ms(r.Wall-b.o.readyAfter)
			return nil
		})},
		// Figure 4: from the moment the starting slot's process exits to the
		// moment `bgd deploy` has failed (its process ended, exit 1).
		{"crashing deploys", func() error {
			before, _ := ts.AnsweredBy(s.url)
			err := runs(&dr.Crashes, b.o.crashes, 1, func(i int) []string {
				return []string{"--json", "--verbose", "--config", s.crashCfg, "deploy", "--release", release("c", i)}
			}, func(i int, r *ts.Run, t *Timed) error {
				data, err := os.ReadFile(filepath.Join(s.stamps, release("c", i)))
				if err != nil {
					return fmt.Errorf("the crashing slot never ran: %w; bgd said: %s", err, strings.TrimSpace(r.Stderr))
				}
				exitNS, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				t.Log, t.DetectMs = logLines(r.Stderr), ms(r.End.Sub(time.Unix(0, exitNS)))
				return err
			})()
			if after, aerr := ts.AnsweredBy(s.url); err == nil && (aerr != nil || after != before) {
				err = fmt.Errorf("traffic moved during failed deploys: %q before, %q after (%v)", before, after, aerr)
			}
			return err
		}},
		// Figure 8: a canary's weights under load, and its split.
		{"canary", func() error { return b.canaries(ctx, s, dr) }},
		// Figure 9: bad releases rolled back by the analysis, good ones kept.
		{"automatic rollback", func() error { return b.autoRollbacks(ctx, s, dr) }},
	}
	var errs []error
	for _, st := range steps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Info("measuring", "driver", dr.Driver, "what", st.name)
		if err := st.f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
			dr.Errors = append(dr.Errors, st.name+": "+err.Error())
		}
	}
	return errors.Join(errs...)
}

// flipsUnderLoad: figure 1. For each flip a fresh pair of wrk processes
// (new-connection and keep-alive clients) loads the service for pre, then
// `bgd switch` runs, then the load goes on for post; the failures of that
// window belong to that flip.
func (b *bench) flipsUnderLoad(ctx context.Context, s *service, dr *DriverResult) error {
	for i := range b.o.flips {
		f, err := b.oneLoadedFlip(ctx, s, flipTo(i))
		if err != nil {
			return fmt.Errorf("flip %d to %s: %w", i+1, flipTo(i), err)
		}
		dr.Flips = append(dr.Flips, *f)
	}
	if b.o.flips%2 == 1 {
		// Leave blue active for the idle flips.
		if _, err := b.expect(ctx, s.dir, 0, "--config", s.cfg, "switch", "blue"); err != nil {
			return err
		}
	}
	if dr.Driver == "builtin" {
		for _, id := range slots.FindMarked(slots.ProxyMarker(s.stateFile, "app")) {
			dr.ProxyHWMKB, _ = procStatusKB(id.PID, "VmHWM")
		}
	}
	return nil
}

// flipTo is the colour the i-th of a series of flips from blue goes to.
func flipTo(i int) string { return []string{"green", "blue"}[i%2] }

func (b *bench) oneLoadedFlip(ctx context.Context, s *service, to string) (*Flip, error) {
	nc, err := b.startWrk(s.url, ts.WrkLoad{Conns: b.o.loadConns, NewConn: true, Delay: b.o.loadDelay})
	if err != nil {
		return nil, err
	}
	ka, err := b.startWrk(s.url, ts.WrkLoad{Conns: b.o.loadConns, Delay: b.o.loadDelay})
	if err != nil {
		nc.Stop()
		return nil, err
	}
	var r *ts.Run
	werr := sleepCtx(ctx, b.o.pre)
	if werr == nil {
		r, werr = b.expect(ctx, s.dir, 0, "--json", "--config", s.cfg, "switch", to)
	}
	if werr == nil {
		werr = sleepCtx(ctx, b.o.post)
	}
	ncRes, err1 := nc.Stop()
	kaRes, err2 := ka.Stop()
	if err := errors.Join(werr, err1, err2); err != nil {
		return nil, err
	}
	by, err := ts.AnsweredBy(s.url)
	if err != nil || by != to {
		return nil, fmt.Errorf("after the flip to %s, a new connection is answered by %q (%v)", to, by, err)
	}
	return &Flip{To: to, SwitchMs: ms(r.Wall), InProcessMs: ms(jsonDuration(r.Stdout)), NewConn: ncRes, KeepAlive: kaRes}, nil
}

// waitAnswer waits up to 10 s, asking every so often on a new
// connection, until the colour answers at url. HAProxy's own checks, for
// one, see a backend UP only a few checks after its app started.
func waitAnswer(url, color string, every time.Duration) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		by, err := ts.AnsweredBy(url)
		if err == nil && by == color {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s answers from %q (%v), want %s", url, by, err, color)
		}
		time.Sleep(every)
	}
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

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
