package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/slots"
)

// service is one bench service run by bgd as a user would: bgd starts its
// slots and, for builtin, its proxy.
type service struct {
	name, dir string
	cfg       string         // dir/bgd.yml: the demo app
	svc       map[string]any // the service's settings in cfg
	url       string         // where clients reach the service
	stateFile string
	late      time.Duration // how long after `bgd start` the balancer answered from blue
}

// startService writes dir/bgd.yml, service name (the demo app with extra
// flags) on the ports blue and green behind lb, and starts its slots: blue
// active and routed, green a healthy standby. bgd said blue is routed, so
// the balancer should answer from it at once; HAProxy may still run its own
// checks (a `start` that finds the map right does not wait for them): wait,
// and record how long in late, rather than fail the run.
func (b *bench) startService(ctx context.Context, dir, name string, port, blue, green int, lb map[string]any, extra ...string) (*service, error) {
	s := &service{name: name, dir: dir, cfg: filepath.Join(dir, "bgd.yml"), url: loopURL(port),
		stateFile: filepath.Join(dir, "state", "bg_state.json"), svc: serviceConfig(demoCommand(b.bgd, extra...), blue, green, lb)}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeConfig(s.cfg, filepath.Join(dir, "state"), map[string]any{name: s.svc}); err != nil {
		return nil, err
	}
	for _, c := range []string{"blue", "green"} {
		if _, err := b.expect(ctx, dir, 0, "--config", s.cfg, "start", c); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if err := ts.WaitAnswer(s.url, "blue", 10*time.Second, 10*time.Millisecond); err != nil {
		return nil, fmt.Errorf("after start, %w", err)
	}
	s.late = time.Since(t0)
	return s, nil
}

// variant writes dir/file: the same service with some settings changed.
func (s *service) variant(file string, set map[string]any) (string, error) {
	svc := maps.Clone(s.svc)
	maps.Copy(svc, set)
	path := filepath.Join(s.dir, file)
	return path, writeConfig(path, filepath.Join(s.dir, "state"), map[string]any{s.name: svc})
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

// driverPhases measures figures 1-4, 8, 9 and the status process's memory
// on one driver's service "app", then stops its slots. A driver whose load
// balancer is missing is left out, dr saying why.
func (b *bench) driverPhases(ctx context.Context, dr *DriverResult) error {
	d := dr.Driver
	if why := b.lbErr[d]; why != "" {
		dr.Unavailable = why
		b.log.Warn("driver not measured", "driver", d, "why", why)
		return nil
	}
	var blue, green int
	if d == "haproxy" {
		blue, green = b.haApp.blue, b.haApp.grn
	} else if err := freePorts(&blue, &green); err != nil {
		return err
	}
	lb, port, err := b.front(d, "app")
	if err != nil {
		return err
	}
	dir := filepath.Join(b.work, d)
	s, err := b.startService(ctx, dir, "app", port, blue, green, lb, "--ready-after", b.o.readyAfter.String())
	if err != nil {
		return err
	}
	defer b.reaper.killState(s.stateFile)
	if s.late > 50*time.Millisecond {
		w := s.late.Round(time.Millisecond)
		b.log.Warn("the load balancer did not serve blue at once after `bgd start blue`", "driver", d, "waited", w)
		dr.Notes = append(dr.Notes, fmt.Sprintf("after `bgd start blue` returned, the load balancer answered from blue only %s later", w))
	}
	stamps := filepath.Join(dir, "stamps")
	if err := os.MkdirAll(stamps, 0o755); err != nil {
		return err
	}
	crashCfg, err := s.variant("bgd-crash.yml", map[string]any{"command": []string{b.exe, crashAppArg, filepath.Join(stamps, "{{.Release}}")}})
	if err != nil {
		return err
	}
	// runs times n bgd processes (args of the i-th), each of which must exit
	// code; keep (when not nil) adds to what is kept of the i-th.
	runs := func(into *[]Timed, n, code int, args func(i int) []string, keep func(int, *ts.Run, *Timed) error) func() error {
		return func() error {
			for i := range n {
				r, err := b.expect(ctx, dir, code, args(i)...)
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
	var errs []error
	for _, st := range []struct {
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
				return []string{"--json", "--verbose", "--config", crashCfg, "deploy", "--release", release("c", i)}
			}, func(i int, r *ts.Run, t *Timed) error {
				data, err := os.ReadFile(filepath.Join(stamps, release("c", i)))
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
	} {
		if err := b.step(ctx, st.name, &dr.Errors, st.f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
		}
	}
	return errors.Join(errs...)
}

// flipsUnderLoad: figure 1, a loadedFlip after the other.
func (b *bench) flipsUnderLoad(ctx context.Context, s *service, dr *DriverResult) error {
	for i := range b.o.flips {
		f, err := b.loadedFlip(ctx, s, flipTo(i))
		if err != nil {
			return fmt.Errorf("flip %d to %s: %w", i+1, flipTo(i), err)
		}
		dr.Flips = append(dr.Flips, f)
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

// loadedFlip is one `bgd switch` in a loaded window.
func (b *bench) loadedFlip(ctx context.Context, s *service, to string) (Flip, error) {
	r, nc, ka, err := b.loaded(ctx, s, "--json", "--config", s.cfg, "switch", to)
	if err != nil {
		return Flip{}, err
	}
	if by, err := ts.AnsweredBy(s.url); err != nil || by != to {
		return Flip{}, fmt.Errorf("after the flip to %s, a new connection is answered by %q (%v)", to, by, err)
	}
	return Flip{To: to, SwitchMs: ms(r.Wall), InProcessMs: ms(jsonDuration(r.Stdout)), NewConn: nc, KeepAlive: ka}, nil
}

// loaded runs one bgd command in a window of load: a fresh pair of wrk
// processes (new-connection and keep-alive clients) loads the service for
// pre, then the command runs, then the load goes on for post; the failures
// of the window belong to that command.
func (b *bench) loaded(ctx context.Context, s *service, args ...string) (r *ts.Run, nc, ka ts.WrkResult, err error) {
	var ws []*ts.Wrk
	for _, newConn := range []bool{true, false} {
		w, err := b.startWrk(s.url, ts.WrkLoad{Conns: b.o.loadConns, NewConn: newConn, Delay: b.o.loadDelay})
		if err != nil {
			for _, w := range ws {
				w.Stop()
			}
			return nil, nc, ka, err
		}
		ws = append(ws, w)
	}
	err = sleepCtx(ctx, b.o.pre)
	if err == nil {
		r, err = b.expect(ctx, s.dir, 0, args...)
	}
	if err == nil {
		err = sleepCtx(ctx, b.o.post)
	}
	nc, err1 := ws[0].Stop()
	ka, err2 := ws[1].Stop()
	return r, nc, ka, errors.Join(err, err1, err2)
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
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
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
