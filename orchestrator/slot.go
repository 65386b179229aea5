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
	"unicode"

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
func (o *Orchestrator) checkPort(color config.Color, port, ownPID int) error {
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
		color, port, who, strings.ToUpper(color.String()))
}

// marker is the environment by which bgd recognises color's slot process.
func (o *Orchestrator) marker(color config.Color) []string {
	return slots.SlotMarker(o.stateAbs, o.svc.Name, color.String())
}

// proxyMarker is the environment by which bgd recognises the builtin proxy
// it started for this service.
func (o *Orchestrator) proxyMarker() []string { return slots.ProxyMarker(o.stateAbs, o.svc.Name) }

// identity is what the state records of color's process: the only process
// bgd will signal for that slot.
func (o *Orchestrator) identity(st *state.State, color config.Color) slots.Identity {
	sl := st.Slot(color)
	id := slots.Identity{PID: sl.PID, StartTime: sl.StartTime, Env: o.marker(color)}
	if id.StartTime == 0 && o.units == nil {
		// Recorded by a bgd that kept no start times: the environment it
		// gave every slot is what recognises it. (Units are newer: they
		// always carry the marker, which names the unit to stop.)
		id.Env = []string{"PORT=" + strconv.Itoa(sl.Port), "BG_COLOR=" + color.String()}
	}
	return id
}

// running reports whether color's recorded process runs and is the one bgd
// started (a reused or foreign pid is not running).
func (o *Orchestrator) running(st *state.State, color config.Color) bool {
	return o.sys.check(o.identity(st, color)) == nil
}

// stopOrphans stops color's processes that bgd started but never recorded
// (it was killed between starting one and saving its pid): they carry
// this state file's marker, so they are bgd's own, and a start of color
// replaces them anyway. Without this, such an orphan holding the port would
// refuse every later deploy. One that could not be stopped fails the start:
// two processes of one slot must never run.
func (p *op) stopOrphans(ctx context.Context, color config.Color) error {
	o := p.o
	recorded := p.st.Slot(color).PID
	var errs []error
	for _, id := range o.sys.findMarked(o.marker(color)) {
		if id.PID == recorded {
			continue
		}
		err := o.sys.stop(ctx, id, o.svc.StopGrace.D())
		o.log.Warn("stopped a slot process bgd started but never recorded", "slot", color, "pid", id.PID,
			"command", o.sys.commandLine(id.PID), "err", err)
		if err != nil && !errors.Is(err, slots.ErrNotOurs) {
			errs = append(errs, failf("stop %s pid %d, which bgd started but never recorded: %w", color, id.PID, err))
		}
	}
	return errors.Join(errs...)
}

// startSlot starts color with release and waits until it is healthy. The pid
// is saved as soon as the process exists, so a crash leaves it findable. On
// failure the slot is stopped again and the error quotes its log; a slot
// that could not be stopped stays recorded, and the error says so.
func (p *op) startSlot(ctx context.Context, color config.Color, release string) error {
	o := p.o
	port := o.svc.Port(color)
	if err := p.stopOrphans(ctx, color); err != nil {
		return err
	}
	if err := o.checkPort(color, port, 0); err != nil {
		return err
	}
	spec, err := o.slotSpec(color, release, port)
	if err != nil {
		return err
	}
	p.phase("starting", color, fmt.Sprintf("release %s on port %d", release, port))
	proc, err := p.launch(ctx, color, release, port, spec)
	if err != nil {
		return err
	}
	if err := p.awaitHealthy(ctx, color, port, proc); err != nil {
		return p.failedStart(ctx, color, port, proc, spec.LogPath, err)
	}
	if err := p.confirmListener(ctx, color, port, proc); err != nil {
		return err
	}
	p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = true })
	p.st.LastCheck = state.TimePtr(state.Now())
	p.phase("healthy", color, "")
	return nil
}

// slotSpec is how color's process is started with release on port: the
// command and working directory of the config expanded, and the
// environment (PORT, BG_COLOR, BG_RELEASE, then the config's env, sorted).
func (o *Orchestrator) slotSpec(color config.Color, release string, port int) (slots.Spec, error) {
	vars := slots.Vars{Port: port, Color: color.String(), Release: release}
	argv, dir, err := slots.Expand(o.svc.Command, o.svc.Workdir, vars)
	if err != nil {
		return slots.Spec{}, fmt.Errorf("%w: service %q: %w", config.ErrInvalid, o.svc.Name, err)
	}
	if dir != "" && !o.sys.isDir(dir) {
		return slots.Spec{}, failf("release %s: its directory %s (workdir %q) does not exist: install the release there first", release, dir, o.svc.Workdir)
	}
	env := []string{"PORT=" + strconv.Itoa(port), "BG_COLOR=" + color.String(), "BG_RELEASE=" + release}
	for _, k := range slices.Sorted(maps.Keys(o.svc.Env)) {
		v, _, err := slots.Expand([]string{o.svc.Env[k]}, "", vars)
		if err != nil {
			return slots.Spec{}, fmt.Errorf("%w: service %q: env %s: %w", config.ErrInvalid, o.svc.Name, k, err)
		}
		env = append(env, k+"="+v[0])
	}
	logPath := o.cfg.LogPath(o.svc.Name, color)
	if o.units != nil {
		logPath = slots.SlotUnit(o.svc.Name, color.String()) // its journal (logTail)
	}
	return slots.Spec{Argv: argv, Dir: dir, Env: env, LogPath: logPath, Marker: o.marker(color)}, nil
}

// launch starts the process and records it (pid, start time, release, not
// yet healthy) in the state file at once. When that save fails the process
// is stopped again, as nothing would know it.
func (p *op) launch(ctx context.Context, color config.Color, release string, port int, spec slots.Spec) (*slots.Process, error) {
	o := p.o
	proc, err := o.sys.startProcess(spec)
	if err != nil {
		return nil, failf("start %s: %w", color, err)
	}
	o.log.Info("slot started", "slot", color, "pid", proc.PID, "port", port, "release", release)
	p.st.SetSlot(color, state.SlotState{PID: proc.PID, StartTime: proc.Identity.StartTime, Port: port, Release: release})
	if err := p.save(); err != nil {
		if serr := p.abandon(ctx, color, proc); serr != nil {
			return nil, fmt.Errorf("%w; %w", err, serr)
		}
		return nil, err
	}
	return proc, nil
}

// awaitHealthy waits until the slot on port answers its health check, its
// process exits or the health timeout passes.
func (p *op) awaitHealthy(ctx context.Context, color config.Color, port int, proc *slots.Process) error {
	o := p.o
	p.phase("waiting", color, "")
	o.log.Info("waiting for health", "slot", color, "port", port, "timeout", o.svc.Health.Timeout.D())
	lastReport := time.Now()
	return o.sys.waitHealthy(ctx, port, slots.Wait{
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
}

// confirmListener checks that the healthy answer came from the slot: it
// proves nothing if another process holds the port (our slot then failed
// to bind, or has not yet). If not, the slot is stopped and ErrPortBusy
// returned.
func (p *op) confirmListener(ctx context.Context, color config.Color, port int, proc *slots.Process) error {
	owner, ours := p.o.sys.listensOn(proc.PID, port)
	if ours {
		return nil
	}
	who := "nobody"
	if owner.PID > 0 {
		who = fmt.Sprintf("pid %d (%s)", owner.PID, owner.Command)
	}
	const msg = "%s port %d answered health checks, but it is held by %s, not by the slot (pid %d): stop that process or choose another port"
	if serr := p.abandon(context.WithoutCancel(ctx), color, proc); serr != nil {
		return portBusy(msg+"; %w", color, port, who, proc.PID, serr)
	}
	return portBusy(msg, color, port, who, proc.PID)
}

// failedStart stops a slot that never became healthy (unless it exited)
// and returns why, with the last lines of its log.
func (p *op) failedStart(ctx context.Context, color config.Color, port int, proc *slots.Process, logPath string, err error) error {
	reason := err.Error()
	var serr error
	if errors.Is(err, slots.ErrExited) && p.o.units == nil {
		reason = fmt.Sprintf("process exited at start (%v)", proc.ExitErr())
		p.forget(color)
	} else {
		if errors.Is(err, slots.ErrExited) {
			// systemd restarts it (Restart=on-failure): stop its unit.
			reason = fmt.Sprintf("process exited at start (%v)", proc.ExitErr())
		}
		serr = p.abandon(context.WithoutCancel(ctx), color, proc)
	}
	tail := fmt.Sprintf("\n(its log %s is empty)", logPath)
	if t := p.o.sys.logTail(logPath, 10); t != "" {
		tail = fmt.Sprintf("\nlast lines of %s:\n%s", logPath, indent(t))
	}
	if serr != nil {
		return failure(fmt.Errorf("%s (port %d) is %w: %s; %w%s", color, port, ErrNotHealthy, reason, serr, tail))
	}
	return failure(fmt.Errorf("%s (port %d) is %w: %s%s", color, port, ErrNotHealthy, reason, tail))
}

// abandon stops the process just started for color. Once it is stopped the
// slot records no process; one that could not be stopped stays recorded
// (bgd must find it again), and the error says so.
func (p *op) abandon(ctx context.Context, color config.Color, proc *slots.Process) error {
	if err := p.o.sys.stop(ctx, proc.Identity, p.o.svc.StopGrace.D()); err != nil {
		p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.Healthy = false })
		return failf("stopping the new %s process (pid %d) failed, so it stays recorded: %w", color, proc.PID, err)
	}
	p.forget(color)
	return nil
}

// forget records that color runs no process.
func (p *op) forget(color config.Color) {
	p.st.UpdateSlot(color, func(sl *state.SlotState) { sl.PID, sl.StartTime, sl.Healthy = 0, 0, false })
}

// stopSlot stops color's process (SIGTERM, then SIGKILL after stop_grace),
// if it is still the process bgd started. A recorded pid that now belongs
// to another process is never signalled: it is forgotten, and the returned
// note says so ("" otherwise).
func (p *op) stopSlot(ctx context.Context, color config.Color) (note string, err error) {
	if p.st.Slot(color).PID > 0 {
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
	p.forget(color)
	return note, nil
}

// indent quotes a slot's log lines in an error: indented, with control
// characters (an ESC sequence the app wrote, say) shown escaped, so a log
// can never drive the operator's terminal through bgd's message.
func indent(s string) string {
	var b strings.Builder
	b.WriteString("    ")
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString("\n    ")
		case r == '\t':
			b.WriteRune(r)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
