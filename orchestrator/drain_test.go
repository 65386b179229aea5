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

// drainLB is a driver that answers InFlight from a script: answers[i] is
// the i-th answer (the last one repeats); errAt, when > 0, makes the
// errAt-th question fail.
type drainLB struct {
	testLB
	answers []int
	errAt   int
	asked   []lb.Upstream
}

func (b *drainLB) InFlight(ctx context.Context, u lb.Upstream) (int, error) {
	b.asked = append(b.asked, u)
	if b.errAt > 0 && len(b.asked) >= b.errAt {
		return 0, errors.New("admin socket refused")
	}
	if len(b.answers) == 0 {
		return 0, nil
	}
	return b.answers[min(len(b.asked), len(b.answers))-1], nil
}

// TestWaitDrained: the polling ends when the load balancer says 0, when
// the timeout passes (reporting what is left), or at its first error.
func TestWaitDrained(t *testing.T) {
	u := lb.Upstream{Color: config.Blue, Host: lb.LocalHost, Port: 5005}
	cases := []struct {
		name         string
		answers      []int
		errAt        int
		timeout      time.Duration
		wantDrained  bool
		wantTimedOut bool
		wantInFlight int
		wantAsked    int // exact; 0: at least 2
		minWait      time.Duration
		maxWait      time.Duration
		wantMsg      string
	}{
		{name: "nothing in flight: one question", answers: []int{0}, timeout: time.Second,
			wantDrained: true, wantAsked: 1, maxWait: 100 * time.Millisecond, wantMsg: "drained blue: 0 in flight after 0s"},
		{name: "drains in time", answers: []int{3, 2, 1, 0}, timeout: 5 * time.Second,
			wantDrained: true, wantAsked: 4, minWait: 15 * time.Millisecond, maxWait: 2 * time.Second, wantMsg: "drained blue: 0 in flight after"},
		{name: "times out", answers: []int{2}, timeout: 150 * time.Millisecond,
			wantTimedOut: true, wantInFlight: 2, minWait: 150 * time.Millisecond, maxWait: time.Second,
			wantMsg: "drain of blue timed out with 2 in flight after"},
		{name: "driver error ends the wait", answers: []int{4}, errAt: 2, timeout: 5 * time.Second,
			wantInFlight: -1, wantAsked: 2, maxWait: time.Second, wantMsg: "could not drain blue after"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &drainLB{answers: c.answers, errAt: c.errAt}
			began := time.Now()
			res := waitDrained(ctx, d, u, c.timeout, 5*time.Millisecond)
			took := time.Since(began)
			if res.Drained != c.wantDrained || res.TimedOut != c.wantTimedOut || res.InFlight != c.wantInFlight || res.Slot != config.Blue {
				t.Errorf("drain = %+v, want drained=%v timed_out=%v in_flight=%d", res, c.wantDrained, c.wantTimedOut, c.wantInFlight)
			}
			if (c.wantAsked > 0 && len(d.asked) != c.wantAsked) || (c.wantAsked == 0 && len(d.asked) < 2) {
				t.Errorf("asked %d times, want %d", len(d.asked), c.wantAsked)
			}
			if d.asked[0] != u {
				t.Errorf("asked about %+v, want %+v", d.asked[0], u)
			}
			if took < c.minWait || took > c.maxWait || res.Waited > took {
				t.Errorf("took %s (reported %s), want %s-%s", took, res.Waited, c.minWait, c.maxWait)
			}
			if !strings.HasPrefix(res.Message, c.wantMsg) {
				t.Errorf("message %q, want it to begin %q", res.Message, c.wantMsg)
			}
			if (c.errAt > 0) != (res.Error != "") {
				t.Errorf("error %q, want one: %v", res.Error, c.errAt > 0)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Millisecond)
		defer cancel()
		res := waitDrained(cctx, &drainLB{answers: []int{1}}, u, 10*time.Second, 5*time.Millisecond)
		if res.Drained || res.Waited > 2*time.Second || !strings.Contains(res.Message, "interrupted with 1 in flight") {
			t.Errorf("cancelled drain = %+v", res)
		}
	})
}

// TestWhichStopsDrain: only a running standby that served traffic (a flip
// happened) is drained, and only with drain_timeout > 0 and a driver that
// can tell; the stop and the deploy that replaces it report the drain.
func TestWhichStopsDrain(t *testing.T) {
	flipped := func(r *rig) { r.store.st.LastSwitch = state.TimePtr(state.Now()) }
	cases := []struct {
		name      string
		timeout   time.Duration
		flipped   bool
		noDrainer bool
		stop      config.Color
		force     bool
		wantAsked int
	}{
		{name: "standby after a flip", timeout: time.Second, flipped: true, stop: "green", wantAsked: 1},
		{name: "standby that never served", timeout: time.Second, stop: "green"},
		{name: "drain_timeout 0", timeout: 0, flipped: true, stop: "green"},
		{name: "driver without InFlight", timeout: time.Second, flipped: true, noDrainer: true, stop: "green"},
		{name: "active slot, forced", timeout: time.Second, flipped: true, stop: "blue", force: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &drainLB{testLB: testLB{active: "blue"}}
			var bal lb.Balancer = d
			if c.noDrainer {
				bal = &d.testLB
			}
			r := newRig(t, bal, func(s *config.Service) { s.DrainTimeout = config.Duration(c.timeout) })
			r.slot("blue", "v1")
			r.slot("green", "v1")
			if c.flipped {
				flipped(r)
			}
			res, err := r.o.Stop(ctx, c.stop, c.force)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.asked) != c.wantAsked {
				t.Fatalf("InFlight asked %d times, want %d", len(d.asked), c.wantAsked)
			}
			if c.wantAsked == 0 {
				if res.Drain != nil || res.Message != c.stop.String()+" stopped" {
					t.Errorf("no drain expected: %+v", res)
				}
				return
			}
			if res.Drain == nil || !res.Drain.Drained || d.asked[0].Port != r.green ||
				!strings.HasPrefix(res.Message, "green stopped; drained green: 0 in flight after") {
				t.Errorf("stop = %+v (drain %+v)", res, res.Drain)
			}
		})
	}
	t.Run("deploy replacing the standby", func(t *testing.T) {
		d := &drainLB{testLB: testLB{active: "blue"}, answers: []int{1, 0}}
		r := newRig(t, d, func(s *config.Service) { s.DrainTimeout = config.Duration(time.Second) })
		r.slot("blue", "v1")
		r.slot("green", "v0")
		flipped(r)
		res, err := r.o.Deploy(ctx, DeployOptions{Release: "v2"})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.asked) != 2 || res.Drain == nil || !res.Drain.Drained || res.Drain.Slot != "green" ||
			!strings.Contains(res.Message, "; drained green: 0 in flight after") {
			t.Errorf("deploy = %+v (drain %+v), asked %d times", res, res.Drain, len(d.asked))
		}
	})
}
