package orchestrator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// holdLB is a test driver that can split, pause and answer maintenance.
type holdLB struct{ testLB }

func (b *holdLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "hold", Weights: true, Pause: true, Maintenance: true}
}

func (b *holdLB) last() lb.Route { return b.flips[len(b.flips)-1] }

func TestPauseAndResume(t *testing.T) {
	b := &holdLB{testLB{active: "blue"}}
	r := newRig(t, b, func(s *config.Service) { s.PauseTimeout = config.Duration(45 * time.Second) })
	r.slot("blue", "v1")
	r.slot("green", "v2")
	if _, err := r.o.Switch(ctx, "blue", false); err != nil {
		t.Fatal(err)
	}
	switched := r.state().LastSwitch
	res, err := r.o.Pause(ctx, 0)
	st := r.state()
	if fmt.Sprint(st.LastSwitch) != fmt.Sprint(switched) {
		t.Errorf("pause changed last_switch from %v to %v", switched, st.LastSwitch)
	}
	if err != nil || st.Paused == nil || st.Paused.Until.Sub(st.Paused.Since) != 45*time.Second || !res.Changed {
		t.Fatalf("pause: %+v %v, state %+v", res, err, st.Paused)
	}
	if p := b.last().Pause; p <= 40*time.Second || p > 45*time.Second || b.last().Active.Color != "blue" {
		t.Errorf("pause flipped %+v, want blue paused for about 45s", b.last())
	}
	if e := lastEvent(st); e.Action != "pause" || e.Status != state.StatusSuccess {
		t.Errorf("history after pause: %+v", e)
	}
	since := st.Paused.Since

	// A switch while paused is allowed and stays paused.
	if _, err := r.o.Switch(ctx, "green", false); err != nil {
		t.Fatal(err)
	}
	if l := b.last(); l.Active.Color != "green" || l.Pause <= 0 || r.state().Paused == nil {
		t.Errorf("switch while paused: flipped %+v, state paused %+v; want green, still paused", l, r.state().Paused)
	}
	// Pausing again sets a new deadline, keeps the start.
	if _, err := r.o.Pause(ctx, 5*time.Second); err != nil || !r.state().Paused.Since.Equal(since) ||
		r.state().Paused.Until.Sub(since) > 6*time.Second {
		t.Errorf("pause again: %v, state %+v", err, r.state().Paused)
	}
	if _, err := r.o.Maintenance(ctx, true, ""); !errors.Is(err, ErrUsage) {
		t.Errorf("maintenance on while paused = %v, want a usage error", err)
	}

	res, err = r.o.Resume(ctx)
	st = r.state()
	if err != nil || st.Paused != nil || b.last().Pause != 0 || b.last().Active.Color != "green" || !strings.Contains(res.Message, "held requests go to green") {
		t.Fatalf("resume: %+v %v, state %+v, flipped %+v", res, err, st.Paused, b.last())
	}
	if e := lastEvent(st); e.Action != "resume" || e.Status != state.StatusSuccess {
		t.Errorf("history after resume: %+v", e)
	}
	flips := len(b.flips)
	if res, err := r.o.Resume(ctx); err != nil || res.Changed || len(b.flips) != flips {
		t.Errorf("resume when not paused: %+v %v", res, err)
	}
	if _, err := r.o.Pause(ctx, -time.Second); !errors.Is(err, ErrUsage) {
		t.Errorf("pause --timeout -1s = %v", err)
	}
}

// TestPauseExpired: a pause whose deadline passed is no longer sent to the
// load balancer; resume clears it and says so.
func TestPauseExpired(t *testing.T) {
	b := &holdLB{testLB{active: "blue"}}
	r := newRig(t, b)
	r.slot("blue", "v1")
	if _, err := r.o.Pause(ctx, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if _, err := r.o.Switch(ctx, "blue", false); err != nil {
		t.Fatal(err)
	}
	if rt := r.o.route(r.state(), "blue"); rt.Pause != 0 {
		t.Errorf("route of an expired pause has Pause %s", rt.Pause)
	}
	s, err := r.o.Status(ctx)
	if err != nil || s.Paused == nil || !s.PauseExpired {
		t.Errorf("status of an expired pause: %+v %v", s, err)
	}
	res, err := r.o.Resume(ctx)
	if err != nil || !strings.Contains(res.Message, "already timed out") || r.state().Paused != nil {
		t.Errorf("resume of an expired pause: %+v %v", res, err)
	}
}

func TestMaintenanceOnOff(t *testing.T) {
	b := &holdLB{testLB{active: "blue"}}
	page := filepath.Join(t.TempDir(), "m.html")
	if err := os.WriteFile(page, []byte("<h1>later</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, b, func(s *config.Service) { s.MaintenancePage = page })
	r.slot("blue", "v1")

	res, err := r.o.Maintenance(ctx, true, "")
	st := r.state()
	if err != nil || !st.Maintenance || st.MaintenancePage != page || !b.last().Maintenance || b.last().MaintenancePage != "<h1>later</h1>" || !res.Changed {
		t.Fatalf("maintenance on: %+v %v, state %v %q, flipped %+v", res, err, st.Maintenance, st.MaintenancePage, b.last())
	}
	if e := lastEvent(st); e.Action != "maintenance_on" || e.Status != state.StatusSuccess {
		t.Errorf("history: %+v", e)
	}
	if _, err := r.o.Pause(ctx, 0); !errors.Is(err, ErrUsage) {
		t.Errorf("pause during maintenance = %v, want a usage error", err)
	}
	flips := len(b.flips)
	if res, err := r.o.Maintenance(ctx, true, ""); err != nil || res.Changed || len(b.flips) != flips {
		t.Errorf("maintenance on again: %+v %v", res, err)
	}
	if _, err := r.o.Maintenance(ctx, true, filepath.Join(t.TempDir(), "missing.html")); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "missing.html") {
		t.Errorf("maintenance on with a missing page = %v", err)
	}
	res, err = r.o.Maintenance(ctx, false, "")
	st = r.state()
	if err != nil || st.Maintenance || st.MaintenancePage != "" || b.last().Maintenance || lastEvent(st).Action != "maintenance_off" {
		t.Fatalf("maintenance off: %+v %v, state %+v, flipped %+v", res, err, st, b.last())
	}
}

// TestHoldsRefusedByDriver: a driver without pause or maintenance refuses
// them before anything changes (exit 2: lb.ErrUnsupported); the state and
// the routing are untouched, and the refusal is recorded.
func TestHoldsRefusedByDriver(t *testing.T) {
	for _, proxy := range []bool{false, true} {
		var bal lb.Balancer = &splitLB{testLB{active: "blue"}}
		var flips func() int = func() int { return len(bal.(*splitLB).flips) }
		if proxy {
			p := &proxyLB{testLB: testLB{active: "blue"}}
			bal, flips = p, func() int { return len(p.flips) }
		}
		r := newRig(t, bal)
		r.slot("blue", "v1")
		gen := r.state().Generation
		for name, f := range map[string]func() error{
			"pause":       func() error { _, err := r.o.Pause(ctx, 0); return err },
			"maintenance": func() error { _, err := r.o.Maintenance(ctx, true, ""); return err },
		} {
			err := f()
			st := r.state()
			if !errors.Is(err, lb.ErrUnsupported) || st.Paused != nil || st.Maintenance || flips() != 0 || st.Generation != gen {
				t.Errorf("%s on a driver without it (follows state %v): %v; state paused %+v maintenance %v, %d flips",
					name, proxy, err, st.Paused, st.Maintenance, flips())
			}
			if e := lastEvent(st); e.Status != state.StatusFailed {
				t.Errorf("%s refused: history %+v, want a failed event", name, e)
			}
		}
	}
}
