package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// Reconciliation lists what Reconcile found and fixed.
type Reconciliation struct {
	Service string   `json:"service"`
	Active  string   `json:"active_version"`
	Fixes   []string `json:"fixes"`
	// KeptCorrupt is where a corrupt state file was moved ("" if none).
	KeptCorrupt string `json:"kept_corrupt,omitempty"`
}

// Reconcile rebuilds the state from reality: which slot processes are alive
// (by pid, or by who listens on the slot's port), which answer health, and
// which colour the load balancer really routes to. A corrupt state file is
// moved aside (never deleted) and rebuilt.
func (o *Orchestrator) Reconcile(ctx context.Context) (*Reconciliation, error) {
	o.began = time.Now()
	lock, err := o.store.Lock(ctx, "reconcile", o.opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	lock.RemoveStaleTemps()
	rec := &Reconciliation{Service: o.svc.Name}
	fix := func(format string, args ...any) { rec.Fixes = append(rec.Fixes, fmt.Sprintf(format, args...)) }
	st, err := o.store.Load()
	if errors.Is(err, state.ErrCorrupt) {
		// Copy, not rename: the state path must never go missing, or the
		// builtin proxy would read "no file" as a new state routing to blue.
		// The rebuilt state replaces the corrupt file atomically below.
		rec.KeptCorrupt = fmt.Sprintf("%s.corrupt-%s", o.store.Path, time.Now().UTC().Format("20060102T150405.000000000Z"))
		bad, rerr := os.ReadFile(o.store.Path)
		if rerr == nil {
			rerr = state.WriteFileAtomic(rec.KeptCorrupt, bad, 0o600)
		}
		if rerr != nil {
			return nil, fmt.Errorf("keep the corrupt state aside: %w", rerr)
		}
		fix("state file was corrupt: moved to %s and rebuilt", rec.KeptCorrupt)
		st = state.New(o.svc.Blue.Port, o.svc.Green.Port)
	} else if err != nil {
		return nil, err
	}
	if p := st.InProgress; p != nil {
		st.Record(state.Event{Action: p.Command, From: p.From, To: p.To, Status: state.StatusFailed,
			Reason: fmt.Sprintf("interrupted: %s (pid %d) started at %s and never finished", p.Command, p.PID, p.Started.Format(time.RFC3339))})
		fix("%s (pid %d) was interrupted: recorded as failed", p.Command, p.PID)
		st.InProgress = nil
	}
	for _, c := range config.Colors {
		sl := st.Slot(c)
		if *sl.Port == 0 {
			*sl.Port = o.svc.Port(c)
		}
		alive := slots.Alive(*sl.PID)
		owner, held := slots.ListenerOf(*sl.Port)
		switch {
		case *sl.PID > 0 && !alive:
			fix("%s: pid %d is gone: recorded as stopped", c, *sl.PID)
			*sl.PID = 0
		}
		if held && owner.PID > 0 && (*sl.PID == 0 || !slots.InGroup(owner.PID, *sl.PID)) {
			leader := owner.PID
			if pg, err := slots.ProcessGroup(owner.PID); err == nil && pg > 0 {
				leader = pg
			}
			if *sl.PID != leader {
				fix("%s: port %d is served by pid %d (%s): adopted", c, *sl.Port, leader, slots.CommandLine(leader))
				*sl.PID = leader
			}
		}
		if !held && *sl.PID == 0 {
			// A slot started by a bgd killed before it saved the pid, and
			// not listening yet: found by the environment bgd gave it.
			for _, pid := range slots.FindByEnv("PORT="+strconv.Itoa(*sl.Port), "BG_COLOR="+c) {
				if pg, err := slots.ProcessGroup(pid); err == nil && pg == pid {
					fix("%s: pid %d (%s) was started for port %d but never recorded: adopted", c, pid, slots.CommandLine(pid), *sl.Port)
					*sl.PID = pid
					break
				}
			}
		}
		healthy := o.checker.Probe(ctx, slotHost, *sl.Port) == nil
		if healthy != *sl.Healthy {
			fix("%s: healthy is %v (was %v)", c, healthy, *sl.Healthy)
			*sl.Healthy = healthy
		}
	}
	if st.ProxyPID > 0 && !slots.Alive(st.ProxyPID) {
		fix("builtin proxy pid %d is gone", st.ProxyPID)
		st.ProxyPID = 0
	}
	if active, err := o.lb.Active(ctx); err == nil && config.ValidColor(active) && active != st.ActiveVersion {
		fix("the load balancer routes to %s, the state said %s: state now says %s", active, st.ActiveVersion, active)
		st.ActiveVersion = active
	} else if err != nil {
		fix("the load balancer could not be asked (%v): active_version kept as %s", err, st.ActiveVersion)
	}
	st.LastCheck = state.TimePtr(state.Now())
	if err := o.store.Save(st); err != nil {
		return nil, err
	}
	rec.Active = st.ActiveVersion
	return rec, nil
}
