package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// Result says what a mutating workflow did.
type Result struct {
	Service string `json:"service"`
	Action  string `json:"action"`
	// Active is the colour receiving traffic afterwards.
	Active config.Color `json:"active_version"`
	// Slot is the colour acted on.
	Slot    config.Color `json:"slot,omitempty"`
	Port    int          `json:"port,omitempty"`
	PID     int          `json:"pid,omitempty"`
	Release string       `json:"release,omitempty"`
	// Changed is false when nothing needed doing (idempotent repeat).
	Changed  bool          `json:"changed"`
	Duration time.Duration `json:"duration_ns"`
	Message  string        `json:"message"`
	// Drain is the wait for the load balancer's in-flight requests to a
	// slot that served traffic, before it was stopped; absent when none.
	Drain *Drain `json:"drain,omitempty"`
}

// result is what the operation did, with color's slot as recorded now, and
// the drain (if any) told after msg.
func (p *op) result(action string, color config.Color, changed bool, msg string) *Result {
	st := p.st
	if p.drained != nil {
		msg += "; " + p.drained.Message
	}
	r := &Result{Service: p.o.svc.Name, Action: action, Active: st.ActiveVersion, Slot: color, Changed: changed,
		Duration: time.Since(p.began), Message: msg, Drain: p.drained}
	if color != "" {
		s := st.Slot(color)
		r.Port, r.PID, r.Release = s.Port, s.PID, s.Release
	}
	return r
}

func checkColor(color config.Color) error {
	if !color.Valid() {
		return usagef("unknown colour %q: use blue or green", color)
	}
	return nil
}

// Start starts color with release ("" for the release it last ran, else
// "initial") and waits until it is healthy; if it never is, it is stopped
// again and the failure recorded. When color is the active colour, the load
// balancer is made to route to it. Starting a healthy running slot of that
// release changes nothing.
func (o *Orchestrator) Start(ctx context.Context, color config.Color, release string) (*Result, error) {
	if err := checkColor(color); err != nil {
		return nil, err
	}
	if release != "" {
		if err := config.CheckRelease(release); err != nil {
			return nil, err
		}
	}
	p, err := o.begin(ctx, "start", "", color)
	if err != nil {
		return nil, err
	}
	st := p.st
	changed, err := p.startIfNeeded(ctx, color, release)
	if err != nil {
		return nil, p.end(err)
	}
	st.SetRestarts(color, nil) // an operator's start begins a new count
	if color == st.ActiveVersion {
		flipped, err := p.ensureRouted(ctx, color)
		if err != nil {
			return nil, p.end(err)
		}
		changed = changed || flipped
	}
	p.phase("done", color, "")
	port := st.Slot(color).Port
	msg := fmt.Sprintf("%s is running and healthy on port %d", color, port)
	if !changed {
		msg = fmt.Sprintf("%s was already running and healthy on port %d", color, port)
	}
	return p.result("start", color, changed, msg), p.end(nil)
}

// startIfNeeded (re)starts color with release ("" for the release it last
// ran, else "initial") unless that release already runs healthy there. It
// reports whether it started the slot; a failed start is recorded.
func (p *op) startIfNeeded(ctx context.Context, color config.Color, release string) (bool, error) {
	slot := p.st.Slot(color)
	if release == "" {
		release = slot.Release
	}
	if release == "" {
		release = "initial"
	}
	if p.o.running(p.st, color) && release == slot.Release && p.o.sys.probe(ctx, slot.Port) == nil {
		p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = true })
		return false, nil
	}
	if _, err := p.stopServed(ctx, color); err != nil {
		return false, err
	}
	if err := p.startSlot(ctx, color, release); err != nil {
		p.st.Record(state.Event{Action: "start", To: color, Status: state.StatusFailed, Release: release, Reason: err.Error()})
		p.phase("failed", color, err.Error())
		return false, err
	}
	return true, nil
}

// Stop stops color. The active slot is refused unless force is set.
func (o *Orchestrator) Stop(ctx context.Context, color config.Color, force bool) (*Result, error) {
	if err := checkColor(color); err != nil {
		return nil, err
	}
	p, err := o.begin(ctx, "stop", color, "")
	if err != nil {
		return nil, err
	}
	st := p.st
	if color == st.ActiveVersion && o.running(st, color) && !force {
		return nil, p.end(usagef("%s is the active slot and receives traffic: switch to %s first, or use --force",
			color, color.Other()))
	}
	was := o.running(st, color)
	note, err := p.stopServed(ctx, color)
	if err != nil {
		return nil, p.end(err)
	}
	st.SetRestarts(color, nil) // stopped on purpose: no sweep restarts it
	msg := fmt.Sprintf("%s stopped", color)
	if !was {
		msg = fmt.Sprintf("%s was not running", color)
	}
	if note != "" {
		msg += "; " + note
	}
	return p.result("stop", color, was, msg), p.end(nil)
}

// DeployOptions tune Deploy.
type DeployOptions struct {
	// Release names what is deployed ({{.Release}}). Default: a UTC timestamp.
	Release string
	// NoSwitch starts and health-checks the idle slot but leaves traffic.
	NoSwitch bool
	// Force redeploys even when Release is already active and healthy
	// (default false: that deploy changes nothing).
	Force bool
}

// Deploy starts the idle colour with the release, waits for health, flips
// the load balancer to it and keeps the old slot running for rollback. On
// failure the new slot is stopped, traffic is untouched and the failure is
// recorded.
func (o *Orchestrator) Deploy(ctx context.Context, d DeployOptions) (*Result, error) {
	if d.Release == "" {
		d.Release = time.Now().UTC().Format("20060102-150405")
	}
	if err := config.CheckRelease(d.Release); err != nil {
		return nil, err
	}
	p, err := o.begin(ctx, "deploy", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	from := st.ActiveVersion
	to := from.Other()
	if !d.Force {
		if res, done, err := p.alreadyDeployed(ctx, d); done || err != nil {
			return res, p.end(err)
		}
	}
	st.InProgress.From, st.InProgress.To = from, to
	res, err := p.deploy(ctx, d, from, to)
	if err != nil {
		st.Record(state.Event{Action: "deploy", From: from, To: to, Status: state.StatusFailed, Release: d.Release, Reason: err.Error()})
		o.log.Error("deploy failed", "slot", to, "release", d.Release, "err", err)
		p.phase("failed", to, err.Error())
		return nil, p.end(err)
	}
	return res, p.end(nil)
}

// deploy starts the release on the idle colour to, waits for health and
// flips traffic from from to it (unless NoSwitch). After a failed flip the
// new slot is stopped again; a failure of that stop is part of the error.
func (p *op) deploy(ctx context.Context, d DeployOptions, from, to config.Color) (*Result, error) {
	st := p.st
	if _, err := p.stopServed(ctx, to); err != nil {
		return nil, err
	}
	if err := p.startSlot(ctx, to, d.Release); err != nil {
		return nil, err
	}
	st.SetRestarts(to, nil) // a new release begins a new count
	if d.NoSwitch {
		st.Record(state.Event{Action: "deploy", From: from, To: to, Status: state.StatusSuccess, Release: d.Release, Reason: "--no-switch: traffic stays on " + from.String()})
		p.phase("done", to, "")
		return p.result("deploy", to, true, fmt.Sprintf("release %s is healthy on %s; traffic stays on %s (--no-switch)", d.Release, to, from)), nil
	}
	if err := p.flip(ctx, to); err != nil {
		note, serr := p.stopSlot(context.WithoutCancel(ctx), to)
		switch {
		case serr != nil:
			return nil, fmt.Errorf("%w; the new slot was not stopped: %w", err, serr)
		case note != "":
			return nil, fmt.Errorf("%w; %s", err, note)
		}
		return nil, err
	}
	st.Record(state.Event{Action: "deploy", From: from, To: to, Status: state.StatusSuccess, Release: d.Release})
	p.phase("done", to, "")
	return p.result("deploy", to, true, fmt.Sprintf("release %s is live on %s; %s keeps running for rollback", d.Release, to, from)), nil
}

// alreadyDeployed reports (done=true) a deploy that has nothing to do: the
// release already runs healthy on the active colour, which the load
// balancer routes to (or, with NoSwitch, on the idle colour). Re-running
// an Ansible task or a script must not replace a healthy slot.
func (p *op) alreadyDeployed(ctx context.Context, d DeployOptions) (*Result, bool, error) {
	o, st := p.o, p.st
	color := st.ActiveVersion
	if d.NoSwitch {
		color = color.Other()
	}
	slot := st.Slot(color)
	if slot.Release != d.Release || !o.running(st, color) || o.sys.probe(ctx, slot.Port) != nil {
		return nil, false, nil
	}
	st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = true })
	p.st.LastCheck = state.TimePtr(state.Now())
	if d.NoSwitch {
		return p.result("deploy", color, false, fmt.Sprintf("release %s already runs healthy on %s; traffic stays on %s (--no-switch)", d.Release, color, st.ActiveVersion)), true, nil
	}
	flipped, err := p.ensureRouted(ctx, color)
	if err != nil {
		return nil, true, err
	}
	msg := fmt.Sprintf("release %s is already live on %s: nothing to do (--force redeploys)", d.Release, color)
	if flipped {
		msg = fmt.Sprintf("release %s was already healthy on %s; the load balancer now routes to it", d.Release, color)
	}
	return p.result("deploy", color, flipped, msg), true, nil
}

// Switch flips traffic to color. A target that does not answer its health
// check is refused ("Cannot switch to green: not healthy") unless force.
func (o *Orchestrator) Switch(ctx context.Context, color config.Color, force bool) (*Result, error) {
	if err := checkColor(color); err != nil {
		return nil, err
	}
	p, err := o.begin(ctx, "switch", "", color)
	if err != nil {
		return nil, err
	}
	st := p.st
	from := st.ActiveVersion
	p.st.InProgress.From = from
	if color == from {
		flipped, err := p.ensureRouted(ctx, color)
		if err != nil {
			return nil, p.end(err)
		}
		return p.result("switch", color, flipped, fmt.Sprintf("%s is already active", color)), p.end(nil)
	}
	if err := p.checkTarget(ctx, color, "switch to", force); err != nil {
		return nil, p.end(err)
	}
	if err := p.flip(ctx, color); err != nil {
		st.Record(state.Event{Action: "switch", From: from, To: color, Status: state.StatusFailed, Reason: err.Error()})
		return nil, p.end(err)
	}
	st.Record(state.Event{Action: "switch", From: from, To: color, Status: state.StatusSuccess, Release: st.Slot(color).Release})
	p.phase("done", color, "")
	return p.result("switch", color, true, fmt.Sprintf("traffic switched from %s to %s", from, color)), p.end(nil)
}

// Rollback flips traffic back to the other colour, which a deploy kept
// running. It is impossible when that slot is not healthy.
func (o *Orchestrator) Rollback(ctx context.Context) (*Result, error) {
	p, err := o.begin(ctx, "rollback", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	from := st.ActiveVersion
	to := from.Other()
	st.InProgress.From, st.InProgress.To = from, to
	if err := p.checkTarget(ctx, to, "roll back to", false); err != nil {
		return nil, p.end(failure(fmt.Errorf("rollback impossible: %w", err)))
	}
	if err := p.flip(ctx, to); err != nil {
		st.Record(state.Event{Action: "rollback", From: from, To: to, Status: state.StatusFailed, Reason: err.Error()})
		return nil, p.end(err)
	}
	st.Record(state.Event{Action: "rollback", From: from, To: to, Status: state.StatusRolledBack, Release: st.Slot(to).Release})
	p.phase("done", to, "")
	return p.result("rollback", to, true, fmt.Sprintf("rolled back from %s to %s", from, to)), p.end(nil)
}

// checkTarget probes color now; the stored health may be stale.
func (p *op) checkTarget(ctx context.Context, color config.Color, verb string, force bool) error {
	err := p.o.sys.probe(ctx, p.st.Slot(color).Port)
	p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = err == nil })
	p.st.LastCheck = state.TimePtr(state.Now())
	if err == nil || force {
		if err != nil {
			p.o.log.Warn("switching to an unhealthy slot (--force)", "slot", color, "err", err)
		}
		return nil
	}
	hint := fmt.Sprintf("start it with `bgd start %s`, or use --force", color)
	if !p.o.running(p.st, color) {
		hint = fmt.Sprintf("it is stopped: start it with `bgd start %s`", color)
	}
	//lint:ignore ST1005 the seed's message, kept verbatim for its users' scripts
	return failure(fmt.Errorf("Cannot %s %s: %w (%w); %s", verb, color, ErrNotHealthy, err, hint))
}

// followsState is a load balancer that reads its routing from the state
// file (the builtin proxy): the state is written before Flip confirms it.
type followsState interface{ FollowsState() bool }

// proxyStarter is a load balancer bgd may have to start (the builtin proxy).
type proxyStarter interface {
	Ensure(ctx context.Context) (pid int, err error)
}

// flip routes traffic to color and records the new routing in the state.
// On error the previous routing is in force and recorded. When restoring
// it in the state fails too, that failure is named in the message; the
// balancer's error alone is wrapped (it decides the exit code).
func (p *op) flip(ctx context.Context, color config.Color) error {
	o, st := p.o, p.st
	p.phase("switching", color, "")
	if err := p.ensureProxy(ctx, color); err != nil {
		return err
	}
	route := o.route(st, color)
	prevColor, prevSwitch := st.ActiveVersion, st.LastSwitch
	// Refuse a route the driver cannot apply before anything changes: a
	// driver that follows the state would otherwise see it saved first.
	if err := lb.Supports(o.lb, route); err != nil {
		return failf("switch to %s: %w; traffic stays on %s", color, err, prevColor)
	}
	apply := func() {
		st.ActiveVersion, st.Generation, st.LastSwitch = color, route.Generation, state.TimePtr(state.Now())
	}
	if fs, ok := o.lb.(followsState); ok && fs.FollowsState() {
		apply()
		if err := p.save(); err != nil {
			st.ActiveVersion, st.LastSwitch = prevColor, prevSwitch
			return err
		}
		if err := o.lb.Flip(ctx, route); err != nil {
			// Route back under a new generation, so the proxy takes it.
			st.ActiveVersion, st.LastSwitch = prevColor, prevSwitch
			st.Generation++
			if serr := p.save(); serr != nil {
				return failf("switch to %s: %w; restoring %s in the state failed too: %v", color, err, prevColor, serr)
			}
			return failf("switch to %s: %w; traffic stays on %s", color, err, prevColor)
		}
		return nil
	}
	if err := o.lb.Flip(ctx, route); err != nil {
		return failf("switch to %s: %w; traffic stays on %s", color, err, prevColor)
	}
	apply()
	return p.save()
}

// ensureProxy starts the builtin proxy if it does not run (other drivers
// need nothing started) and records the pid of one it started.
func (p *op) ensureProxy(ctx context.Context, color config.Color) error {
	ps, ok := p.o.lb.(proxyStarter)
	if !ok {
		return nil
	}
	pid, err := ps.Ensure(ctx)
	if err != nil {
		return failf("switch to %s: %w", color, err)
	}
	if pid > 0 {
		p.o.recordProxy(p.st, pid)
	}
	return nil
}

// ensureRouted makes sure the load balancer routes to color, which the state
// already names as active. Where the load balancer already names color, a
// driver that does not follow the state file is still asked to confirm it
// (HAProxy waits for its own checks to see the slot UP; nginx runs nothing
// when it already serves this generation). It reports whether it flipped.
func (p *op) ensureRouted(ctx context.Context, color config.Color) (bool, error) {
	if active, err := p.o.lb.Active(ctx); err == nil && active == color {
		if fs, ok := p.o.lb.(followsState); ok && fs.FollowsState() {
			return false, nil
		}
		r := p.o.route(p.st, color)
		r.Generation = p.st.Generation
		if err := p.o.lb.Flip(ctx, r); err != nil {
			return false, failf("confirm that the load balancer routes to %s: %w", color, err)
		}
		return false, nil
	}
	if err := p.flip(ctx, color); err != nil {
		return false, err
	}
	return true, nil
}

// Render returns the load balancer configuration that routes to the active
// colour as the state file records it (what the next flip to it would apply).
func (o *Orchestrator) Render() ([]byte, error) {
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	r := o.route(st, st.ActiveVersion)
	r.Generation = st.Generation
	return o.lb.Render(r)
}
