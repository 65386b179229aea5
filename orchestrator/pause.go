package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/state"
)

// A pause has the load balancer hold the service's new requests (they wait,
// they do not fail) until bgd resume, or until the pause's deadline
// (pause_timeout, or bgd pause --timeout) passes, after which the load
// balancer releases them by itself. The state records it (state.Paused)
// and every flip carries what is left of it (lb.Route.Pause), so a switch
// or a deploy made while paused is allowed: the held requests are released
// to the new routing.
//
// Maintenance has the load balancer answer every request of the service
// 503 with Retry-After (lb.MaintenanceRetryAfter) and a page instead of
// routing it (state.Maintenance, lb.Route.Maintenance); flips made during
// maintenance change the routing that maintenance off brings back.
//
// Both are refused, before anything changes, by a driver that cannot do
// them (lb.ErrUnsupported: exit 2).

// maxMaintenancePage bounds a maintenance page: the drivers answer it from
// memory (HAProxy from a buffer).
const maxMaintenancePage = builtin.MaxMaintenancePage

// applyHolds sets r's pause (what is left of the state's, if any) and
// maintenance from st. A maintenance page that can no longer be read is
// logged and left out (the driver answers its own text): maintenance must
// still answer 503.
func (o *Orchestrator) applyHolds(st *state.State, r *lb.Route) {
	if ps := st.Paused; ps != nil {
		// What is left, to the millisecond above (so never 0 while paused).
		if left := time.Until(ps.Until); left > 0 {
			r.Pause = (left + time.Millisecond - 1).Truncate(time.Millisecond)
		}
	}
	if !st.Maintenance {
		return
	}
	r.Maintenance = true
	if st.MaintenancePage != "" {
		page, err := readPage(st.MaintenancePage)
		if err != nil {
			o.log.Error("maintenance page unreadable: the load balancer answers its own text", "page", st.MaintenancePage, "err", err)
			return
		}
		r.MaintenancePage = page
	}
}

// readPage reads a maintenance page: a regular file (never a FIFO or a
// device, which could block a root-run bgd), refusing one too big to answer.
func readPage(path string) (string, error) {
	b, err := fsx.ReadRegular(path, maxMaintenancePage)
	if err != nil {
		return "", fmt.Errorf("maintenance page: %w", err)
	}
	return string(b), nil
}

// absOrEmpty is path made absolute ("" stays "").
func absOrEmpty(path string) string {
	if path == "" {
		return ""
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// pausedNow is st's pause if it is still in force (its deadline not
// passed), nil otherwise.
func pausedNow(st *state.State) *state.Pause {
	if ps := st.Paused; ps != nil && time.Now().Before(ps.Until) {
		return ps
	}
	return nil
}

// Pause has the load balancer hold the service's new requests until Resume,
// or for timeout at most (0: the service's pause_timeout), after which it
// releases them by itself. Pausing again while paused sets a new deadline;
// the requests held stay held.
func (o *Orchestrator) Pause(ctx context.Context, timeout time.Duration) (*Result, error) {
	if timeout < 0 {
		return nil, usagef("--timeout %s is negative: how long requests may be held, e.g. 30s", timeout)
	}
	if timeout == 0 {
		timeout = o.svc.PauseTimeout.D()
	}
	p, err := o.begin(ctx, "pause", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	if st.Maintenance {
		return nil, p.end(usagef("the service is in maintenance: every request is answered 503, so there is nothing to hold (`bgd maintenance off` first)"))
	}
	prev := st.Paused
	now := state.Now()
	np := &state.Pause{Since: now, Until: now.Add(timeout)}
	if cur := pausedNow(st); cur != nil {
		np.Since = cur.Since
	}
	ev := state.Event{Action: "pause", From: st.ActiveVersion, To: st.ActiveVersion,
		Reason: fmt.Sprintf("new requests held for at most %s, until %s", timeout, np.Until.Format(time.RFC3339))}
	st.Paused = np
	if err := p.reapply(ctx, "bgd pause", func() { st.Paused = prev }); err != nil {
		ev.Status, ev.Reason = state.StatusFailed, err.Error()
		st.Record(ev)
		return nil, p.end(err)
	}
	ev.Status = state.StatusSuccess
	st.Record(ev)
	o.log.Info("paused", "until", np.Until)
	msg := fmt.Sprintf("new requests are held until `bgd resume`, or released by the load balancer at %s (%s)", np.Until.Format(time.RFC3339), timeout)
	if prev != nil && pausedNow(&state.State{Paused: prev}) != nil {
		msg = fmt.Sprintf("still paused (since %s): new requests are now held until `bgd resume`, or until %s (%s)",
			np.Since.Format(time.RFC3339), np.Until.Format(time.RFC3339), timeout)
	}
	return p.result("pause", "", true, msg), p.end(nil)
}

// Resume ends a pause: the load balancer releases the requests it holds to
// the routing in force, and routes new ones again.
func (o *Orchestrator) Resume(ctx context.Context) (*Result, error) {
	p, err := o.begin(ctx, "resume", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	prev := st.Paused
	if prev == nil {
		return p.result("resume", "", false, "not paused: requests are routed"), p.end(nil)
	}
	held := time.Since(prev.Since).Round(time.Millisecond)
	expired := pausedNow(st) == nil
	st.Paused = nil
	ev := state.Event{Action: "resume", From: st.ActiveVersion, To: st.ActiveVersion,
		Reason: fmt.Sprintf("paused since %s (%s)", prev.Since.Format(time.RFC3339), held)}
	if err := p.reapply(ctx, "bgd resume", func() { st.Paused = prev }); err != nil {
		ev.Status, ev.Reason = state.StatusFailed, err.Error()
		st.Record(ev)
		return nil, p.end(err)
	}
	ev.Status = state.StatusSuccess
	st.Record(ev)
	msg := fmt.Sprintf("resumed after %s: held requests go to %s", held, routingOf(st))
	if expired {
		msg = fmt.Sprintf("the pause had already timed out at %s (the load balancer released its requests then); requests are routed to %s",
			prev.Until.Format(time.RFC3339), routingOf(st))
	}
	return p.result("resume", "", true, msg), p.end(nil)
}

// Maintenance turns maintenance on (page: an HTML file, "" for the
// service's maintenance_page, else the load balancer's own text) or off.
func (o *Orchestrator) Maintenance(ctx context.Context, on bool, page string) (*Result, error) {
	if !on && page != "" {
		return nil, usagef("--page is for `bgd maintenance on`")
	}
	if on {
		if page == "" {
			page = o.svc.MaintenancePage
		}
		if page != "" {
			abs, err := filepath.Abs(page)
			if err != nil {
				return nil, usagef("maintenance page %s: %v", page, err)
			}
			if _, err := readPage(abs); err != nil {
				return nil, usagef("maintenance page: %v: give a readable HTML file (--page or maintenance_page)", err)
			}
			page = abs
		}
	}
	p, err := o.begin(ctx, "maintenance", "", "")
	if err != nil {
		return nil, err
	}
	st := p.st
	if on && pausedNow(st) != nil {
		return nil, p.end(usagef("the service is paused: its held requests would all be answered 503 (`bgd resume` first)"))
	}
	if st.Maintenance == on && (!on || st.MaintenancePage == page) {
		state := "off: requests are routed"
		if on {
			state = "already on: every request is answered 503"
		}
		return p.result("maintenance", "", false, "maintenance "+state), p.end(nil)
	}
	if on && page != "" {
		if err := o.copyPage(page); err != nil {
			return nil, p.end(err)
		}
	}
	prevOn, prevPage := st.Maintenance, st.MaintenancePage
	st.Maintenance, st.MaintenancePage = on, page
	if !on {
		st.MaintenancePage = ""
	}
	action := "maintenance_off"
	if on {
		action = "maintenance_on"
	}
	ev := state.Event{Action: action, From: st.ActiveVersion, To: st.ActiveVersion, Reason: page}
	if err := p.reapply(ctx, "bgd maintenance "+map[bool]string{true: "on", false: "off"}[on], func() { st.Maintenance, st.MaintenancePage = prevOn, prevPage }); err != nil {
		ev.Status, ev.Reason = state.StatusFailed, err.Error()
		st.Record(ev)
		return nil, p.end(err)
	}
	ev.Status = state.StatusSuccess
	st.Record(ev)
	msg := "maintenance off: requests are routed to " + routingOf(st) + " again"
	if on {
		what := "the load balancer's own text"
		if page != "" {
			what = page
		}
		msg = fmt.Sprintf("maintenance on: every request is answered 503 (Retry-After %s) with %s; `bgd maintenance off` routes again", lb.MaintenanceRetryAfter, what)
	}
	return p.result("maintenance", "", true, msg), p.end(nil)
}

// copyPage copies the maintenance page where the builtin proxy reads it
// (builtin.PagePath beside the state file), before the state names it: the
// proxy never opens a path the state file chooses. Other drivers get the
// page in the route.
func (o *Orchestrator) copyPage(page string) error {
	if fs, ok := o.lb.(followsState); !ok || !fs.FollowsState() {
		return nil
	}
	body, err := readPage(page)
	if err != nil {
		return usagef("%v", err)
	}
	if err := fsx.WriteFileAtomic(builtin.PagePath(o.statePath), []byte(body), 0o644); err != nil {
		return failf("maintenance page: copying it beside the state file for the proxy: %w", err)
	}
	return nil
}

// reapply has the load balancer apply the state's routing as it is now (a
// pause or maintenance changed): a flip to the active colour, the canary
// kept. A driver that cannot is refused first, naming what (bgd pause,
// bgd maintenance on) and that nothing changed. On error, undo puts the
// state's pause or maintenance back, and the state is saved so that a load
// balancer that follows it sees it back too.
func (p *op) reapply(ctx context.Context, what string, undo func()) error {
	st := p.st
	route := p.o.route(st, st.ActiveVersion)
	err := lb.Supports(p.o.lb, route)
	if err == nil {
		// Render refuses what Flip would (e.g. a page HAProxy cannot answer).
		if _, rerr := p.o.lb.Render(route); errors.Is(rerr, lb.ErrUnsupported) || errors.Is(rerr, lb.ErrInvalidRoute) {
			err = rerr
		}
	}
	if err != nil {
		undo()
		return failf("%s: %w; nothing changed", what, err)
	}
	lastSwitch := st.LastSwitch
	err = p.flipTo(ctx, st.ActiveVersion, st.Canary)
	if err == nil {
		// Traffic did not switch: last_switch stays the last real flip's
		// (p.end saves it).
		st.LastSwitch = lastSwitch
		return nil
	}
	undo()
	if serr := p.save(); serr != nil {
		return fmt.Errorf("%w; saving the state back failed too: %v", err, serr)
	}
	return err
}
