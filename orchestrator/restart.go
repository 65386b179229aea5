package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// gone reports whether color runs no process: none is recorded, or the
// recorded one ended (its pid may since belong to a process started
// later). A recorded pid that is alive but not bgd's (an edited state) is
// not gone: it is left to `bgd reconcile`, never replaced behind its back.
func (o *Orchestrator) gone(st *state.State, color config.Color) bool {
	if st.Slot(color).PID == 0 {
		return true
	}
	return errors.Is(o.sys.check(o.identity(st, color)), slots.ErrGone)
}

// shouldRun reports whether color's slot is meant to run: its pid is
// recorded (bgd started it and no operator stopped it since), or health
// sweeps are restarting it (a restart that failed forgot its pid). A
// fresh state, or a slot `bgd stop` stopped, is not meant to run.
func shouldRun(st *state.State, color config.Color) bool {
	return st.Slot(color).PID > 0 || st.Restarts(color) != nil
}

// restartDown restarts, under the sweep's lock, each slot that should run
// and does not (its process is gone: a crash, an OOM kill), at most
// health.max_restarts times within health.restart_window; past that it
// reports a crash loop and leaves the slot down. A slot whose process runs
// but does not answer is not restarted (a slow or busy slot is not killed
// by a timer): the sweep reports it. The probes of restarted slots are
// replaced by the restart's outcome, so a slot back healthy is no outage.
// A failed restart of the active slot is its probe's error (the sweep
// fails: the active slot is down); one of the standby is an action. It
// returns the crash loops of the standby, which fail the sweep too.
func (p *op) restartDown(ctx context.Context, probes map[config.Color]error, sw *Sweep) []error {
	var errs []error
	for _, c := range config.Colors {
		if !shouldRun(p.st, c) || !p.o.gone(p.st, c) {
			continue
		}
		err := p.restartSlot(ctx, c, sw)
		probes[c] = err
		switch {
		case err == nil || c == p.st.ActiveVersion:
		case errors.Is(err, errCrashLoop):
			errs = append(errs, err)
		default:
			sw.Actions = append(sw.Actions, firstLine(err.Error()))
		}
	}
	return errs
}

// errCrashLoop marks a slot the sweep stopped restarting.
var errCrashLoop = errors.New("crash loop")

// restartSlot restarts color on its recorded release, unless the limit is
// reached, counting the restart in the state and recording it in the
// history.
func (p *op) restartSlot(ctx context.Context, c config.Color, sw *Sweep) error {
	o, st := p.o, p.st
	h := o.svc.Health
	role := "standby"
	if c == st.ActiveVersion {
		role = "active"
	}
	sl := st.Slot(c)
	gone := "it was not running"
	if sl.PID > 0 {
		gone = fmt.Sprintf("its process (pid %d) no longer runs", sl.PID)
	}
	if h.MaxRestarts == 0 {
		return failf("%s slot %s: %s; not restarted (health.max_restarts is 0)", role, c, gone)
	}
	now := state.Now()
	r := state.Restarts{Since: now}
	if prev := st.Restarts(c); prev != nil && now.Sub(prev.Since) < h.RestartWindow.D() {
		r = *prev
	}
	if r.Count >= h.MaxRestarts {
		err := failf("%s slot %s: %w: %d restarts in %s (health.max_restarts %d within health.restart_window): not restarted again; see `bgd logs %s`, then `bgd start %s`",
			role, c, errCrashLoop, r.Count, h.RestartWindow, h.MaxRestarts, c, c)
		p.recordOnce(state.Event{Action: "restart", To: c, Status: state.StatusFailed, Release: sl.Release, Reason: err.Error()})
		return err
	}
	r.Count++
	st.SetRestarts(c, &r)
	release := sl.Release
	if release == "" {
		release = "initial"
	}
	o.log.Warn("restarting a slot that should run", "slot", c, "release", release, "restart", r.Count, "of", h.MaxRestarts)
	if err := p.startSlot(ctx, c, release); err != nil {
		err = failf("%s slot %s: %s; restart %d of %d within %s failed: %w", role, c, gone, r.Count, h.MaxRestarts, h.RestartWindow, err)
		st.Record(state.Event{Action: "restart", To: c, Status: state.StatusFailed, Release: release, Reason: firstLine(err.Error())})
		return err
	}
	st.SetFailedProbes(c, 0) // a new process: its probes count afresh
	what := fmt.Sprintf("restarted %s slot %s (release %s, pid %d): %s; restart %d of %d within %s",
		role, c, release, st.Slot(c).PID, gone, r.Count, h.MaxRestarts, h.RestartWindow)
	sw.Actions = append(sw.Actions, what)
	st.Record(state.Event{Action: "restart", To: c, Status: state.StatusSuccess, Release: release, Reason: what})
	return nil
}

// recordOnce records ev unless the last event already says the same: a
// sweep that keeps finding the same failure must not push the deploys out
// of the history.
func (p *op) recordOnce(ev state.Event) {
	h := p.st.History
	if n := len(h); n > 0 && h[n-1].Action == ev.Action && h[n-1].Status == ev.Status && h[n-1].To == ev.To && h[n-1].Reason == ev.Reason {
		return
	}
	p.st.Record(ev)
}
