package orchestrator

import (
	"context"
	"errors"
	"fmt"
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
func checkPort(color string, port, ownPID int) error {
	owner, held := slots.ListenerOf(port)
	if !held {
		return nil
	}
	if owner.PID > 0 && ownPID > 0 && slots.InGroup(owner.PID, ownPID) {
		return nil
	}
	who := "a process bgd cannot see (another user's or another namespace's)"
	if owner.PID > 0 {
		who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
	}
	return portBusy("%s port %d is held by %s: stop that process or choose another port (%s_PORT)",
		color, port, who, strings.ToUpper(color))
}

// startSlot starts color with release and waits until it is healthy. The pid
// is saved as soon as the process exists, so a crash leaves it findable. On
// failure the slot is stopped again and the error quotes its log.
func (p *op) startSlot(ctx context.Context, color, release string) error {
	o := p.o
	slot := p.st.Slot(color)
	port := o.svc.Port(color)
	if err := checkPort(color, port, 0); err != nil {
		return err
	}
	argv, dir, err := slots.Expand(o.svc.Command, o.svc.Workdir, slots.Vars{Port: port, Color: color, Release: release})
	if err != nil {
		return fmt.Errorf("%w: service %q: %v", config.ErrInvalid, o.svc.Name, err)
	}
	env := []string{"PORT=" + strconv.Itoa(port), "BG_COLOR=" + color, "BG_RELEASE=" + release}
	for k, v := range o.svc.Env {
		env = append(env, k+"="+v)
	}
	logPath := o.cfg.LogPath(o.svc.Name, color)
	o.phase("starting", color, fmt.Sprintf("release %s on port %d", release, port))
	proc, err := slots.StartProcess(slots.Spec{Argv: argv, Dir: dir, Env: env, LogPath: logPath})
	if err != nil {
		return failf("start %s: %w", color, err)
	}
	o.log.Info("slot started", "slot", color, "pid", proc.PID, "port", port, "release", release)
	*slot.PID, *slot.Port, *slot.Release, *slot.Healthy = proc.PID, port, release, false
	if err := p.save(); err != nil {
		slots.Stop(ctx, proc.PID, o.svc.StopGrace.D())
		return err
	}
	o.phase("waiting", color, "")
	lastReport := time.Now()
	err = o.checker.WaitHealthy(ctx, slotHost, port, slots.Wait{
		Timeout:  o.svc.Health.Timeout.D(),
		Interval: o.svc.Health.Interval.D(),
		Exited:   proc.Exited,
		OnProbe: func(elapsed time.Duration, err error) {
			o.log.Info("slot not healthy yet", "slot", color, "port", port, "elapsed", elapsed, "err", err)
			if time.Since(lastReport) >= 250*time.Millisecond {
				lastReport = time.Now()
				o.phase("waiting", color, "")
			}
		},
	})
	if err == nil {
		// A healthy answer proves nothing if another process holds the port
		// (our slot then failed to bind, or has not yet): check who listens.
		if owner, ours := slots.ListensOn(proc.PID, port); !ours {
			slots.Stop(context.WithoutCancel(ctx), proc.PID, o.svc.StopGrace.D())
			*slot.PID, *slot.Healthy = 0, false
			who := "nobody"
			if owner.PID > 0 {
				who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
			}
			return portBusy("%s port %d answered health checks, but it is held by %s, not by the slot (pid %d): stop that process or choose another port",
				color, port, who, proc.PID)
		}
		*slot.Healthy = true
		p.st.LastCheck = state.TimePtr(state.Now())
		o.phase("healthy", color, "")
		return nil
	}
	reason := err.Error()
	if errors.Is(err, slots.ErrExited) {
		reason = fmt.Sprintf("process exited at start (%v)", proc.ExitErr())
	} else {
		slots.Stop(context.WithoutCancel(ctx), proc.PID, o.svc.StopGrace.D())
	}
	*slot.PID, *slot.Healthy = 0, false
	tail := slots.LogTail(logPath, 10)
	if tail != "" {
		reason += fmt.Sprintf("\nlast lines of %s:\n%s", logPath, indent(tail))
	} else {
		reason += fmt.Sprintf("\n(its log %s is empty)", logPath)
	}
	return failure(fmt.Errorf("%s (port %d) is %w: %s", color, port, ErrNotHealthy, reason))
}

// stopSlot stops color's process (SIGTERM, then SIGKILL after stop_grace).
func (p *op) stopSlot(ctx context.Context, color string) error {
	slot := p.st.Slot(color)
	if *slot.PID > 0 {
		if err := slots.Stop(ctx, *slot.PID, p.o.svc.StopGrace.D()); err != nil {
			return failf("stop %s: %w", color, err)
		}
		p.o.log.Info("slot stopped", "slot", color, "pid", *slot.PID)
	}
	*slot.PID, *slot.Healthy = 0, false
	return nil
}

// running reports whether color's recorded process is alive.
func running(st *state.State, color string) bool { return slots.Alive(*st.Slot(color).PID) }

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
