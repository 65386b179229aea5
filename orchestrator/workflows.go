package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
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
	// Canary is the split in force afterwards; absent when none.
	Canary *state.Canary `json:"canary,omitempty"`
	// Analysis is what a deploy's watch saw of the new slot; absent when
	// it was not watched.
	Analysis *Analysis `json:"analysis,omitempty"`
	// Agents is what each load-balancer host did with the last flip (the
	// etcd backend); absent otherwise.
	Agents []fleet.HostResult `json:"agents,omitempty"`
}

// result is what the operation did, with color's slot as recorded now, and
// the drain (if any) told after msg.
func (p *op) result(action string, color config.Color, changed bool, msg string) *Result {
	st := p.st
	if p.drained != nil {
		msg += "; " + p.drained.Message
	}
	r := &Result{Service: p.o.svc.Name, Action: action, Active: st.ActiveVersion, Slot: color, Changed: changed,
		Duration: time.Since(p.began), Message: msg, Drain: p.drained, Canary: st.Canary, Analysis: p.analysis}
	if p.agents != nil {
		r.Agents = p.agents.Hosts
	}
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
	if c := st.Canary; c != nil && color == c.Color && release != "" && release != st.Slot(color).Release && o.running(st, color) {
		return nil, p.end(usagef("%s is the canary (release %s, %d%% of new requests): `bgd abort` it before starting release %s there",
			color, st.Slot(color).Release, c.Weight, release))
	}
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
	if c := st.Canary; c != nil && (color == c.Color || force) {
		if color == c.Color && !force {
			return nil, p.end(usagef("%s is the canary and gets %d%% of new requests: `bgd abort` ends the canary and stops it (or use --force)", color, c.Weight))
		}
		// --force: end the split first, so that no request is sent to a
		// stopped slot; all traffic goes to the colour that keeps running.
		if err := p.flip(ctx, color.Other()); err != nil {
			return nil, p.end(err)
		}
		st.Record(state.Event{Action: "stop", From: c.Color, To: color.Other(), Status: state.StatusSuccess,
			Reason: fmt.Sprintf("stop --force %s ended the canary %s at %d%%", color, c.Color, c.Weight)})
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
	// Canary, when not 0, makes the new slot a canary that gets this
	// percentage (1-99) of new requests instead of all of them.
	Canary int
	// Steps are the canary's weights one after the other (e.g. 10, 50,
	// 100), the first in place of Canary; a last step of 100 promotes it.
	// The deploy stays attached, judging the canary (health) every
	// StepInterval before the next step; a failing canary is aborted.
	Steps        []int
	StepInterval time.Duration
	// Watch keeps the deploy attached this long after its flip, judging
	// the new slot by what the load balancer sees (analysis:) and rolling
	// it back by itself when a threshold is crossed. 0: analysis.window.
	Watch time.Duration
}

// watched reports whether the deploy watches its new slot after the flip
// (--watch or analysis.window; not with --no-switch, nor for a canary,
// which is judged between its steps).
func (d DeployOptions) watched(a config.Analysis) bool {
	return !d.NoSwitch && d.Canary == 0 && len(d.Steps) == 0 && d.watchWindow(a) > 0
}

// check refuses options that contradict each other or the canary rules.
func (d DeployOptions) check() error {
	canary := d.Canary != 0 || len(d.Steps) > 0
	switch {
	case d.Watch < 0:
		return usagef("--watch %s is negative", d.Watch)
	case d.Watch > 0 && d.NoSwitch:
		return usagef("--watch judges the new slot after the flip; --no-switch flips nothing: choose one")
	case d.Watch > 0 && canary:
		return usagef("--watch is for a full deploy; a canary is judged during each --step-interval (analysis:)")
	case canary && d.NoSwitch:
		return usagef("--canary and --steps route traffic to the new slot; --no-switch routes none: choose one")
	case d.Canary != 0 && len(d.Steps) > 0 && d.Canary != d.Steps[0]:
		return usagef("--canary %d and --steps %v: the first step is the canary's weight; give one or make them agree", d.Canary, d.Steps)
	case d.Canary != 0:
		if err := CheckWeight(d.Canary); err != nil {
			return err
		}
	}
	if len(d.Steps) > 0 {
		if err := checkSteps(d.Steps); err != nil {
			return err
		}
		if d.Steps[0] == 100 {
			return usagef("--steps %v: the first step sends everything to the new slot; that is a plain deploy (leave out --steps)", d.Steps)
		}
		if len(d.Steps) > 1 && d.StepInterval <= 0 {
			return usagef("--steps %v needs --step-interval (e.g. 60s): the time each step is watched before the next", d.Steps)
		}
	}
	return nil
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
	if err := d.check(); err != nil {
		return nil, err
	}
	if d.watched(o.svc.Analysis) || (d.Canary != 0 || len(d.Steps) > 0) && o.svc.Analysis.Window > 0 {
		if _, err := o.observer(); err != nil {
			return nil, err
		}
	}
	if len(o.svc.Health.Smoke) > 0 && !d.NoSwitch {
		if _, err := o.previewer(); err != nil {
			return nil, err
		}
	}
	p, err := o.begin(ctx, "deploy", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	from := st.ActiveVersion
	to := from.Other()
	if c := st.Canary; c != nil {
		return nil, p.end(failf("the canary %s gets %d%% of new requests: `bgd promote` or `bgd abort` it before the next deploy", c.Color, c.Weight))
	}
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
	if d.watched(o.svc.Analysis) {
		if err := p.watchDeploy(ctx, d, from, to, res); err != nil {
			return nil, p.end(err)
		}
		res.Duration = time.Since(p.began)
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
	if !d.NoSwitch {
		if err := p.smokeNew(ctx, to); err != nil {
			return nil, err
		}
	}
	if d.Canary != 0 || len(d.Steps) > 0 {
		return p.canaryDeploy(ctx, d, from, to)
	}
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
	if color == from && st.Canary != nil {
		// The canary ends: all new requests go to color again; the canary
		// keeps running (bgd abort would stop it).
		c := st.Canary
		if err := p.flip(ctx, color); err != nil {
			st.Record(state.Event{Action: "switch", From: c.Color, To: color, Status: state.StatusFailed, Reason: err.Error()})
			return nil, p.end(err)
		}
		st.Record(state.Event{Action: "switch", From: c.Color, To: color, Status: state.StatusSuccess, Release: st.Slot(color).Release,
			Reason: fmt.Sprintf("ended the canary %s at %d%%", c.Color, c.Weight)})
		return p.result("switch", color, true, fmt.Sprintf("all new requests go to %s; the canary %s (was %d%%) keeps running", color, c.Color, c.Weight)), p.end(nil)
	}
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
	if force && len(o.svc.Health.Smoke) > 0 {
		o.log.Warn("smoke check skipped (--force)", "slot", color)
	} else if err := p.smoke(ctx, color); err != nil {
		return nil, p.end(p.smokeRefused("switch", from, color, 0, err))
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
	if c := st.Canary; c != nil {
		// Rolling back a canary sends everything back to the active colour,
		// whose release was live before; the canary keeps running.
		st.InProgress.From, st.InProgress.To = c.Color, from
		if err := p.flip(ctx, from); err != nil {
			st.Record(state.Event{Action: "rollback", From: c.Color, To: from, Status: state.StatusFailed, Reason: err.Error()})
			return nil, p.end(err)
		}
		st.Record(state.Event{Action: "rollback", From: c.Color, To: from, Status: state.StatusRolledBack, Release: st.Slot(from).Release,
			Reason: fmt.Sprintf("ended the canary %s at %d%%", c.Color, c.Weight)})
		p.phase("done", from, "")
		return p.result("rollback", from, true, fmt.Sprintf("rolled back the canary %s (%d%%): all new requests go to %s; %s keeps running (`bgd abort` would have stopped it)",
			c.Color, c.Weight, from, c.Color)), p.end(nil)
	}
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

// flip routes all traffic to color (ending any canary) and records the
// new routing in the state. On error the previous routing is in force and
// recorded. When restoring it in the state fails too, that failure is named
// in the message; the balancer's error alone is wrapped (it decides the
// exit code).
func (p *op) flip(ctx context.Context, color config.Color) error {
	return p.flipTo(ctx, color, nil)
}

// flipTo routes traffic to color, or, with canary set, splits it between
// color and the canary's colour by its weight; the state records the new
// routing, canary included. Errors are flip's.
func (p *op) flipTo(ctx context.Context, color config.Color, canary *state.Canary) error {
	o, st := p.o, p.st
	what := "switch to " + color.String()
	if canary != nil {
		what = fmt.Sprintf("route %d%% to the canary %s", canary.Weight, canary.Color)
	}
	p.phase("switching", color, "")
	if err := p.ensureProxy(ctx, color); err != nil {
		return err
	}
	prev := *st
	st.Canary = canary
	route := o.route(st, color)
	st.Canary = prev.Canary
	was := routingOf(&prev)
	// Refuse a route the driver cannot apply before anything changes: a
	// driver that follows the state would otherwise see it saved first.
	if err := lb.Supports(o.lb, route); err != nil {
		return failf("%s: %w; traffic stays on %s", what, err, was)
	}
	apply := func() {
		st.ActiveVersion, st.Generation, st.LastSwitch = color, route.Generation, state.TimePtr(state.Now())
		st.Canary = canary
		if canary == nil {
			st.Watch = nil // what it watched no longer routes as it did
		}
	}
	restore := func() {
		st.ActiveVersion, st.LastSwitch, st.Canary, st.Watch = prev.ActiveVersion, prev.LastSwitch, prev.Canary, prev.Watch
	}
	if fs, ok := o.lb.(followsState); ok && fs.FollowsState() {
		apply()
		if err := p.save(); err != nil {
			restore()
			return err
		}
		err := o.lb.Flip(ctx, route)
		p.noteAgents()
		if errors.Is(err, fleet.ErrLagging) {
			// The routing is written and live on the hosts that applied
			// it; the others converge when they can. Rolling it back
			// would move the hosts that did: the operation goes on, and
			// its end fails naming the hosts (end).
			p.lagging = err
			countFlip(st, prev.ActiveVersion)
			return nil
		}
		if err != nil {
			// Route back under a new generation, so the proxy takes it.
			restore()
			st.Generation++
			if serr := p.save(); serr != nil {
				return failf("%s: %w; restoring %s in the state failed too: %v", what, err, was, serr)
			}
			return failf("%s: %w; traffic stays on %s", what, err, was)
		}
		countFlip(st, prev.ActiveVersion)
		return nil
	}
	if err := o.lb.Flip(ctx, route); err != nil {
		return failf("%s: %w; traffic stays on %s", what, err, was)
	}
	apply()
	countFlip(st, prev.ActiveVersion)
	return p.save()
}

// countFlip counts a confirmed flip in the state's totals when it moved
// all traffic from the colour that was active (not a canary's weight).
func countFlip(st *state.State, was config.Color) {
	if st.ActiveVersion != was {
		st.CountFlip()
	}
}

// routingOf names where st routes traffic: "blue", or "blue, with 10% to
// the canary green".
func routingOf(st *state.State) string {
	if c := st.Canary; c != nil {
		return fmt.Sprintf("%s, with %d%% to the canary %s", st.ActiveVersion, c.Weight, c.Color)
	}
	return st.ActiveVersion.String()
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
