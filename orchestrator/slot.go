package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// ErrPortBusy: a slot's port is held by a process that is not that slot.
var ErrPortBusy = errors.New("port held by another process")

// portBusy is an ErrFailed that also matches ErrPortBusy.
func portBusy(format string, args ...any) error {
	return failure(kindError{ErrPortBusy, fmt.Errorf(format, args...)})
}

// checkPort refuses a port held by anything but the slot's own process group.
func (o *Orchestrator) checkPort(color string, port, ownPID int) error {
	owner, held := o.sys.listenerOf(port)
	if !held {
		return nil
	}
	if owner.PID > 0 && ownPID > 0 && o.sys.inGroup(owner.PID, ownPID) {
		return nil
	}
	who := "a process bgd cannot see (another user's or another namespace's)"
	if owner.PID > 0 {
		who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
	}
	return portBusy("%s port %d is held by %s: stop that process or choose another port (%s_PORT)",
		color, port, who, strings.ToUpper(color))
}

// marker is the environment by which bgd recognises color's slot process.
func (o *Orchestrator) marker(color string) []string {
	return slots.SlotMarker(o.stateAbs, o.svc.Name, color)
}

// identity is what the state records of color's process: the only process
// bgd will signal for that slot.
func (o *Orchestrator) identity(st *state.State, color string) slots.Identity {
	sl := st.Slot(color)
	id := slots.Identity{PID: *sl.PID, StartTime: *sl.StartTime, Env: o.marker(color)}
	if id.StartTime == 0 {
		// Recorded by a bgd that kept no start times: the environment it
		// gave every slot is what recognises it.
		id.Env = []string{"PORT=" + strconv.Itoa(*sl.Port), "BG_COLOR=" + color}
	}
	return id
}

// running reports whether color's recorded process runs and is the one bgd
// started (a reused or foreign pid is not running).
func (o *Orchestrator) running(st *state.State, color string) bool {
	return o.sys.check(o.identity(st, color)) == nil
}

// stopOrphans stops color's processes that bgd started but never recorded
// (it was killed between starting one and saving its pid): they carry
// this state file's marker, so they are bgd's own, and a start of color
// replaces them anyway. Without this, such an orphan holding the port would
// refuse every later deploy.
func (p *op) stopOrphans(ctx context.Context, color string) {
	recorded := *p.st.Slot(color).PID
	o := p.o
	for _, id := range o.sys.findMarked(o.marker(color)) {
		if id.PID == recorded {
			continue
		}
		err := o.sys.stop(ctx, id, p.o.svc.StopGrace.D())
		p.o.log.Warn("stopped a slot process bgd started but never recorded", "slot", color, "pid", id.PID,
			"command", o.sys.commandLine(id.PID), "err", err)
	}
}

// startSlot starts color with release and waits until it is healthy. The pid
// is saved as soon as the process exists, so a crash leaves it findable. On
// failure the slot is stopped again and the error quotes its log.
func (p *op) startSlot(ctx context.Context, color, release string) error {
	o := p.o
	slot := p.st.Slot(color)
	port := o.svc.Port(color)
	p.stopOrphans(ctx, color)
	if err := o.checkPort(color, port, 0); err != nil {
		return err
	}
	vars := slots.Vars{Port: port, Color: color, Release: release}
	argv, dir, err := slots.Expand(o.svc.Command, o.svc.Workdir, vars)
	if err != nil {
		return fmt.Errorf("%w: service %q: %v", config.ErrInvalid, o.svc.Name, err)
	}
	if dir != "" {
		if !o.sys.isDir(dir) {
			return failf("release %s: its directory %s (workdir %q) does not exist: install the release there first", release, dir, o.svc.Workdir)
		}
	}
	env := []string{"PORT=" + strconv.Itoa(port), "BG_COLOR=" + color, "BG_RELEASE=" + release}
	for _, k := range slices.Sorted(maps.Keys(o.svc.Env)) {
		v, _, err := slots.Expand([]string{o.svc.Env[k]}, "", vars)
		if err != nil {
			return fmt.Errorf("%w: service %q: env %s: %v", config.ErrInvalid, o.svc.Name, k, err)
		}
		env = append(env, k+"="+v[0])
	}
	logPath := o.cfg.LogPath(o.svc.Name, color)
	p.phase("starting", color, fmt.Sprintf("release %s on port %d", release, port))
	proc, err := o.sys.startProcess(slots.Spec{Argv: argv, Dir: dir, Env: env, LogPath: logPath, Marker: o.marker(color)})
	if err != nil {
		return failf("start %s: %w", color, err)
	}
	o.log.Info("slot started", "slot", color, "pid", proc.PID, "port", port, "release", release)
	*slot.PID, *slot.StartTime, *slot.Port, *slot.Release, *slot.Healthy = proc.PID, proc.Identity.StartTime, port, release, false
	if err := p.save(); err != nil {
		o.sys.stop(ctx, proc.Identity, o.svc.StopGrace.D())
		return err
	}
	p.phase("waiting", color, "")
	o.log.Info("waiting for health", "slot", color, "port", port, "timeout", o.svc.Health.Timeout.D())
	lastReport := time.Now()
	err = o.sys.waitHealthy(ctx, port, slots.Wait{
		Timeout:  o.svc.Health.Timeout.D(),
		Interval: o.svc.Health.Interval.D(),
		Exited:   proc.Exited,
		OnProbe: func(elapsed time.Duration, err error) {
			o.log.Debug("slot not healthy yet", "slot", color, "port", port, "elapsed", elapsed, "err", err)
			if time.Since(lastReport) >= 250*time.Millisecond {
				lastReport = time.Now()
				p.phase("waiting", color, "")
			}
		},
	})
	if err == nil {
		// A healthy answer proves nothing if another process holds the port
		// (our slot then failed to bind, or has not yet): check who listens.
		if owner, ours := o.sys.listensOn(proc.PID, port); !ours {
			o.sys.stop(context.WithoutCancel(ctx), proc.Identity, o.svc.StopGrace.D())
			*slot.PID, *slot.StartTime, *slot.Healthy = 0, 0, false
			who := "nobody"
			if owner.PID > 0 {
				who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
			}
			return portBusy("%s port %d answered health checks, but it is held by %s, not by the slot (pid %d): stop that process or choose another port",
				color, port, who, proc.PID)
		}
		*slot.Healthy = true
		p.st.LastCheck = state.TimePtr(state.Now())
		p.phase("healthy", color, "")
		return nil
	}
	reason := err.Error()
	if errors.Is(err, slots.ErrExited) {
		reason = fmt.Sprintf("process exited at start (%v)", proc.ExitErr())
	} else {
		o.sys.stop(context.WithoutCancel(ctx), proc.Identity, o.svc.StopGrace.D())
	}
	*slot.PID, *slot.StartTime, *slot.Healthy = 0, 0, false
	tail := o.sys.logTail(logPath, 10)
	if tail != "" {
		reason += fmt.Sprintf("\nlast lines of %s:\n%s", logPath, indent(tail))
	} else {
		reason += fmt.Sprintf("\n(its log %s is empty)", logPath)
	}
	return failure(fmt.Errorf("%s (port %d) is %w: %s", color, port, ErrNotHealthy, reason))
}

// stopSlot stops color's process (SIGTERM, then SIGKILL after stop_grace),
// if it is still the process bgd started. A recorded pid that now belongs
// to another process is never signalled: it is forgotten, and the returned
// note says so ("" otherwise).
func (p *op) stopSlot(ctx context.Context, color string) (note string, err error) {
	slot := p.st.Slot(color)
	if *slot.PID > 0 {
		id := p.o.identity(p.st, color)
		err := p.o.sys.stop(ctx, id, p.o.svc.StopGrace.D())
		switch {
		case errors.Is(err, slots.ErrNotOurs):
			note = fmt.Sprintf("the recorded %s pid %d was not signalled: %v", color, id.PID, err)
			p.o.log.Warn("recorded pid is not a process bgd started: not signalled", "slot", color, "pid", id.PID, "err", err)
		case err != nil:
			return "", failf("stop %s: %w", color, err)
		default:
			p.o.log.Info("slot stopped", "slot", color, "pid", id.PID)
		}
	}
	*slot.PID, *slot.StartTime, *slot.Healthy = 0, 0, false
	return note, nil
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
