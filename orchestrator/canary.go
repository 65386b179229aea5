package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// A canary splits new requests between the active colour and the standby,
// which runs the new release: the standby gets a weight (a percentage,
// 1-99) and the active colour the rest. The state records the split
// (state.Canary) and every flip carries it to the load balancer, which
// confirms it. Promote ends the split on the canary's side (a plain flip
// to it; the old colour keeps running for rollback); Abort ends it on the
// active side and stops the canary. Any other flip (switch, rollback, a
// health sweep's failover) also ends it.

// CheckWeight refuses a canary weight outside 1-99: 0 is no canary (bgd
// abort) and 100 is the whole flip (bgd promote).
func CheckWeight(w int) error {
	switch {
	case w == 0:
		return usagef("canary weight 0: to send nothing to the canary, end it with `bgd abort`")
	case w == 100:
		return usagef("canary weight 100: to send everything to the canary, finish it with `bgd promote`")
	case w < 1 || w > 100:
		return usagef("canary weight %d: a percentage of new requests, 1-99", w)
	}
	return nil
}

// checkSteps refuses canary steps that are not increasing percentages in
// 1-100; only the last may be 100 (it promotes the canary).
func checkSteps(steps []int) error {
	for i, w := range steps {
		if w < 1 || w > 100 {
			return usagef("canary step %d: a percentage of new requests, 1-100", w)
		}
		if i > 0 && w <= steps[i-1] {
			return usagef("canary steps %v: each step must send more than the one before", steps)
		}
	}
	return nil
}

// Canary sets the canary's weight: w percent of new requests go to the
// standby colour, which must be running and healthy (bgd deploy --no-switch
// or --canary started it). It starts a canary when none is in force.
func (o *Orchestrator) Canary(ctx context.Context, w int) (*Result, error) {
	if err := CheckWeight(w); err != nil {
		return nil, err
	}
	p, err := o.begin(ctx, "canary", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	canary := st.ActiveVersion.Other()
	st.InProgress.From, st.InProgress.To = st.ActiveVersion, canary
	if err := p.checkTarget(ctx, canary, "send traffic to the canary", false); err != nil {
		return nil, p.end(err)
	}
	if st.Canary == nil {
		if err := p.smoke(ctx, canary); err != nil {
			return nil, p.end(p.smokeRefused("canary", st.ActiveVersion, canary, w, err))
		}
	}
	was := 0
	if st.Canary != nil {
		was = st.Canary.Weight
	}
	if err := p.setWeight(ctx, w); err != nil {
		return nil, p.end(err)
	}
	msg := fmt.Sprintf("%d%% of new requests go to the canary %s (release %s), %d%% to %s",
		w, canary, st.Slot(canary).Release, 100-w, st.ActiveVersion)
	if was == w {
		msg = fmt.Sprintf("the canary %s already gets %d%% of new requests", canary, w)
	}
	return p.result("canary", canary, was != w, msg), p.end(nil)
}

// setWeight routes w percent of new requests (1-99) to the standby and
// records the step in the history.
func (p *op) setWeight(ctx context.Context, w int) error {
	st := p.st
	active, canary := st.ActiveVersion, st.ActiveVersion.Other()
	c := &state.Canary{Color: canary, Weight: w, Sticky: p.o.svc.Canary.Sticky, Started: state.Now()}
	if st.Canary != nil {
		if st.Canary.Weight == w {
			return nil
		}
		c.Started = st.Canary.Started
	}
	ev := state.Event{Action: "canary", From: active, To: canary, Release: st.Slot(canary).Release, Weight: w}
	if err := p.flipTo(ctx, active, c); err != nil {
		ev.Status, ev.Reason = state.StatusFailed, err.Error()
		st.Record(ev)
		return err
	}
	ev.Status = state.StatusSuccess
	st.Record(ev)
	p.o.log.Info("canary", "slot", canary, "weight", w)
	if st.Watch == nil && p.o.svc.Analysis.Window > 0 {
		// With analysis on, health sweeps judge the canary as long as it lasts.
		return p.recordWatch(ctx, canary, st.Slot(canary).Release, time.Time{})
	}
	return nil
}

// Promote finishes a canary: all new requests go to the canary's colour,
// which becomes the active one; the old colour keeps running for rollback.
func (o *Orchestrator) Promote(ctx context.Context) (*Result, error) {
	p, err := o.begin(ctx, "promote", "", "")
	if err != nil {
		return nil, err
	}
	res, err := p.promote(ctx)
	return res, p.end(err)
}

func (p *op) promote(ctx context.Context) (*Result, error) {
	st := p.st
	c := st.Canary
	if c == nil {
		return nil, usagef("no canary is in force: `bgd canary N` or `bgd deploy --canary N` starts one")
	}
	from := st.ActiveVersion
	st.InProgress.From, st.InProgress.To = from, c.Color
	if err := p.checkTarget(ctx, c.Color, "promote", false); err != nil {
		return nil, err
	}
	if err := p.smoke(ctx, c.Color); err != nil {
		return nil, p.smokeRefused("promote", from, c.Color, 100, err)
	}
	if err := p.flip(ctx, c.Color); err != nil {
		st.Record(state.Event{Action: "promote", From: from, To: c.Color, Status: state.StatusFailed, Weight: 100, Reason: err.Error()})
		return nil, err
	}
	st.Record(state.Event{Action: "promote", From: from, To: c.Color, Status: state.StatusSuccess, Weight: 100, Release: st.Slot(c.Color).Release})
	p.phase("done", c.Color, "")
	return p.result("promote", c.Color, true, fmt.Sprintf("the canary %s (release %s) is live: it gets all new requests, up from %d%%; %s keeps running for rollback",
		c.Color, st.Slot(c.Color).Release, c.Weight, from)), nil
}

// Abort ends a canary on the active side: all new requests go to the
// active colour again, then the canary is drained and stopped.
func (o *Orchestrator) Abort(ctx context.Context) (*Result, error) {
	p, err := o.begin(ctx, "abort", "", "")
	if err != nil {
		return nil, err
	}
	res, err := p.abort(ctx, "bgd abort")
	return res, p.end(err)
}

// abort ends the canary in force (flip to the active colour alone), then
// drains and stops the canary; why is recorded as the history's reason.
func (p *op) abort(ctx context.Context, why string) (*Result, error) {
	st := p.st
	c := st.Canary
	if c == nil {
		return nil, usagef("no canary is in force: nothing to abort (`bgd rollback` flips back after a full deploy)")
	}
	active := st.ActiveVersion
	if st.InProgress != nil { // nil in a health sweep, which marks nothing in progress
		st.InProgress.From, st.InProgress.To = c.Color, active
	}
	release := st.Slot(c.Color).Release
	if err := p.flip(ctx, active); err != nil {
		st.Record(state.Event{Action: "abort", From: c.Color, To: active, Status: state.StatusFailed, Release: release, Reason: err.Error()})
		return nil, err
	}
	note, err := p.stopServed(ctx, c.Color)
	if err != nil {
		st.Record(state.Event{Action: "abort", From: c.Color, To: active, Status: state.StatusFailed, Release: release,
			Reason: "traffic is back on " + active.String() + ", but stopping the canary failed: " + err.Error()})
		return nil, failf("all traffic is back on %s, but the canary %s was not stopped: %w", active, c.Color, err)
	}
	status := state.StatusRolledBack
	if p.analysis != nil && p.analysis.Failed {
		status = state.StatusAutoRolledBack
	}
	st.Record(state.Event{Action: "abort", From: c.Color, To: active, Status: status, Release: release, Reason: why})
	p.phase("done", active, "")
	msg := fmt.Sprintf("canary %s (release %s) aborted at %d%%: all new requests go to %s; %s stopped", c.Color, release, c.Weight, active, c.Color)
	if note != "" {
		msg += "; " + note
	}
	return p.result("abort", c.Color, true, msg), nil
}

// canaryDeploy sends d.Canary's first weight to the new slot to, which
// is healthy, then, with d.Steps, advances step by step: every
// d.StepInterval the canary is judged (judgeCanary); a failing one is
// aborted, a step of 100 promotes it.
func (p *op) canaryDeploy(ctx context.Context, d DeployOptions, from, to config.Color) (*Result, error) {
	steps := d.canarySteps()
	if err := p.setWeight(ctx, steps[0]); err != nil {
		// Nothing was routed to the new slot: stop it, as a failed flip does.
		if _, serr := p.stopSlot(context.WithoutCancel(ctx), to); serr != nil {
			return nil, fmt.Errorf("%w; the new slot was not stopped: %w", err, serr)
		}
		return nil, err
	}
	for _, w := range steps[1:] {
		p.phase("canary", to, fmt.Sprintf("%d%%, next %d%% in %s", p.st.Canary.Weight, w, d.StepInterval))
		if err := p.judgeStep(ctx, to, d.StepInterval); err != nil {
			if ctx.Err() != nil {
				return nil, failf("canary steps interrupted (%v): %s still gets %d%% of new requests; `bgd canary N`, `bgd promote` or `bgd abort` go on from here",
					ctx.Err(), to, p.st.Canary.Weight)
			}
			return nil, failure(p.abortAfter(ctx, fmt.Errorf("the canary %s failed at %d%%: %w", to, p.st.Canary.Weight, err)))
		}
		if w == 100 {
			return p.promote(ctx)
		}
		if err := p.setWeight(ctx, w); err != nil {
			return nil, p.abortAfter(ctx, err)
		}
	}
	c := p.st.Canary
	p.phase("done", to, "")
	return p.result("deploy", to, true, fmt.Sprintf("release %s is the canary on %s: %d%% of new requests; %s gets the rest (`bgd promote` finishes, `bgd abort` ends it)",
		d.Release, to, c.Weight, from)), nil
}

// abortAfter ends a canary after err, when one is in force, and returns
// err with what the abort did.
func (p *op) abortAfter(ctx context.Context, err error) error {
	if p.st.Canary == nil {
		return err
	}
	res, aerr := p.abort(context.WithoutCancel(ctx), err.Error())
	if aerr != nil {
		return fmt.Errorf("%w; ending the canary failed too: %w", err, aerr)
	}
	return fmt.Errorf("%w; %s", err, res.Message)
}

// judgeStep watches the canary color for one step: with a load balancer
// that counts answers (lb.Observer), its analysis (the thresholds of
// analysis:) over the whole step, ended early by a crossed threshold;
// otherwise a wait. Then the canary must still answer its health check.
func (p *op) judgeStep(ctx context.Context, color config.Color, step time.Duration) error {
	if _, err := p.o.observer(); err == nil {
		a, err := p.watch(ctx, color, step)
		if err != nil {
			return err
		}
		p.analysis = a
		if a.Failed {
			return fmt.Errorf("%w: %s", errAnalysisFailed, a.Message)
		}
	} else {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
		}
	}
	err := p.o.sys.probe(ctx, p.st.Slot(color).Port)
	p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = err == nil })
	p.st.LastCheck = state.TimePtr(state.Now())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotHealthy, err)
	}
	return nil
}

// canarySteps are the weights a canary deploy goes through: d.Steps, or
// d.Canary alone.
func (d DeployOptions) canarySteps() []int {
	if len(d.Steps) > 0 {
		return d.Steps
	}
	return []int{d.Canary}
}
