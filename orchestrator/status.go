package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// SlotStatus is one colour as it really is now.
type SlotStatus struct {
	Color   string `json:"color"`
	Port    int    `json:"port"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
	Healthy bool   `json:"healthy"`
	Release string `json:"release,omitempty"`
	Active  bool   `json:"active"`
	// HealthError is why the probe failed ("" when healthy).
	HealthError string `json:"health_error,omitempty"`
}

// Status is a service's state, checked against reality.
type Status struct {
	Service       string        `json:"service"`
	Driver        string        `json:"driver"`
	ActiveVersion string        `json:"active_version"`
	ActivePort    int           `json:"active_port"`
	Blue          SlotStatus    `json:"blue"`
	Green         SlotStatus    `json:"green"`
	LastSwitch    *time.Time    `json:"last_switch"`
	LastCheck     *time.Time    `json:"last_check"`
	History       []state.Event `json:"deployment_history"`
	ProxyPID      int           `json:"proxy_pid,omitempty"`
	// LBActive is the colour the load balancer really routes to; "" with
	// LBError set when it could not be asked.
	LBActive string `json:"lb_active"`
	LBError  string `json:"lb_error,omitempty"`
	// InProgress is an operation running now, or one that was interrupted.
	InProgress *state.Operation `json:"in_progress,omitempty"`
	StateFile  string           `json:"state_file"`
}

// Slot returns the status of color.
func (s *Status) Slot(color string) *SlotStatus {
	if color == "green" {
		return &s.Green
	}
	return &s.Blue
}

// Status reads the state without locking and checks it against reality:
// whether each pid is alive, a live health probe of each slot, and which
// colour the load balancer routes to.
func (o *Orchestrator) Status(ctx context.Context) (*Status, error) {
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	s := &Status{Service: o.svc.Name, Driver: o.svc.LB.Driver, ActiveVersion: st.ActiveVersion,
		LastSwitch: st.LastSwitch, LastCheck: st.LastCheck, History: st.History, ProxyPID: st.ProxyPID,
		InProgress: st.InProgress, StateFile: o.store.Path}
	probes := o.probeBoth(ctx, st)
	for _, c := range config.Colors {
		sl := st.Slot(c)
		ss := s.Slot(c)
		*ss = SlotStatus{Color: c, Port: *sl.Port, PID: *sl.PID, Running: slots.Alive(*sl.PID), Release: *sl.Release,
			Active: c == st.ActiveVersion}
		if !ss.Running {
			ss.PID = 0
		}
		if probes[c] == nil {
			ss.Healthy = true
		} else {
			ss.HealthError = probes[c].Error()
		}
	}
	s.ActivePort = s.Slot(st.ActiveVersion).Port
	if active, err := o.lb.Active(ctx); err == nil {
		s.LBActive = active
	} else {
		s.LBError = err.Error()
	}
	return s, nil
}

// probeBoth probes both slots at once.
func (o *Orchestrator) probeBoth(ctx context.Context, st *state.State) map[string]error {
	out := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range config.Colors {
		port := *st.Slot(c).Port
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.checker.Probe(ctx, slotHost, port)
			mu.Lock()
			out[c] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Sweep is the result of one HealthSweep.
type Sweep struct {
	Service string     `json:"service"`
	Active  string     `json:"active_version"`
	Blue    SlotStatus `json:"blue"`
	Green   SlotStatus `json:"green"`
	// Recorded is false when another operation held the lock: the results
	// were not written, so they cannot overwrite a deploy's newer ones.
	Recorded bool `json:"recorded"`
	// FailedOver names the colour traffic was moved to ("" if none).
	FailedOver string `json:"failed_over,omitempty"`
	Message    string `json:"message"`
}

// sweepCommand names a health sweep in the lock file.
const sweepCommand = "health-check"

// sweepLockWait bounds how long a sweep waits for another operation's lock
// before reporting without recording.
const sweepLockWait = 200 * time.Millisecond

// HealthSweep probes both slots and records the results. It returns an
// error wrapping ErrNotHealthy when the active slot is unhealthy (after a
// failover, when enabled and possible, the new active slot counts). It never
// blocks long on a deploy: if the lock is busy it reports without recording.
func (o *Orchestrator) HealthSweep(ctx context.Context) (*Sweep, error) {
	o.began = time.Now()
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	probes := o.probeBoth(ctx, st)
	sw := &Sweep{Service: o.svc.Name}
	fill := func(st *state.State) {
		sw.Active = st.ActiveVersion
		for _, c := range config.Colors {
			sl := st.Slot(c)
			ss := &sw.Blue
			if c == "green" {
				ss = &sw.Green
			}
			*ss = SlotStatus{Color: c, Port: *sl.Port, PID: *sl.PID, Running: slots.Alive(*sl.PID),
				Healthy: probes[c] == nil, Release: *sl.Release, Active: c == st.ActiveVersion}
			if probes[c] != nil {
				ss.HealthError = probes[c].Error()
			}
		}
	}
	fill(st)
	wait := sweepLockWait
	if o.opts.LockTimeout > wait {
		wait = o.opts.LockTimeout
	}
	lock, lerr := o.store.Lock(ctx, sweepCommand, wait)
	if lerr == nil {
		err = o.recordSweep(ctx, lock, st, probes, sw)
		lock.Unlock()
		if err != nil {
			return sw, err
		}
	} else if !errors.Is(lerr, state.ErrLocked) {
		return sw, lerr
	} else {
		sw.Message = "results not recorded: " + lerr.Error()
	}
	fill(st)
	if sw.FailedOver == "" && probes[sw.Active] != nil {
		return sw, failure(fmt.Errorf("%w: active slot %s (port %d) is unhealthy: %v", ErrNotHealthy, sw.Active,
			*st.Slot(sw.Active).Port, probes[sw.Active]))
	}
	return sw, nil
}

// recordSweep writes probe results under the lock, only for slots nobody
// changed since the probe (a deploy in between owns newer results: for
// those, the recorded result replaces the stale probe), and fails over when
// configured and both probes are fresh.
func (o *Orchestrator) recordSweep(ctx context.Context, lock *state.Lock, probed *state.State, probes map[string]error, sw *Sweep) error {
	st, err := o.store.Load()
	if err != nil {
		return err
	}
	fresh := st.ActiveVersion == probed.ActiveVersion && st.Generation == probed.Generation
	for _, c := range config.Colors {
		now, then := st.Slot(c), probed.Slot(c)
		if *now.PID == *then.PID && *now.Port == *then.Port && *now.Release == *then.Release && *now.Healthy == *then.Healthy {
			*now.Healthy = probes[c] == nil
			continue
		}
		fresh = false
		probes[c] = nil
		if !*now.Healthy {
			probes[c] = fmt.Errorf("%w (as recorded by the operation that changed it since the probe)", ErrNotHealthy)
		}
		sw.Message = strings.TrimSpace(sw.Message + " " + c + " changed since it was probed: its newer recorded result is kept.")
	}
	st.LastCheck = state.TimePtr(state.Now())
	active := st.ActiveVersion
	standby := config.Other(active)
	if o.svc.Failover && fresh && probes[active] != nil && probes[standby] == nil {
		p := &op{o: o, lock: lock, st: st}
		if err := p.flip(ctx, standby); err != nil {
			st.Record(state.Event{Action: "failover", From: active, To: standby, Status: state.StatusFailed, Reason: err.Error()})
		} else {
			st.Record(state.Event{Action: "failover", From: active, To: standby, Status: state.StatusSuccess,
				Release: *st.Slot(standby).Release, Reason: fmt.Sprintf("active slot %s unhealthy: %v", active, probes[active])})
			sw.FailedOver = standby
			o.log.Error("failed over", "from", active, "to", standby, "err", probes[active])
		}
	}
	if err := o.store.Save(st); err != nil {
		return err
	}
	*probed = *st
	sw.Recorded = true
	return nil
}
