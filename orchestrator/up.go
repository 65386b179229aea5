package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// UpResult says what Up did to bring one service to its recorded state.
type UpResult struct {
	Service string `json:"service"`
	// Active is the colour receiving traffic afterwards.
	Active config.Color `json:"active_version"`
	// Changed is false when everything already ran as recorded.
	Changed bool `json:"changed"`
	// Actions lists what was done, in order ([] when nothing was needed).
	Actions  []string      `json:"actions"`
	Duration time.Duration `json:"duration_ns"`
	Message  string        `json:"message"`
}

func (r *UpResult) act(format string, args ...any) {
	r.Actions = append(r.Actions, fmt.Sprintf(format, args...))
}

// Up converges reality to the recorded state, idempotently (at boot, from
// a timer, by hand): the active colour runs its recorded release, healthy
// (on a fresh state, blue starts as `bgd start blue` would); the builtin
// proxy runs (one that answers, whoever runs it, is left alone; else a
// detached one is started, as Start does); the load balancer routes to
// the active colour (nginx and HAProxy confirm it); the standby runs its
// recorded release if the state says it was running (its pid is recorded,
// or health sweeps were restarting it).
// An operation the state records as interrupted is recorded as failed, as
// every operation does, and reported. It fails (ErrFailed) only when the
// active slot cannot be brought up healthy or routed to; a standby that
// does not start is reported, recorded in the history and forgotten.
func (o *Orchestrator) Up(ctx context.Context) (*UpResult, error) {
	p, err := o.begin(ctx, "up", "", "")
	if err != nil {
		return nil, err
	}
	res := &UpResult{Service: o.svc.Name, Actions: []string{}}
	err = p.up(ctx, res)
	res.Active, res.Changed, res.Duration = p.st.ActiveVersion, len(res.Actions) > 0, time.Since(p.began)
	if err != nil {
		return res, p.end(err)
	}
	p.phase("done", res.Active, "")
	res.Message = fmt.Sprintf("%s is up: %s active on port %d", o.svc.Name, res.Active, p.st.Slot(res.Active).Port)
	if !res.Changed {
		res.Message += "; nothing to do"
	} else {
		p.st.Record(state.Event{Action: "up", To: res.Active, Status: state.StatusSuccess,
			Release: p.st.Slot(res.Active).Release, Reason: strings.Join(res.Actions, "; ")})
	}
	return res, p.end(nil)
}

// up does Up's work under the operation's lock, recording what it did in res.
func (p *op) up(ctx context.Context, res *UpResult) error {
	st := p.st
	if p.interrupted != nil {
		res.act("%s", interruptedNote(p.interrupted))
	}
	active := st.ActiveVersion
	st.InProgress.To = active
	if err := p.upSlot(ctx, active, "active", res); err != nil {
		return err
	}
	if ps, ok := p.o.lb.(proxyStarter); ok {
		pid, err := ps.Ensure(ctx)
		if pid > 0 {
			// Recorded even when it does not answer, so it can be found.
			p.o.recordProxy(st, pid)
			res.act("started the builtin proxy (pid %d)", pid)
		}
		if err != nil {
			return failf("builtin proxy: %w", err)
		}
	}
	flipped, err := p.ensureRouted(ctx, active)
	if err != nil {
		return err
	}
	if flipped {
		res.act("routed the load balancer to %s (generation %d)", active, st.Generation)
	}
	standby := active.Other()
	if !shouldRun(st, standby) {
		return nil
	}
	if err := p.upSlot(ctx, standby, "standby", res); err != nil {
		res.act("standby %s was not started: %s", standby, firstLine(err.Error()))
		p.o.log.Warn("standby slot did not start", "slot", standby, "err", err)
	}
	return nil
}

// upSlot starts color on its recorded release unless it runs healthy, and
// reports a start in res. A failed start is recorded (startIfNeeded).
func (p *op) upSlot(ctx context.Context, color config.Color, role string, res *UpResult) error {
	was, wasRunning := p.st.Slot(color), p.o.running(p.st, color)
	started, err := p.startIfNeeded(ctx, color, "")
	if err != nil {
		return err
	}
	if !started {
		return nil
	}
	now := p.st.Slot(color)
	why := "it was not running"
	switch {
	case wasRunning:
		why = fmt.Sprintf("pid %d did not answer its health check: replaced", was.PID)
	case was.PID > 0:
		why = fmt.Sprintf("its recorded pid %d no longer runs", was.PID)
	}
	res.act("started %s slot %s (release %s, pid %d, port %d): %s", role, color, now.Release, now.PID, now.Port, why)
	return nil
}

// firstLine is s up to its first newline (an error quoting a slot's log).
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
