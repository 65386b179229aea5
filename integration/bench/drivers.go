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
	r, w, err := b.loaded(ctx, s, "--json", "--config", s.cfg, "switch", to)
	if err != nil {
		return Flip{}, err
	}
	if by, err := ts.AnsweredBy(s.url); err != nil || by != to {
		return Flip{}, fmt.Errorf("after the flip to %s, a new connection is answered by %q (%v)", to, by, err)
	}
	return Flip{To: to, SwitchMs: ms(r.Wall), InProcessMs: ms(jsonDuration(r.Stdout)), Window: w}, nil
}

// loaded runs one bgd command in a window of load: a fresh pair of wrk
// processes (new-connection and keep-alive clients) loads the service for
// pre, then the command runs, then the load goes on for post; the failures
// of the window belong to that command.
func (b *bench) loaded(ctx context.Context, s *service, args ...string) (r *ts.Run, w Window, err error) {
	nc, err := b.startWrk(s.url, ts.WrkLoad{Conns: b.o.loadConns, NewConn: true, Delay: b.o.loadDelay})
	if err != nil {
		return nil, w, err
	}
	ka, err := b.startWrk(s.url, ts.WrkLoad{Conns: b.o.loadConns, Delay: b.o.loadDelay})
	if err != nil {
		nc.Stop()
		return nil, w, err
	}
	err = sleepCtx(ctx, b.o.pre)
	if err == nil {
		r, err = b.expect(ctx, s.dir, 0, args...)
	}
	if err == nil {
		err = sleepCtx(ctx, b.o.post)
	}
	var err1, err2 error
	w.NewConn, err1 = nc.Stop()
	w.KeepAlive, err2 = ka.Stop()
	return r, w, errors.Join(err, err1, err2)
}

// canaryWeights are the steps of figure 8: a canary deploy at the first,
// `bgd canary` for the others, `bgd promote` for 100.
var canaryWeights = []int{10, 50, 90, 100}

// canaries: figure 8. A canary deploy of the idle colour goes through
// canaryWeights, each set under wrk load; after each, CountSlots counts who
// answers (the share of the canary, against the weight).
func (b *bench) canaries(ctx context.Context, s *service, dr *DriverResult) error {
	by, err := ts.AnsweredBy(s.url)
	if err != nil {
		return err
	}
	canary := map[string]string{"blue": "green", "green": "blue"}[by]
	n := 10000
	if b.o.short {
		n = 1000
	}
	for i, w := range canaryWeights {
		args := []string{"canary", strconv.Itoa(w)}
		switch {
		case i == 0:
			args = []string{"deploy", "--release", "canary", "--canary", strconv.Itoa(w)}
		case w == 100:
			args = []string{"promote"}
		}
		r, win, err := b.loaded(ctx, s, append([]string{"--json", "--config", s.cfg}, args...)...)
		if err != nil {
			return fmt.Errorf("weight %d: %w", w, err)
		}
		c := ts.CountSlots(s.url, n, 8)
		dr.Canary = append(dr.Canary, CanaryStep{Weight: w, Command: strings.Join(args, " "), WallMs: ms(r.Wall),
			Window: win, Counted: c.Requests, Failures: c.Failures, Slots: c.Slots, Canary: canary, Share: c.Share(canary)})
	}
	return nil
}

// autoRollbacks: figure 9. Bad releases deployed with --watch under load
// must be rolled back by bgd itself; good ones must never be.
func (b *bench) autoRollbacks(ctx context.Context, s *service, dr *DriverResult) error {
	bad, good, watch := 5, 20, "2s"
	if b.o.short {
		bad, good, watch = 1, 2, "1s"
	}
	// A judgement every 200 ms once 20 requests were answered, above 5%
	// errors rolls back; the demo app answers 20% of requests 500 for the
	// release "bad" only.
	cfg, err := s.variant("bgd-analysis.yml", map[string]any{
		"analysis": map[string]any{"interval": "200ms", "min_requests": 20, "max_error_rate": 0.05},
		"env":      map[string]string{"DEMO_ERROR_RATE": `{{if eq .Release "bad"}}0.2{{else}}0{{end}}`}})
	if err != nil {
		return err
	}
	for i := range good {
		r, err := b.expect(ctx, s.dir, anyExit, "--json", "--config", cfg, "deploy", "--release", fmt.Sprintf("good%02d", i+1), "--watch", watch)
		if err != nil {
			return err
		}
		dr.GoodWatches = append(dr.GoodWatches, GoodWatch{ExitCode: r.Code, WallMs: ms(r.Wall)})
		if r.Code != 0 {
			dr.Notes = append(dr.Notes, "a good release was not kept: "+strings.TrimSpace(r.Stderr))
		}
		if i%2 == 0 && i < bad*2 {
			ar, err := b.badDeploy(ctx, s, cfg)
			if err != nil {
				return err
			}
			dr.AutoRollbacks = append(dr.AutoRollbacks, ar)
		}
	}
	return nil
}

// badDeploy deploys the bad release with --watch 20s while 4 keep-alive
// clients (testsupport's Load) count the answers that failed: the 500s.
func (b *bench) badDeploy(ctx context.Context, s *service, cfg string) (AutoRollback, error) {
	load := ts.StartLoad(s.url, ts.LoadOptions{Clients: 4, KeepAlive: true, Pause: time.Millisecond})
	r, err := b.expect(ctx, s.dir, anyExit, "--json", "--config", cfg, "deploy", "--release", "bad", "--watch", "20s")
	time.Sleep(300 * time.Millisecond)
	c := load.Stop()
	if err != nil {
		return AutoRollback{}, err
	}
	ar := AutoRollback{ExitCode: r.Code, BadAnswers: c.Failures, Requests: c.Requests, WallMs: ms(r.Wall),
		FirstToLastMs: ms(c.LastFailure.Sub(c.FirstFailure))}
	if by, err := ts.AnsweredBy(s.url); r.Code != 1 || err != nil || by == "" {
		return ar, fmt.Errorf("the bad release was not rolled back (exit %d, answered by %q, %v): %s", r.Code, by, err, strings.TrimSpace(r.Stderr))
	}
	return ar, nil
}
