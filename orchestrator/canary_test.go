package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/state"
)

// splitLB is a test driver that can split traffic.
type splitLB struct{ testLB }

func (b *splitLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "split", Weights: true}
}

// weights is the split of a route: "blue 90 green 10", or "blue" alone.
func weights(r lb.Route) string {
	if !r.Splits() {
		return r.Active.Color.String()
	}
	return r.Active.Color.String() + " " + strconv.Itoa(r.Active.Weight) + " " + r.Standby.Color.String() + " " + strconv.Itoa(r.Standby.Weight)
}

func lastFlip(b *splitLB) string {
	if len(b.flips) == 0 {
		return ""
	}
	return weights(b.flips[len(b.flips)-1])
}

// canaryRig is blue live with v1, a split-capable balancer, and green
// healthy with v2 when standby is set.
func canaryRig(t *testing.T, standby bool, edit ...func(*config.Service)) (*rig, *splitLB) {
	t.Helper()
	b := &splitLB{testLB{active: "blue"}}
	r := newRig(t, b, edit...)
	r.slot("blue", "v1")
	if standby {
		r.slot("green", "v2")
	}
	return r, b
}

func TestCanaryLifecycle(t *testing.T) {
	r, b := canaryRig(t, false, func(s *config.Service) { s.Canary.Sticky = true })
	res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Canary: 10})
	if err != nil {
		t.Fatal(err)
	}
	st := r.state()
	if st.ActiveVersion != "blue" || st.Canary == nil || st.Canary.Color != "green" || st.Canary.Weight != 10 || !st.Canary.Sticky ||
		lastFlip(b) != "blue 90 green 10" || !b.flips[len(b.flips)-1].Sticky || res.Canary == nil {
		t.Fatalf("deploy --canary 10: state %+v canary %+v, lb %s, result %+v", st.ActiveVersion, st.Canary, lastFlip(b), res)
	}
	if e := lastEvent(st); e.Action != "canary" || e.Weight != 10 || e.Release != "v2" || e.Status != state.StatusSuccess {
		t.Errorf("history after deploy --canary: %+v", e)
	}
	started := st.Canary.Started

	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v3"}); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "bgd promote` or `bgd abort` it before the next deploy") {
		t.Errorf("deploy during a canary = %v", err)
	}
	if _, err := r.o.Stop(ctx, "green", false); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "green is the canary and gets 10%") {
		t.Errorf("stop of the canary = %v", err)
	}
	if _, err := r.o.Start(ctx, "green", "v3"); !errors.Is(err, ErrUsage) {
		t.Errorf("start of another release on the canary = %v", err)
	}

	res, err = r.o.Canary(ctx, 50)
	if err != nil || !res.Changed || lastFlip(b) != "blue 50 green 50" || r.state().Canary.Weight != 50 || !r.state().Canary.Started.Equal(started) {
		t.Fatalf("canary 50: %+v %v, lb %s, state %+v", res, err, lastFlip(b), r.state().Canary)
	}
	flips := len(b.flips)
	if res, err := r.o.Canary(ctx, 50); err != nil || res.Changed || len(b.flips) != flips {
		t.Errorf("canary 50 again: %+v %v (%d flips, want none)", res, err, len(b.flips)-flips)
	}

	res, err = r.o.Promote(ctx)
	st = r.state()
	if err != nil || st.ActiveVersion != "green" || st.Canary != nil || lastFlip(b) != "green" || !r.o.running(st, "blue") {
		t.Fatalf("promote: %+v %v; active %s canary %+v lb %s", res, err, st.ActiveVersion, st.Canary, lastFlip(b))
	}
	if e := lastEvent(st); e.Action != "promote" || e.Weight != 100 || e.Release != "v2" {
		t.Errorf("history after promote: %+v", e)
	}
	if _, err := r.o.Promote(ctx); !errors.Is(err, ErrUsage) {
		t.Errorf("promote without a canary = %v", err)
	}
	if _, err := r.o.Abort(ctx); !errors.Is(err, ErrUsage) {
		t.Errorf("abort without a canary = %v", err)
	}
}

func TestCanaryAbortStopsTheCanary(t *testing.T) {
	r, b := canaryRig(t, true)
	if _, err := r.o.Canary(ctx, 20); err != nil {
		t.Fatal(err)
	}
	green := r.state().GreenPID
	res, err := r.o.Abort(ctx)
	st := r.state()
	if err != nil || st.Canary != nil || st.ActiveVersion != "blue" || lastFlip(b) != "blue" || r.o.running(st, "green") || r.host.alive(green) {
		t.Fatalf("abort: %+v %v; state %s %+v, lb %s", res, err, st.ActiveVersion, st.Canary, lastFlip(b))
	}
	if e := lastEvent(st); e.Action != "abort" || e.Status != state.StatusRolledBack || e.From != "green" || e.To != "blue" {
		t.Errorf("history after abort: %+v", e)
	}
}

func TestCanaryEndedByOtherFlips(t *testing.T) {
	t.Run("rollback", func(t *testing.T) {
		r, b := canaryRig(t, true)
		if _, err := r.o.Canary(ctx, 30); err != nil {
			t.Fatal(err)
		}
		res, err := r.o.Rollback(ctx)
		st := r.state()
		if err != nil || st.Canary != nil || st.ActiveVersion != "blue" || lastFlip(b) != "blue" || !r.o.running(st, "green") ||
			lastEvent(st).Status != state.StatusRolledBack {
			t.Fatalf("rollback of a canary: %+v %v; %s %+v lb %s", res, err, st.ActiveVersion, st.Canary, lastFlip(b))
		}
	})
	t.Run("switch to the active colour", func(t *testing.T) {
		r, b := canaryRig(t, true)
		if _, err := r.o.Canary(ctx, 30); err != nil {
			t.Fatal(err)
		}
		res, err := r.o.Switch(ctx, "blue", false)
		if err != nil || !res.Changed || r.state().Canary != nil || lastFlip(b) != "blue" {
			t.Fatalf("switch blue during a canary: %+v %v lb %s", res, err, lastFlip(b))
		}
	})
	t.Run("switch to the canary", func(t *testing.T) {
		r, b := canaryRig(t, true)
		if _, err := r.o.Canary(ctx, 30); err != nil {
			t.Fatal(err)
		}
		if _, err := r.o.Switch(ctx, "green", false); err != nil || r.state().Canary != nil || r.state().ActiveVersion != "green" || lastFlip(b) != "green" {
			t.Fatalf("switch green during a canary: %v lb %s", err, lastFlip(b))
		}
	})
	t.Run("stop --force of the canary", func(t *testing.T) {
		r, b := canaryRig(t, true)
		if _, err := r.o.Canary(ctx, 30); err != nil {
			t.Fatal(err)
		}
		if _, err := r.o.Stop(ctx, "green", true); err != nil || r.state().Canary != nil || lastFlip(b) != "blue" || r.o.running(r.state(), "green") {
			t.Fatalf("stop --force green during a canary: %v lb %s", err, lastFlip(b))
		}
	})
}

func TestCanaryRefusals(t *testing.T) {
	t.Run("a driver without weights", func(t *testing.T) {
		b := &testLB{active: "blue"}
		r := newRig(t, b)
		r.slot("blue", "v1")
		r.slot("green", "v2")
		_, err := r.o.Canary(ctx, 10)
		if !errors.Is(err, lb.ErrUnsupported) || r.state().Canary != nil || len(b.flips) != 0 {
			t.Fatalf("canary on a driver without weights = %v (state %+v, %d flips)", err, r.state().Canary, len(b.flips))
		}
	})
	t.Run("an unhealthy standby", func(t *testing.T) {
		r, b := canaryRig(t, true)
		r.host.health[r.green] = errRefused
		if _, err := r.o.Canary(ctx, 10); !errors.Is(err, ErrNotHealthy) || r.state().Canary != nil || len(b.flips) != 0 {
			t.Fatalf("canary to an unhealthy standby = %v", err)
		}
	})
	t.Run("a stopped standby", func(t *testing.T) {
		r, _ := canaryRig(t, false)
		if _, err := r.o.Canary(ctx, 10); !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "it is stopped") {
			t.Fatalf("canary to a stopped standby = %v", err)
		}
	})
	t.Run("a failing flip leaves no canary and stops the new slot", func(t *testing.T) {
		r, b := canaryRig(t, false)
		b.flipErr = errors.New("reload failed")
		_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Canary: 10})
		st := r.state()
		if !errors.Is(err, ErrFailed) || st.Canary != nil || st.ActiveVersion != "blue" || r.o.running(st, "green") {
			t.Fatalf("deploy --canary with a failing flip = %v; state %s %+v green running %v", err, st.ActiveVersion, st.Canary, r.o.running(st, "green"))
		}
	})
	for _, c := range []struct {
		name string
		d    DeployOptions
		want string
	}{
		{"weight 0 via steps", DeployOptions{Steps: []int{0, 50}}, "canary step 0"},
		{"weight 100", DeployOptions{Canary: 100}, "bgd promote"},
		{"weight 150", DeployOptions{Canary: 150}, "1-99"},
		{"--no-switch", DeployOptions{Canary: 10, NoSwitch: true}, "choose one"},
		{"decreasing steps", DeployOptions{Steps: []int{50, 10}, StepInterval: time.Second}, "more than the one before"},
		{"first step 100", DeployOptions{Steps: []int{100}}, "plain deploy"},
		{"steps without an interval", DeployOptions{Steps: []int{10, 100}}, "needs --step-interval"},
		{"--canary and a different first step", DeployOptions{Canary: 5, Steps: []int{10, 100}, StepInterval: time.Second}, "make them agree"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, b := canaryRig(t, false)
			_, err := r.o.Deploy(ctx, c.d)
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) || len(r.host.started) != 0 || len(b.flips) != 0 {
				t.Fatalf("deploy %+v = %v, want a usage error containing %q and nothing done", c.d, err, c.want)
			}
		})
	}
}

func TestCanarySteps(t *testing.T) {
	t.Run("to promotion", func(t *testing.T) {
		r, b := canaryRig(t, false)
		res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Steps: []int{10, 50, 100}, StepInterval: time.Millisecond})
		st := r.state()
		if err != nil || res.Action != "promote" || st.ActiveVersion != "green" || st.Canary != nil {
			t.Fatalf("steps 10,50,100: %+v %v; state %s %+v", res, err, st.ActiveVersion, st.Canary)
		}
		var got []string
		for _, f := range b.flips {
			got = append(got, weights(f))
		}
		if want := "blue 90 green 10|blue 50 green 50|green"; strings.Join(got, "|") != want {
			t.Errorf("flips %q, want %q", strings.Join(got, "|"), want)
		}
	})
	t.Run("stopping short of 100", func(t *testing.T) {
		r, _ := canaryRig(t, false)
		res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Steps: []int{5, 25}, StepInterval: time.Millisecond})
		if err != nil || r.state().Canary == nil || r.state().Canary.Weight != 25 || !strings.Contains(res.Message, "25% of new requests") {
			t.Fatalf("steps 5,25: %+v %v", res, err)
		}
	})
	t.Run("a canary failing between steps is aborted", func(t *testing.T) {
		r, b := canaryRig(t, false)
		// The canary becomes unhealthy after its first step.
		b.onFlip = func(rt lb.Route) {
			if rt.Standby.Weight == 10 {
				r.host.health[r.green] = errRefused
			}
		}
		_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Steps: []int{10, 50, 100}, StepInterval: time.Millisecond})
		st := r.state()
		if !errors.Is(err, ErrFailed) || !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "the canary green failed at 10%") ||
			st.Canary != nil || st.ActiveVersion != "blue" || lastFlip(b) != "blue" || r.o.running(st, "green") {
			t.Fatalf("failing canary: %v; state %s %+v lb %s", err, st.ActiveVersion, st.Canary, lastFlip(b))
		}
		var actions []string
		for _, e := range st.History {
			actions = append(actions, e.Action+":"+e.Status)
		}
		if want := "canary:success|abort:rolled_back|deploy:failed"; strings.Join(actions, "|") != want {
			t.Errorf("history %q, want %q", strings.Join(actions, "|"), want)
		}
	})
}

func TestCanaryRoute(t *testing.T) {
	r, _ := canaryRig(t, true)
	st := r.state()
	st.Canary = &state.Canary{Color: "green", Weight: 15, Sticky: true}
	if rt := r.o.route(st, "blue"); weights(rt) != "blue 85 green 15" || !rt.Sticky {
		t.Errorf("route with a canary = %s sticky %v", weights(rt), rt.Sticky)
	}
	// A route to the canary's own colour (a promote) carries no split.
	if rt := r.o.route(st, "green"); rt.Splits() || rt.Sticky {
		t.Errorf("route to the canary colour = %s sticky %v, want no split", weights(rt), rt.Sticky)
	}
}

// TestReconcileDuringACanary: a load balancer that names the canary's
// colour (HAProxy names the larger share) or none (HAProxy at 50/50) does
// not make reconcile rewrite active_version: the state stays valid, with
// its canary.
func TestReconcileDuringACanary(t *testing.T) {
	for name, set := range map[string]func(b *splitLB){
		"the canary's colour": func(b *splitLB) { b.active = "green" },
		"an even split":       func(b *splitLB) { b.activeErr = fmt.Errorf("%w: blue 50, green 50", haproxy.ErrEvenSplit) },
	} {
		t.Run(name, func(t *testing.T) {
			r, b := canaryRig(t, true)
			if _, err := r.o.Canary(ctx, 60); err != nil {
				t.Fatal(err)
			}
			set(b)
			res, err := r.o.Reconcile(ctx)
			st := r.state()
			if err != nil || st.ActiveVersion != "blue" || st.Canary == nil || st.Canary.Color != "green" {
				t.Fatalf("reconcile during a canary: %+v %v; state %s %+v", res, err, st.ActiveVersion, st.Canary)
			}
			data, _ := json.Marshal(st)
			if _, err := state.Decode(data); err != nil {
				t.Errorf("the state reconcile left does not load: %v", err)
			}
			s, err := r.o.Status(ctx)
			if err != nil || s.LBError != "" || (s.LBActive != "blue" && s.LBActive != "green") {
				t.Errorf("status during the canary: lb %q error %q (%v)", s.LBActive, s.LBError, err)
			}
		})
	}
}
