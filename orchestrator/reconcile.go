package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// Reconciliation lists what Reconcile found and fixed.
type Reconciliation struct {
	Service string       `json:"service"`
	Active  config.Color `json:"active_version"`
	Fixes   []string     `json:"fixes"`
	// KeptCorrupt is where a corrupt state file was moved ("" if none).
	KeptCorrupt string `json:"kept_corrupt,omitempty"`
}

// Reconcile rebuilds the state from reality: which slot processes bgd
// started are alive (by their recorded identity, or by the marker in their
// environment), which answer health, which release each runs (from its
// environment), and which colour, generation and proxy the load balancer
// really has. A process bgd did not start is reported and left alone, never
// adopted. A corrupt state file is moved aside (never deleted) and rebuilt.
func (o *Orchestrator) Reconcile(ctx context.Context) (*Reconciliation, error) {
	lock, err := o.store.Lock(ctx, "reconcile", o.opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	lock.RemoveStaleTemps()
	rec := &Reconciliation{Service: o.svc.Name}
	st, err := o.loadOrRebuild(rec)
	if err != nil {
		return nil, err
	}
	o.syncUnits(st)
	if p := st.InProgress; p != nil {
		st.Record(interrupted(p))
		rec.fix("%s", interruptedNote(p))
		st.InProgress = nil
	}
	for _, c := range config.Colors {
		o.reconcileSlot(ctx, st, c, rec.fix)
	}
	o.reconcileProxy(ctx, st, rec.fix)
	st.LastCheck = state.TimePtr(state.Now())
	if err := o.store.Save(st); err != nil {
		return nil, err
	}
	rec.Active = st.ActiveVersion
	return rec, nil
}

// fix adds one line to the report.
func (r *Reconciliation) fix(format string, args ...any) {
	r.Fixes = append(r.Fixes, fmt.Sprintf(format, args...))
}

// loadOrRebuild loads the state; a corrupt file is kept aside and a new
// state returned, to be rebuilt from reality.
func (o *Orchestrator) loadOrRebuild(rec *Reconciliation) (*state.State, error) {
	st, err := o.store.Load()
	if !errors.Is(err, state.ErrCorrupt) {
		return st, err
	}
	// Copy, not rename: the state path must never go missing, or the
	// builtin proxy would read "no file" as a new state routing to blue.
	// The rebuilt state replaces the corrupt file atomically.
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	if o.etcd != nil {
		where, rerr := o.etcd.keepAside(stamp)
		if rerr != nil {
			return nil, fmt.Errorf("keep the corrupt state aside: %w", rerr)
		}
		rec.KeptCorrupt = where
		rec.fix("state in etcd was corrupt: copied to %s and rebuilt", where)
		return state.New(o.svc.Blue.Port, o.svc.Green.Port), nil
	}
	rec.KeptCorrupt = fmt.Sprintf("%s.corrupt-%s", o.statePath, stamp)
	if rerr := copyAside(o.statePath, rec.KeptCorrupt); rerr != nil {
		return nil, fmt.Errorf("keep the corrupt state aside: %w", rerr)
	}
	rec.fix("state file was corrupt: moved to %s and rebuilt", rec.KeptCorrupt)
	return state.New(o.svc.Blue.Port, o.svc.Green.Port), nil
}

// fixer reports one thing reconcile found and fixed.
type fixer func(format string, args ...any)

// reconcileSlot checks color's recorded process against its identity, adopts
// a process bgd started for the slot but never recorded, and reports a
// foreign process on the slot's port without touching it.
func (o *Orchestrator) reconcileSlot(ctx context.Context, st *state.State, c config.Color, fix fixer) {
	if st.Slot(c).Port == 0 {
		st.UpdateSlot(c, func(sl *state.SlotState) { sl.Port = o.svc.Port(c) })
	}
	if st.Slot(c).PID > 0 {
		o.checkRecorded(st, c, fix)
	}
	owner, held := o.sys.listenerOf(st.Slot(c).Port)
	if st.Slot(c).PID == 0 {
		o.adoptMarked(st, c, owner, held, fix)
	}
	if st.Slot(c).PID > 0 {
		o.releaseFromEnv(st, c, fix)
	}
	sl := st.Slot(c)
	if held && (sl.PID == 0 || owner.PID == 0 || !o.sys.inGroup(owner.PID, sl.PID)) {
		who := "a process bgd cannot see"
		if owner.PID > 0 {
			who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
		}
		fix("%s: port %d is held by %s, which bgd did not start: left alone; starting %s stays refused until it stops", c, sl.Port, who, c)
	}
	// Only a slot bgd runs can be healthy: an answer from a foreign
	// process on the port is not one.
	healthy := sl.PID > 0 && o.sys.probe(ctx, sl.Port) == nil
	if healthy != sl.Healthy {
		fix("%s: healthy is %v (was %v)", c, healthy, sl.Healthy)
		sl.Healthy = healthy
		st.SetSlot(c, sl)
	}
}

// checkRecorded keeps color's recorded pid only while it is the process bgd
// started, and records the start time a legacy state lacks.
func (o *Orchestrator) checkRecorded(st *state.State, c config.Color, fix fixer) {
	sl := st.Slot(c)
	id := o.identity(st, c)
	switch err := o.sys.check(id); {
	case err == nil && sl.StartTime == 0:
		if start, err := o.sys.startTime(id.PID); err == nil {
			sl.StartTime = start
			fix("%s: pid %d: its start time is now recorded, so a reused pid is never taken for it", c, id.PID)
		}
	case err == nil:
	case errors.Is(err, slots.ErrGone):
		fix("%s: pid %d is gone: recorded as stopped", c, id.PID)
		sl.PID, sl.StartTime = 0, 0
	default:
		fix("%s: %v: recorded as stopped and left alone", c, err)
		sl.PID, sl.StartTime = 0, 0
	}
	st.SetSlot(c, sl)
}

// adoptMarked records the process bgd started for color but never recorded
// (found by its marker). Any further one is reported, left for the next
// start of color to stop.
func (o *Orchestrator) adoptMarked(st *state.State, c config.Color, owner slots.PortOwner, held bool, fix fixer) {
	sl := st.Slot(c)
	for i, id := range o.sys.findMarked(o.marker(c)) {
		if i > 0 {
			fix("%s: pid %d (%s) was also started by bgd for this slot: left for the next start of %s to stop", c, id.PID, o.sys.commandLine(id.PID), c)
			continue
		}
		if held && owner.PID > 0 && o.sys.inGroup(owner.PID, id.PID) {
			fix("%s: port %d is served by pid %d (%s), which bgd started for this slot: adopted", c, sl.Port, id.PID, o.sys.commandLine(id.PID))
		} else {
			fix("%s: pid %d (%s) was started by bgd for port %d but never recorded: adopted", c, id.PID, o.sys.commandLine(id.PID), sl.Port)
		}
		sl.PID, sl.StartTime = id.PID, id.StartTime
		st.SetSlot(c, sl)
	}
}

// releaseFromEnv records the release color's process runs, as its
// environment says (BG_RELEASE), when it is a valid release name.
func (o *Orchestrator) releaseFromEnv(st *state.State, c config.Color, fix fixer) {
	sl := st.Slot(c)
	if rel := o.sys.getenv(sl.PID, "BG_RELEASE"); rel != sl.Release && config.CheckRelease(rel) == nil {
		fix("%s: release is %s (was %q), as the slot's environment says", c, rel, sl.Release)
		sl.Release = rel
		st.SetSlot(c, sl)
	}
}

// routeReporter is a load balancer that names the process serving the route
// and the generation it serves (the builtin proxy).
type routeReporter interface {
	Route(ctx context.Context) (*builtin.RouteInfo, error)
}

// reconcileProxy checks the recorded builtin proxy against its identity and
// rebuilds active_version, generation and proxy_pid from what the load
// balancer itself answers.
func (o *Orchestrator) reconcileProxy(ctx context.Context, st *state.State, fix fixer) {
	if st.ProxyPID > 0 {
		if err := o.sys.check(o.proxyIdentity(st)); err != nil {
			fix("builtin proxy pid %d: %v: forgotten", st.ProxyPID, err)
			st.ProxyPID, st.ProxyPIDStart = 0, 0
		}
	}
	var active config.Color
	var err error
	if rr, ok := o.lb.(routeReporter); ok {
		var ri *builtin.RouteInfo
		if ri, err = rr.Route(ctx); err == nil {
			active = ri.Active
			o.routeFromProxy(st, ri, fix)
		}
	} else {
		active, err = o.lb.Active(ctx)
	}
	switch {
	case st.Canary != nil && (err == nil && active == st.Canary.Color || errors.Is(err, haproxy.ErrEvenSplit)):
		// A split names either colour, or neither at 50/50 (HAProxy tells
		// the colours apart by their weights alone): the state's is kept.
		fix("the load balancer splits between %s and the canary %s (%d%%): active_version kept as %s", st.ActiveVersion, st.Canary.Color, st.Canary.Weight, st.ActiveVersion)
	case err != nil:
		fix("the load balancer could not be asked (%v): active_version kept as %s", err, st.ActiveVersion)
	case active.Valid() && active != st.ActiveVersion:
		fix("the load balancer routes to %s, the state said %s: state now says %s", active, st.ActiveVersion, active)
		st.ActiveVersion = active
	}
}

// routeFromProxy records the generation the builtin proxy serves when it
// is newer, and its pid when bgd started it.
func (o *Orchestrator) routeFromProxy(st *state.State, ri *builtin.RouteInfo, fix fixer) {
	if ri.Generation > st.Generation {
		fix("the builtin proxy serves generation %d, the state said %d: state now says %d", ri.Generation, st.Generation, ri.Generation)
		st.Generation = ri.Generation
	}
	if ri.PID <= 0 || ri.PID == st.ProxyPID {
		return
	}
	if id, err := o.sys.identify(ri.PID, o.proxyMarker()); err == nil {
		fix("builtin proxy pid %d, which bgd started, serves the route: recorded", ri.PID)
		st.ProxyPID, st.ProxyPIDStart = id.PID, id.StartTime
	} else if st.ProxyPID == 0 {
		fix("the builtin proxy (pid %d) was not started by bgd (a systemd unit?): it is not recorded as bgd's", ri.PID)
	}
}

// copyAside copies the regular file src to the new file dst (0600),
// streaming: a corrupt state file may be huge. Neither name is followed if
// it is a symlink.
func copyAside(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
