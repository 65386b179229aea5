package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/state"
)

// upProxy is a builtin-like proxy on the fake host: it answers when up,
// with the state's active colour, and Ensure starts it when it is down.
type upProxy struct {
	proxyLB
	r    *rig
	up   bool
	pid  int
	runs int // how many times Ensure started it
}

func (b *upProxy) Route(ctx context.Context) (*builtin.RouteInfo, error) {
	if !b.up {
		return nil, fmt.Errorf("%w: no builtin proxy answers", lb.ErrUnreachable)
	}
	st := b.r.state()
	return &builtin.RouteInfo{Active: st.ActiveVersion, Generation: st.Generation, PID: b.pid}, nil
}

func (b *upProxy) Active(ctx context.Context) (config.Color, error) {
	ri, err := b.Route(ctx)
	if err != nil {
		return "", err
	}
	return ri.Active, nil
}

func (b *upProxy) Flip(ctx context.Context, r lb.Route) error {
	b.flips = append(b.flips, r)
	_, err := b.Route(ctx)
	return err
}

func (b *upProxy) Ensure(ctx context.Context) (int, error) {
	if b.up {
		return 0, nil
	}
	b.up, b.runs = true, b.runs+1
	b.pid = b.r.host.spawn("bgd proxy", b.r.o.proxyMarker()...)
	return b.pid, nil
}

// TestUp decides what `bgd up` does from the recorded state and what runs.
func TestUp(t *testing.T) {
	cases := []struct {
		name string
		// setup prepares the state and the host; proxy says whether the
		// builtin proxy answers at first.
		setup   func(r *rig)
		proxyUp bool
		// want: the actions (substrings, in order), which slots run after,
		// with which release.
		wantActions []string
		wantActive  config.Color
		wantRunning map[config.Color]string // colour: release ("" not running)
		wantErr     bool
		wantEvent   string // substring of the last history event's reason
	}{
		{name: "fresh state: blue starts like bgd start blue, with the proxy",
			setup:       func(r *rig) {},
			wantActions: []string{"started active slot blue (release initial", "started the builtin proxy"},
			wantActive:  "blue", wantRunning: map[config.Color]string{"blue": "initial", "green": ""}},
		{name: "after a reboot: the active colour on its release, the standby that ran, the proxy",
			setup: func(r *rig) {
				r.host.end(r.slot("blue", "v1"))
				r.host.end(r.slot("green", "v2"))
				r.store.st.ActiveVersion, r.store.st.Generation, r.store.st.ProxyPID = "green", 4, 9999
			},
			wantActions: []string{"started active slot green (release v2", "started the builtin proxy", "started standby slot blue (release v1"},
			wantActive:  "green", wantRunning: map[config.Color]string{"blue": "v1", "green": "v2"}},
		{name: "a standby that was stopped stays stopped",
			setup: func(r *rig) {
				r.host.end(r.slot("blue", "v3"))
				r.store.st.GreenRelease = "v2" // ran once, stopped since (pid 0)
			},
			wantActions: []string{"started active slot blue (release v3", "started the builtin proxy"},
			wantActive:  "blue", wantRunning: map[config.Color]string{"blue": "v3", "green": ""}},
		{name: "a proxy that answers (a bgd-proxy@ unit) is left alone",
			setup:       func(r *rig) { r.host.end(r.slot("blue", "v1")) },
			proxyUp:     true,
			wantActions: []string{"started active slot blue (release v1"},
			wantActive:  "blue", wantRunning: map[config.Color]string{"blue": "v1", "green": ""}},
		{name: "only the proxy is down",
			setup:       func(r *rig) { r.slot("blue", "v1"); r.slot("green", "v2") },
			wantActions: []string{"started the builtin proxy"},
			wantActive:  "blue", wantRunning: map[config.Color]string{"blue": "v1", "green": "v2"}},
		{name: "nothing to do",
			setup:   func(r *rig) { r.slot("blue", "v1"); r.slot("green", "v2") },
			proxyUp: true, wantActions: []string{},
			wantActive: "blue", wantRunning: map[config.Color]string{"blue": "v1", "green": "v2"}},
		{name: "an interrupted deploy is recorded as failed and reported; its slot restarts as standby",
			setup: func(r *rig) {
				r.slot("blue", "v1")
				r.host.end(r.slot("green", "v2"))
				r.store.st.InProgress = &state.Operation{Command: "deploy --release v2", PID: 4242, From: "blue", To: "green"}
			},
			proxyUp:     true,
			wantActions: []string{"deploy --release v2 (pid 4242) was interrupted: recorded as failed", "started standby slot green (release v2"},
			wantActive:  "blue", wantRunning: map[config.Color]string{"blue": "v1", "green": "v2"}},
		{name: "an active slot that does not start fails up, recorded",
			setup: func(r *rig) {
				r.host.end(r.slot("blue", "v1"))
				r.host.exitAtStart = true
			},
			wantActions: []string{}, wantActive: "blue", wantErr: true, wantEvent: "exited at start",
			wantRunning: map[config.Color]string{"blue": "", "green": ""}},
		{name: "a standby that does not start is reported, recorded and forgotten; up succeeds",
			setup: func(r *rig) {
				r.slot("blue", "v1")
				r.host.end(r.slot("green", "v2"))
				r.host.exitAtStart = true
			},
			proxyUp:     true,
			wantActions: []string{"standby green was not started: green (port"},
			wantActive:  "blue", wantEvent: "exited at start",
			wantRunning: map[config.Color]string{"blue": "v1", "green": ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bal := &upProxy{}
			r := newRig(t, bal)
			bal.r, bal.up = r, c.proxyUp
			if c.proxyUp {
				bal.pid = r.host.spawn("bgd proxy (systemd)")
			}
			c.setup(r)
			res, err := r.o.Up(ctx)
			if (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrFailed)) {
				t.Fatalf("Up error = %v, want error %v", err, c.wantErr)
			}
			if len(res.Actions) != len(c.wantActions) {
				t.Fatalf("actions %q, want %q", res.Actions, c.wantActions)
			}
			for i, a := range c.wantActions {
				if !strings.Contains(res.Actions[i], a) {
					t.Errorf("action %d = %q, want %q", i, res.Actions[i], a)
				}
			}
			st := r.state()
			if res.Changed != (len(c.wantActions) > 0) || res.Active != c.wantActive || st.ActiveVersion != c.wantActive || st.InProgress != nil {
				t.Errorf("changed %v active %s (state %s), in progress %+v", res.Changed, res.Active, st.ActiveVersion, st.InProgress)
			}
			for color, rel := range c.wantRunning {
				if got := r.o.running(st, color); got != (rel != "") || (rel != "" && st.Slot(color).Release != rel) {
					t.Errorf("%s running %v release %q, want release %q", color, got, st.Slot(color).Release, rel)
				}
			}
			if ev := lastEvent(st); !c.wantErr && c.wantEvent == "" && len(c.wantActions) > 0 &&
				(ev.Action != "up" || ev.Status != state.StatusSuccess || ev.To != c.wantActive || !strings.Contains(ev.Reason, c.wantActions[len(c.wantActions)-1])) {
				t.Errorf("last event %+v, want up's success listing its actions", ev)
			}
			if c.wantEvent != "" && !strings.Contains(lastEvent(st).Reason, c.wantEvent) {
				t.Errorf("last event %+v, want %q", lastEvent(st), c.wantEvent)
			}
			if c.wantErr {
				return
			}
			if !bal.up || (bal.runs > 0 && st.ProxyPID != bal.pid) {
				t.Errorf("proxy up %v, proxy_pid %d, started pid %d", bal.up, st.ProxyPID, bal.pid)
			}
			// Run twice: the second run changes nothing.
			starts := len(r.host.started)
			again, err := r.o.Up(ctx)
			if err != nil || again.Changed || len(again.Actions) != 0 || len(r.host.started) != starts || bal.runs > 1 {
				t.Errorf("second up: %+v %v (starts %d -> %d, proxy runs %d)", again, err, starts, len(r.host.started), bal.runs)
			}
		})
	}
}

// TestUpRoutesAnotherDriver: with a driver that keeps its own routing
// (nginx, HAProxy), up makes it route to the active colour, or confirms it.
func TestUpRoutesAnotherDriver(t *testing.T) {
	bal := &testLB{active: "green"}
	r := newRig(t, bal)
	r.slot("blue", "v1")
	res, err := r.o.Up(ctx)
	if err != nil || len(res.Actions) != 1 || !strings.Contains(res.Actions[0], "routed the load balancer to blue") || bal.active != "blue" {
		t.Fatalf("up: %+v %v, lb routes to %s", res, err, bal.active)
	}
	res, err = r.o.Up(ctx)
	if err != nil || res.Changed || len(bal.flips) != 2 {
		t.Fatalf("second up: %+v %v, flips %d (want the confirming one)", res, err, len(bal.flips))
	}
	bal.flipErr = errors.New("nginx -t failed")
	if _, err := r.o.Up(ctx); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "nginx -t failed") {
		t.Fatalf("up with a load balancer that does not confirm: %v", err)
	}
}
