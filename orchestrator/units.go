package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// systemdOS is base with the slots run as systemd units (runner: systemd):
// started with systemd-run, stopped with systemctl stop (bgd signals no
// pid itself), their logs read from the journal, their current pid the
// unit's MainPID. Where systemd is not PID 1, starting or stopping a slot
// is a usage error (exit 2), naming the runner.
func systemdOS(base osEnv, u *slots.Systemd) osEnv {
	env := base
	env.startProcess = func(spec slots.Spec) (*slots.Process, error) {
		unit, ok := slots.UnitOfMarker(spec.Marker)
		if !ok {
			return nil, fmt.Errorf("start slot: no slot marker to name its unit by")
		}
		p, err := u.Start(spec, unit)
		return p, noSystemdIsUsage(err)
	}
	env.stop = func(ctx context.Context, id slots.Identity, _ time.Duration) error {
		unit, ok := slots.UnitOfMarker(id.Env)
		if !ok {
			return fmt.Errorf("pid %d: %w: no slot marker names its unit, and the systemd runner signals no pid", id.PID, slots.ErrNotOurs)
		}
		return noSystemdIsUsage(u.Stop(ctx, unit, id.Env))
	}
	env.logTail = func(unit string, n int) string {
		out, _ := u.JournalTail(unit, n)
		return out
	}
	env.mainPID = u.MainPID
	return env
}

// noSystemdIsUsage marks slots.ErrNoSystemd as a usage error (exit 2).
func noSystemdIsUsage(err error) error {
	if errors.Is(err, slots.ErrNoSystemd) {
		return kindError{ErrUsage, err}
	}
	return err
}

// syncUnits records, under the systemd runner, the pid each slot's unit
// runs now when it is not the recorded one: systemd restarted the slot
// (Restart=on-failure). The new process is taken only if it carries the
// slot's marker (slots.Identify), so a unit bgd did not start is never
// adopted. With the process runner it does nothing.
func (o *Orchestrator) syncUnits(st *state.State) {
	if o.units == nil || o.sys.mainPID == nil {
		return
	}
	for _, c := range config.Colors {
		pid := o.sys.mainPID(slots.SlotUnit(o.svc.Name, c.String()))
		sl := st.Slot(c)
		if pid <= 0 || pid == sl.PID {
			continue
		}
		id, err := o.sys.identify(pid, o.marker(c))
		if err != nil {
			o.log.Warn("the slot's unit runs a process bgd does not recognise: not recorded", "slot", c, "pid", pid, "err", err)
			continue
		}
		o.log.Info("systemd restarted the slot: its new pid is recorded", "slot", c, "was", sl.PID, "pid", pid)
		st.UpdateSlot(c, func(s *state.SlotState) { s.PID, s.StartTime = id.PID, id.StartTime })
	}
}
