package orchestrator

import (
	"errors"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/state"
)

// shadowLB is a test driver that can split traffic and copy requests.
type shadowLB struct{ testLB }

func (b *shadowLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "shadow", Weights: true, Shadow: true}
}

// shadowProxyLB follows the state file, like the builtin proxy, and copies.
type shadowProxyLB struct{ proxyLB }

func (b *shadowProxyLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "builtin", Weights: true, Shadow: true}
}

func (b *shadowLB) last() lb.Route { return b.flips[len(b.flips)-1] }

// TestShadowLifecycle: shadow on needs a healthy standby, routes with
// Shadow and records it; a repeat changes nothing; every flip afterwards
// (switch, canary, promote) keeps it, towards the new standby; off ends it;
// each is in the history.
func TestShadowLifecycle(t *testing.T) {
	b := &shadowLB{testLB{active: "blue"}}
	r := newRig(t, b)
	r.slot("blue", "v1")
	if _, err := r.o.Shadow(ctx, true); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "it is stopped: start it with `bgd start green`") {
		t.Fatalf("shadow on with the standby stopped = %v", err)
	}
	if r.state().Shadow || len(b.flips) != 0 {
		t.Fatalf("a refused shadow on changed the state (%v) or the lb (%d flips)", r.state().Shadow, len(b.flips))
	}
	r.slot("green", "v2")
	res, err := r.o.Shadow(ctx, true)
	if err != nil || !res.Changed || !r.state().Shadow || !b.last().Shadow || b.last().Active.Color != "blue" || b.last().Standby.Color != "green" {
		t.Fatalf("shadow on: %+v %v; state shadow %v; lb %+v", res, err, r.state().Shadow, b.last())
	}
	if e := lastEvent(r.state()); e.Action != "shadow" || e.Reason != "on" || e.Status != state.StatusSuccess || e.To != "green" || e.Release != "v2" {
		t.Errorf("history after shadow on: %+v", e)
	}
	flips := len(b.flips)
	if res, err := r.o.Shadow(ctx, true); err != nil || res.Changed || len(b.flips) != flips || !strings.Contains(res.Message, "already on") {
		t.Errorf("shadow on again: %+v %v, %d flips (was %d)", res, err, len(b.flips), flips)
	}

	if _, err := r.o.Switch(ctx, "green", false); err != nil {
		t.Fatal(err)
	}
	if l := b.last(); !l.Shadow || l.Active.Color != "green" || l.Standby.Color != "blue" {
		t.Errorf("switch green kept no shadow to blue: %+v", l)
	}
	if _, err := r.o.Canary(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if l := b.last(); !l.Shadow || !l.Splits() {
		t.Errorf("canary 20 with shadow: %+v", l)
	}
	st, _ := r.o.Status(ctx)
	if st.Shadow == nil || st.Shadow.Standby != "blue" || !strings.Contains(st.Shadow.Summary(), "goes to blue") {
		t.Errorf("status shadow = %+v", st.Shadow)
	}

	res, err = r.o.Shadow(ctx, false)
	if err != nil || !res.Changed || r.state().Shadow || b.last().Shadow || !b.last().Splits() {
		t.Fatalf("shadow off: %+v %v; lb %+v", res, err, b.last())
	}
	if e := lastEvent(r.state()); e.Action != "shadow" || e.Reason != "off" || e.Status != state.StatusSuccess {
		t.Errorf("history after shadow off: %+v", e)
	}
	if st, _ := r.o.Status(ctx); st.Shadow != nil {
		t.Errorf("status after shadow off = %+v", st.Shadow)
	}
}

// TestShadowRefusedByDriver: a driver without Capabilities.Shadow refuses
// shadow on with ErrUnsupported, before any probe or flip.
func TestShadowRefusedByDriver(t *testing.T) {
	b := &splitLB{testLB{active: "blue"}}
	r := newRig(t, b)
	r.slot("blue", "v1")
	_, err := r.o.Shadow(ctx, true)
	if !errors.Is(err, lb.ErrUnsupported) || !strings.Contains(err.Error(), "shadow traffic") || !strings.Contains(err.Error(), "lb.driver builtin, or nginx in lb.nginx.mode reload") {
		t.Fatalf("shadow on with a driver that cannot copy = %v", err)
	}
	if r.state().Shadow || len(b.flips) != 0 || len(r.state().History) != 0 {
		t.Errorf("refusal changed something: shadow %v, %d flips, history %v", r.state().Shadow, len(b.flips), r.state().History)
	}
}

// TestShadowFailedFlip: when the load balancer does not confirm, shadow
// stays off in the state (under a new generation for a driver that follows
// the state file) and the failure is in the history.
func TestShadowFailedFlip(t *testing.T) {
	b := &shadowProxyLB{proxyLB{testLB: testLB{active: "blue", flipErr: lb.ErrNotConfirmed}, route: &builtin.RouteInfo{Active: "blue"}}}
	r := newRig(t, b)
	r.slot("blue", "v1")
	r.slot("green", "v2")
	gen := r.state().Generation
	_, err := r.o.Shadow(ctx, true)
	if !errors.Is(err, lb.ErrNotConfirmed) {
		t.Fatalf("shadow on with an unconfirmed flip = %v", err)
	}
	st := r.state()
	if st.Shadow || st.Generation <= gen || st.ActiveVersion != config.Blue {
		t.Errorf("after the failed shadow on: shadow %v, generation %d (was %d), active %s", st.Shadow, st.Generation, gen, st.ActiveVersion)
	}
	if e := lastEvent(st); e.Action != "shadow" || e.Status != state.StatusFailed || !strings.Contains(e.Reason, "shadow on") {
		t.Errorf("history after the failed shadow on: %+v", e)
	}
}
