package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// Drain is what bgd did before stopping a slot that served traffic until
// the last flip: it asked the load balancer how much it still has in
// flight to that slot until nothing was, or drain_timeout passed.
type Drain struct {
	Slot config.Color `json:"slot"`
	// InFlight is what the load balancer reported last: 0 when drained,
	// what was left when the wait timed out, -1 when it could not be asked.
	InFlight int `json:"in_flight"`
	// Waited is how long bgd waited.
	Waited   time.Duration `json:"waited_ns"`
	Drained  bool          `json:"drained"`
	TimedOut bool          `json:"timed_out"`
	// Error is why the load balancer could not be asked ("" when it was).
	Error   string `json:"error,omitempty"`
	Message string `json:"message"`
}

// drainPoll is how often a drain asks the load balancer.
const drainPoll = 50 * time.Millisecond

// waitDrained asks d every poll how much it has in flight to u, until it
// says 0 or timeout passes. An error of d ends the wait at once (the slot
// is stopped anyway: a load balancer that cannot be asked is no reason to
// keep an old slot), as does ctx ending.
func waitDrained(ctx context.Context, d lb.Drainer, u lb.Upstream, timeout, poll time.Duration) *Drain {
	began := time.Now()
	deadline := began.Add(timeout)
	res := &Drain{Slot: u.Color}
	for {
		n, err := d.InFlight(ctx, u)
		res.Waited = time.Since(began)
		if err != nil {
			res.InFlight, res.Error = -1, err.Error()
			res.Message = fmt.Sprintf("could not drain %s after %s: %v; stopped without waiting further", u.Color, round(res.Waited), err)
			return res
		}
		res.InFlight = n
		if n == 0 {
			res.Drained = true
			res.Message = fmt.Sprintf("drained %s: 0 in flight after %s", u.Color, round(res.Waited))
			return res
		}
		left := time.Until(deadline)
		if left <= 0 {
			res.TimedOut = true
			res.Message = fmt.Sprintf("drain of %s timed out with %d in flight after %s; stopped anyway", u.Color, n, round(res.Waited))
			return res
		}
		select {
		case <-ctx.Done():
			res.Waited = time.Since(began)
			res.Error = ctx.Err().Error()
			res.Message = fmt.Sprintf("drain of %s interrupted with %d in flight after %s: %v", u.Color, n, round(res.Waited), ctx.Err())
			return res
		case <-time.After(min(poll, left)):
		}
	}
}

// round shows a wait to the hundredth of a second.
func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

// servedTraffic reports whether color's slot may still have requests in
// flight from the load balancer: it runs, is not the active colour, and
// the state records a flip (LastSwitch), so that it may have been the
// active slot before the last one. The routing of the first start counts
// too, so a standby that never served (or was restarted since) may be
// asked once, and answers 0 at the first question. The active slot is
// never drained (it gets new requests until it stops: `stop --force`),
// nor a standby on a state that never flipped (it never served).
func (p *op) servedTraffic(color config.Color) bool {
	st := p.st
	return color != st.ActiveVersion && st.LastSwitch != nil && p.o.running(st, color)
}

// drain waits, before color's slot is stopped, until the load balancer
// has nothing in flight to it or drain_timeout passes. It returns nil
// (nothing done, no cost) when drain_timeout is 0, the driver cannot say
// (not an lb.Drainer: the slot is stopped at once, as before), or the slot
// did not serve traffic (servedTraffic).
func (p *op) drain(ctx context.Context, color config.Color) *Drain {
	o := p.o
	timeout := o.svc.DrainTimeout.D()
	d, ok := o.lb.(lb.Drainer)
	if timeout <= 0 || !ok || !p.servedTraffic(color) {
		return nil
	}
	u := lb.Upstream{Color: color, Host: p.o.svc.Host(color), Port: p.st.Slot(color).Port}
	p.phase("draining", color, fmt.Sprintf("up to %s", timeout))
	res := waitDrained(ctx, d, u, timeout, drainPoll)
	o.log.Info("drain", "slot", color, "in_flight", res.InFlight, "waited", res.Waited, "drained", res.Drained,
		"timed_out", res.TimedOut, "err", res.Error)
	return res
}

// stopServed drains color (drain) and stops it (stopSlot); the drain is
// kept for the operation's Result. The note is stopSlot's.
func (p *op) stopServed(ctx context.Context, color config.Color) (string, error) {
	if d := p.drain(ctx, color); d != nil {
		p.drained = d
	}
	return p.stopSlot(ctx, color)
}
