package orchestrator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// observedLB is a splitting test driver that counts answers: each colour's
// observation is a function of how often that colour was observed.
type observedLB struct {
	splitLB
	seen    map[config.Color]func(n int) lb.Observation
	calls   map[config.Color]int
	failing error
}

func (b *observedLB) Observe(ctx context.Context, u lb.Upstream) (lb.Observation, error) {
	if b.failing != nil {
		return lb.Observation{}, b.failing
	}
	n := b.calls[u.Color]
	b.calls[u.Color]++
	if f := b.seen[u.Color]; f != nil {
		return f(n), nil
	}
	return lb.Observation{}, nil
}

// steady is a slot answering per observation `requests`, `errors` of
// them failed, each within le.
func steady(requests, errors uint64, le time.Duration) func(int) lb.Observation {
	return func(n int) lb.Observation {
		r, e := uint64(n)*requests, uint64(n)*errors
		return lb.Observation{Requests: r, Errors: e, Buckets: []lb.Bucket{
			{LE: 10 * time.Millisecond, Count: map[bool]uint64{true: r, false: 0}[le <= 10*time.Millisecond]},
			{LE: time.Second, Count: r}}}
	}
}

func analysisRig(t *testing.T, green func(int) lb.Observation, edit func(*config.Analysis)) (*rig, *observedLB) {
	t.Helper()
	b := &observedLB{splitLB: splitLB{testLB{active: "blue"}}, calls: map[config.Color]int{},
		seen: map[config.Color]func(int) lb.Observation{"green": green, "blue": steady(100, 0, 5*time.Millisecond)}}
	r := newRig(t, b, func(s *config.Service) {
		s.Analysis.Interval = config.Duration(time.Millisecond)
		s.Analysis.MinRequests = 50
		if edit != nil {
			edit(&s.Analysis)
		}
	})
	r.slot("blue", "v1")
	return r, b
}

func TestWatchedDeploy(t *testing.T) {
	cases := []struct {
		name      string
		green     func(int) lb.Observation
		edit      func(*config.Analysis)
		wantBack  bool   // rolled back by itself
		wantInErr string // or in the message when it passed
	}{
		{name: "a good release passes", green: steady(100, 0, 5*time.Millisecond),
			wantInErr: "green passed analysis over"},
		{name: "errors above the rate roll back", green: steady(100, 10, 5*time.Millisecond), wantBack: true,
			wantInErr: "error rate 10.00% (10 of 100 requests) is above analysis.max_error_rate 1.00%"},
		{name: "errors at the rate pass", green: steady(100, 1, 5*time.Millisecond),
			wantInErr: "green passed analysis"},
		{name: "max_error_rate 0 tolerates none", green: steady(100, 1, 5*time.Millisecond), wantBack: true,
			edit:      func(a *config.Analysis) { zero := 0.0; a.MaxErrorRate = &zero },
			wantInErr: "error rate 1.00%"},
		{name: "too few requests are not judged", green: steady(10, 10, 5*time.Millisecond),
			edit:      func(a *config.Analysis) { a.MinRequests = 1000 },
			wantInErr: "(analysis.min_requests: 1000): not judged"},
		{name: "p99 above max_p99", green: steady(100, 0, 500*time.Millisecond), wantBack: true,
			edit:      func(a *config.Analysis) { a.MaxP99 = config.Duration(100 * time.Millisecond) },
			wantInErr: "p99 latency 1s is above analysis.max_p99 100ms"},
		{name: "p99 ratio against the old slot", green: steady(100, 0, 500*time.Millisecond), wantBack: true,
			edit:      func(a *config.Analysis) { a.MaxP99Ratio = 2 },
			wantInErr: "p99 latency 1s is 100.0 times the other slot's 10ms, above analysis.max_p99_ratio 2"},
		{name: "a counter reset counts from zero", green: func(n int) lb.Observation {
			if n == 0 {
				return lb.Observation{Requests: 5000}
			}
			return lb.Observation{Requests: uint64(n) * 100, Errors: uint64(n) * 50}
		}, wantBack: true, wantInErr: "error rate 50.00%"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, b := analysisRig(t, c.green, c.edit)
			res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Watch: 5 * time.Millisecond})
			st := r.state()
			if c.wantBack {
				if !errors.Is(err, ErrFailed) || !errors.Is(err, errAnalysisFailed) || !strings.Contains(err.Error(), c.wantInErr) ||
					!strings.Contains(err.Error(), "rolled back to blue by itself") {
					t.Fatalf("deploy = %+v, %v; want an automatic rollback saying %q", res, err, c.wantInErr)
				}
				e := lastEvent(st)
				if st.ActiveVersion != "blue" || b.active != "blue" || e.Status != state.StatusAutoRolledBack || e.Release != "v2" ||
					!r.o.running(st, "green") || !strings.Contains(e.Reason, c.wantInErr) {
					t.Errorf("after the rollback: active %s (lb %s), event %+v, green running %v", st.ActiveVersion, b.active, e, r.o.running(st, "green"))
				}
				return
			}
			if err != nil || !strings.Contains(res.Message, c.wantInErr) || res.Analysis == nil || res.Analysis.Failed || st.ActiveVersion != "green" {
				t.Fatalf("deploy = %+v, %v; want it kept, saying %q", res, err, c.wantInErr)
			}
			if e := lastEvent(st); e.Action != "deploy" || e.Status != state.StatusSuccess {
				t.Errorf("last event %+v", e)
			}
		})
	}
}

func TestWatchRefusals(t *testing.T) {
	t.Run("a driver that counts nothing", func(t *testing.T) {
		b := &testLB{active: "blue"}
		r := newRig(t, b)
		r.slot("blue", "v1")
		_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Watch: time.Second})
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "analysis needs a load balancer that counts") ||
			len(r.host.started) != 0 || len(b.flips) != 0 {
			t.Fatalf("deploy --watch on a driver without counts = %v (%d starts, %d flips)", err, len(r.host.started), len(b.flips))
		}
	})
	t.Run("nginx without an access log", func(t *testing.T) {
		r, _ := analysisRig(t, nil, nil)
		r.o.svc.LB.Driver = "nginx"
		if _, err := r.o.observer(); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "lb.nginx.access_log") {
			t.Fatalf("observer of nginx without access_log = %v", err)
		}
	})
	for _, c := range []struct {
		name string
		d    DeployOptions
		want string
	}{
		{"with --no-switch", DeployOptions{Watch: time.Second, NoSwitch: true}, "choose one"},
		{"with a canary", DeployOptions{Watch: time.Second, Canary: 10}, "each --step-interval"},
		{"negative", DeployOptions{Watch: -time.Second}, "negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := analysisRig(t, nil, nil)
			if _, err := r.o.Deploy(ctx, c.d); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("deploy %+v = %v, want %q", c.d, err, c.want)
			}
		})
	}
	t.Run("a load balancer that cannot be asked", func(t *testing.T) {
		r, b := analysisRig(t, steady(100, 0, time.Millisecond), nil)
		b.failing = errors.New("stats socket gone")
		_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Watch: 5 * time.Millisecond})
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "release v2 is live on green, but watch green: stats socket gone") ||
			r.state().ActiveVersion != "green" {
			t.Fatalf("deploy --watch with an unreachable load balancer = %v (active %s)", err, r.state().ActiveVersion)
		}
	})
}

func TestAnalysisWindowFromConfig(t *testing.T) {
	r, _ := analysisRig(t, steady(100, 50, time.Millisecond), func(a *config.Analysis) { a.Window = config.Duration(5 * time.Millisecond) })
	// analysis.window alone makes a deploy watch; --no-switch never does.
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", NoSwitch: true}); err != nil {
		t.Fatalf("deploy --no-switch with analysis.window: %v", err)
	}
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v3"}); !errors.Is(err, errAnalysisFailed) {
		t.Fatalf("deploy with analysis.window and a failing release = %v, want an automatic rollback", err)
	}
}

func TestCanaryStepJudgedByAnalysis(t *testing.T) {
	r, b := analysisRig(t, steady(100, 30, time.Millisecond), nil)
	_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Steps: []int{10, 50}, StepInterval: 5 * time.Millisecond})
	st := r.state()
	if !errors.Is(err, errAnalysisFailed) || !strings.Contains(err.Error(), "the canary green failed at 10%") || st.Canary != nil ||
		lastFlip(&b.splitLB) != "blue" || r.o.running(st, "green") {
		t.Fatalf("canary with a failing analysis = %v; state %+v", err, st.Canary)
	}
	if e := lastEvent(st); e.Action != "deploy" || e.Status != state.StatusFailed {
		t.Errorf("last event %+v", e)
	}
	var abort state.Event
	for _, e := range st.History {
		if e.Action == "abort" {
			abort = e
		}
	}
	if abort.Status != state.StatusAutoRolledBack || !strings.Contains(abort.Reason, "error rate 30.00%") {
		t.Errorf("abort event %+v, want auto_rolled_back with the error rate", abort)
	}
}

// TestSweepEnforcesTheWatch: a deploy's watch or a canary's, recorded in
// the state, is judged by health sweeps too (the deploy may have died):
// failing, it is rolled back or aborted; a deploy's watch ends at Until.
func TestSweepEnforcesTheWatch(t *testing.T) {
	future := func() time.Time { return state.Now().Add(time.Hour) }
	t.Run("a failing release under a deploy's watch is rolled back", func(t *testing.T) {
		r, b := analysisRig(t, steady(100, 20, time.Millisecond), nil)
		r.slot("green", "v2")
		r.store.st.ActiveVersion, b.active = "green", "green"
		r.store.st.Watch = &state.Watch{Color: "green", Release: "v2", Since: state.Now(), Until: future()}
		b.calls["green"] = 1 // 100 requests since the watch began
		sw, err := r.o.HealthSweep(ctx)
		st := r.state()
		if err != nil || st.ActiveVersion != "blue" || b.active != "blue" || st.Watch != nil || len(sw.Actions) != 1 ||
			!strings.Contains(sw.Actions[0], "rolled back to blue by itself") {
			t.Fatalf("sweep: %+v %v; active %s watch %+v", sw, err, st.ActiveVersion, st.Watch)
		}
		if e := lastEvent(st); e.Status != state.StatusAutoRolledBack || e.Release != "v2" {
			t.Errorf("last event %+v", e)
		}
	})
	t.Run("a good release's watch ends at its end", func(t *testing.T) {
		r, b := analysisRig(t, steady(100, 0, time.Millisecond), nil)
		r.slot("green", "v2")
		r.store.st.ActiveVersion, b.active = "green", "green"
		r.store.st.Watch = &state.Watch{Color: "green", Since: state.Now().Add(-time.Minute), Until: state.Now().Add(-time.Second)}
		b.calls["green"] = 1
		sw, err := r.o.HealthSweep(ctx)
		if err != nil || r.state().Watch != nil || r.state().ActiveVersion != "green" || len(sw.Actions) != 1 || !strings.Contains(sw.Actions[0], "green ended its watch") {
			t.Fatalf("sweep: %+v %v", sw, err)
		}
	})
	t.Run("a watch of what no longer routes is dropped", func(t *testing.T) {
		r, _ := analysisRig(t, steady(100, 50, time.Millisecond), nil)
		r.store.st.Watch = &state.Watch{Color: "green", Since: state.Now(), Until: future()}
		sw, err := r.o.HealthSweep(ctx)
		if err != nil || r.state().Watch != nil || len(sw.Actions) != 0 || r.state().ActiveVersion != "blue" {
			t.Fatalf("sweep: %+v %v", sw, err)
		}
	})
	t.Run("a failing canary is aborted", func(t *testing.T) {
		r, b := analysisRig(t, steady(100, 0, time.Millisecond), func(a *config.Analysis) { a.Window = config.Duration(time.Minute) })
		r.slot("green", "v2")
		if _, err := r.o.Canary(ctx, 10); err != nil {
			t.Fatal(err)
		}
		w := r.state().Watch
		if w == nil || w.Color != "green" || !w.Until.IsZero() {
			t.Fatalf("canary with analysis.window: watch %+v, want green until the canary ends", w)
		}
		b.seen["green"] = steady(100, 30, time.Millisecond)
		sw, err := r.o.HealthSweep(ctx)
		st := r.state()
		if err != nil || st.Canary != nil || st.Watch != nil || lastFlip(&b.splitLB) != "blue" || r.o.running(st, "green") ||
			len(sw.Actions) != 1 || !strings.Contains(sw.Actions[0], "aborted at 10%") {
			t.Fatalf("sweep of a failing canary: %+v %v; canary %+v", sw, err, st.Canary)
		}
		if e := lastEvent(st); e.Action != "abort" || e.Status != state.StatusAutoRolledBack || !strings.Contains(e.Reason, "health sweep: green failed analysis") {
			t.Errorf("last event %+v", e)
		}
	})
	t.Run("a watched deploy records and clears its watch", func(t *testing.T) {
		r, _ := analysisRig(t, steady(100, 0, time.Millisecond), nil)
		var during *state.Watch
		b := r.o.lb.(*observedLB)
		green := b.seen["green"]
		b.seen["green"] = func(n int) lb.Observation {
			if n == 1 { // the watch's first look: the watch is saved by now
				during = r.store.st.Watch
			}
			return green(n)
		}
		res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Watch: 3 * time.Millisecond})
		if err != nil || res.Analysis == nil || r.state().Watch != nil {
			t.Fatalf("deploy --watch: %v; watch left %+v", err, r.state().Watch)
		}
		if during == nil || during.Color != "green" || during.Release != "v2" || during.Until.IsZero() {
			t.Errorf("watch saved during the deploy's watch = %+v, want green v2 until the window's end", during)
		}
	})
}
