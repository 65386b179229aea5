package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// SlotStatus is one colour as it really is now.
type SlotStatus struct {
	Color   config.Color `json:"color"`
	Port    int          `json:"port"`
	PID     int          `json:"pid"`
	Running bool         `json:"running"`
	Healthy bool         `json:"healthy"`
	Release string       `json:"release,omitempty"`
	Active  bool         `json:"active"`
	// HealthError is why the probe failed ("" when healthy).
	HealthError string `json:"health_error,omitempty"`
	// Restarts counts the health sweeps' restarts of the slot in the
	// current window (nil: none).
	Restarts *state.Restarts `json:"restarts,omitempty"`
	// FailedProbes counts the slot's consecutive failed sweep probes, as
	// recorded (0: its last recorded result passed).
	FailedProbes int `json:"failed_probes,omitempty"`
}

// Status is a service's state, checked against reality.
type Status struct {
	Service       string        `json:"service"`
	Driver        string        `json:"driver"`
	ActiveVersion config.Color  `json:"active_version"`
	ActivePort    int           `json:"active_port"`
	Blue          SlotStatus    `json:"blue"`
	Green         SlotStatus    `json:"green"`
	LastSwitch    *time.Time    `json:"last_switch"`
	LastCheck     *time.Time    `json:"last_check"`
	History       []state.Event `json:"deployment_history"`
	ProxyPID      int           `json:"proxy_pid,omitempty"`
	// Proxy is the builtin proxy as it really is (nil with another driver).
	// Proxy.Running false is an outage: nothing routes the service.
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// LBActive is the colour the load balancer really routes to; "" with
	// LBError set when it could not be asked.
	LBActive config.Color `json:"lb_active"`
	LBError  string       `json:"lb_error,omitempty"`
	// InProgress is an operation running now, or one that was interrupted.
	InProgress *state.Operation `json:"in_progress,omitempty"`
	// InProgressRunning: InProgress's process (its pid) still runs, so the
	// operation is under way; false with InProgress set, it was interrupted
	// (`bgd reconcile` records it). Not in the JSON, whose shape predates it.
	InProgressRunning bool   `json:"-"`
	StateFile         string `json:"state_file"`
	// Canary is the split the state records; absent when none.
	Canary *state.Canary `json:"canary,omitempty"`
	// Shadow is the shadow traffic in force; absent when off.
	Shadow *ShadowStatus `json:"shadow,omitempty"`
	// Paused is the pause the state records (bgd pause), absent when none;
	// PauseExpired: its deadline has passed, so the load balancer no
	// longer holds requests (bgd resume clears it).
	Paused       *state.Pause `json:"paused,omitempty"`
	PauseExpired bool         `json:"pause_expired,omitempty"`
	// Maintenance: every request is answered 503 (bgd maintenance on), with
	// MaintenancePage ("" : the load balancer's own text).
	Maintenance     bool   `json:"maintenance,omitempty"`
	MaintenancePage string `json:"maintenance_page,omitempty"`
	// Generation is the state's flip count, which each agent reports
	// applying (the etcd backend).
	Generation uint64 `json:"generation"`
	// Agents are the load-balancer hosts that joined (the etcd backend),
	// with what each serves; absent with a state file. AgentsError says
	// why they could not be read.
	Agents      []fleet.Agent `json:"agents,omitzero"`
	AgentsError string        `json:"agents_error,omitempty"`
}

// ProxyStatus is the builtin proxy of a service, checked against reality.
type ProxyStatus struct {
	// Listen is lb.builtin.listen.
	Listen string `json:"listen"`
	// Admin is where the proxy serves its admin endpoints
	// (lb.builtin.admin_listen; "unix:<path>" for a socket).
	Admin string `json:"admin,omitempty"`
	// Running: a bgd proxy that follows this service's state file answers
	// on Listen. False is an outage.
	Running bool `json:"running"`
	// PID is the answering proxy's own pid; when none answers, the pid bgd
	// recorded (proxy_pid), 0 if none.
	PID int `json:"pid"`
	// Managed: bgd started the proxy (proxy_pid is recorded), so
	// health-check restarts it when it is down. False: systemd (or another
	// supervisor) runs `bgd proxy`, and bgd only reports.
	Managed bool `json:"managed"`
	// Error says why the proxy is not running ("" when it is).
	Error string `json:"error,omitempty"`
	// Restarted is the pid of the proxy this health-check started (0: none).
	Restarted int `json:"restarted_pid,omitempty"`
}

// checkProxy asks the builtin proxy what it serves; nil with another driver.
// It also returns the route the proxy serves (nil when it does not answer).
func (o *Orchestrator) checkProxy(ctx context.Context, st *state.State) (*ProxyStatus, *builtin.RouteInfo) {
	b, ok := o.lb.(*builtin.Balancer)
	if !ok {
		return nil, nil
	}
	ps := &ProxyStatus{Listen: b.Listen, Admin: b.Admin, PID: st.ProxyPID, Managed: st.ProxyPID != 0}
	ri, err := b.Route(ctx)
	if err == nil {
		ps.Running, ps.PID = true, ri.PID
		return ps, ri
	}
	ps.Error = err.Error()
	switch {
	case st.ProxyPID == 0:
	case o.sys.check(o.proxyIdentity(st)) != nil:
		ps.Error = fmt.Sprintf("the proxy bgd started (proxy_pid %d) has exited; %s", st.ProxyPID, ps.Error)
	default:
		ps.Error = fmt.Sprintf("the proxy bgd started (proxy_pid %d) is alive but does not serve; %s", st.ProxyPID, ps.Error)
	}
	return ps, nil
}

// proxyIdentity is what the state records of the proxy bgd started.
func (o *Orchestrator) proxyIdentity(st *state.State) slots.Identity {
	return slots.Identity{PID: st.ProxyPID, StartTime: st.ProxyPIDStart, Env: o.proxyMarker()}
}

// recordProxy records pid as the builtin proxy bgd started, with its start
// time (0 when it cannot be told: then its marker alone recognises it).
func (o *Orchestrator) recordProxy(st *state.State, pid int) {
	st.ProxyPID, st.ProxyPIDStart = pid, 0
	if id, err := o.sys.identify(pid, o.proxyMarker()); err == nil {
		st.ProxyPIDStart = id.StartTime
	}
}

// proxyError is the error of a sweep that found the proxy down.
func (o *Orchestrator) proxyError(ps *ProxyStatus, what string) error {
	return failure(kindError{ErrNotHealthy, fmt.Errorf("the builtin proxy for %s is not running: %s; %s", o.svc.Name, ps.Error, what)})
}

// Slot returns the status of color.
func (s *Status) Slot(color config.Color) *SlotStatus {
	if color == config.Green {
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
	o.syncUnits(st)
	s := &Status{Service: o.svc.Name, Driver: o.svc.LB.Driver, ActiveVersion: st.ActiveVersion,
		LastSwitch: st.LastSwitch, LastCheck: st.LastCheck, History: st.History, ProxyPID: st.ProxyPID,
		InProgress: st.InProgress, StateFile: o.statePath, Canary: st.Canary,
		Paused: st.Paused, PauseExpired: st.Paused != nil && pausedNow(st) == nil, Maintenance: st.Maintenance, MaintenancePage: st.MaintenancePage}
	if st.InProgress != nil {
		s.InProgressRunning = o.sys.alive(st.InProgress.PID)
	}
	probes := o.probeBoth(ctx, st)
	for _, c := range config.Colors {
		ss := s.Slot(c)
		*ss = o.slotStatus(st, c, probes[c])
		if !ss.Running {
			ss.PID = 0
		}
	}
	s.ActivePort = s.Slot(st.ActiveVersion).Port
	ps, ri := o.checkProxy(ctx, st)
	s.Shadow = shadowStatus(st, ri)
	if ps != nil {
		s.Proxy = ps
		if ri != nil {
			s.LBActive = ri.Active
		} else {
			s.LBError = ps.Error
		}
	} else if active, err := o.lb.Active(ctx); err == nil {
		s.LBActive = active
	} else if st.Canary != nil && errors.Is(err, haproxy.ErrEvenSplit) {
		s.LBActive = st.ActiveVersion // 50/50: either colour; the split is the state's
	} else {
		s.LBError = err.Error()
	}
	s.Generation = st.Generation
	if o.etcd != nil {
		s.StateFile = "etcd:" + o.etcd.store.Key("state")
		if _, ok := o.lb.(*fleet.Balancer); ok {
			s.Driver = "agents" // what LBActive and LBError are about
		}
		if s.Agents, err = o.Agents(ctx); err != nil {
			s.AgentsError = err.Error()
		} else if s.Agents == nil {
			s.Agents = []fleet.Agent{}
		}
	}
	return s, nil
}

// slotStatus is color as st records it, whether its process runs (and is
// bgd's), and its probe's result.
func (o *Orchestrator) slotStatus(st *state.State, color config.Color, probe error) SlotStatus {
	sl := st.Slot(color)
	ss := SlotStatus{Color: color, Port: sl.Port, PID: sl.PID, Running: o.running(st, color),
		Healthy: probe == nil, Release: sl.Release, Active: color == st.ActiveVersion, Restarts: st.Restarts(color),
		FailedProbes: st.FailedProbes(color)}
	if probe != nil {
		ss.HealthError = probe.Error()
	}
	return ss
}

// probeBoth probes both slots at once.
func (o *Orchestrator) probeBoth(ctx context.Context, st *state.State) map[config.Color]error {
	out := map[config.Color]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range config.Colors {
		port := st.Slot(c).Port
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.sys.probe(ctx, port)
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
	Service string       `json:"service"`
	Active  config.Color `json:"active_version"`
	Blue    SlotStatus   `json:"blue"`
	Green   SlotStatus   `json:"green"`
	// Recorded is false when another operation held the lock: the results
	// were not written, so they cannot overwrite a deploy's newer ones.
	Recorded bool `json:"recorded"`
	// FailedOver names the colour traffic was moved to ("" if none).
	FailedOver config.Color `json:"failed_over,omitempty"`
	// Proxy is the builtin proxy (nil with another driver); a sweep that
	// finds it down restarts it when bgd started it.
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// Actions lists what the sweep did: the slots it restarted ([] when none).
	Actions []string `json:"actions"`
	Message string   `json:"message"`
	// failoverWait says why an unhealthy active slot was not failed over
	// (its count of failed probes is below failover_after, or the standby
	// fails too); "" otherwise. The sweep's error repeats it.
	failoverWait string
}

// sweepCommand names a health sweep in the lock file.
const sweepCommand = "health-check"

// sweepLockWait bounds how long a sweep waits for another operation's lock
// before reporting without recording.
const sweepLockWait = 200 * time.Millisecond

// HealthSweep probes both slots and records the results. Each recorded
// sweep is one probe of each slot: it counts the slot's consecutive failed
// probes in the state (<colour>_failed_probes; see keepNewer). With
// failover, the sweep that finds the active slot failing for the
// failover_after-th time in a row flips to the standby if that passed its
// probe; before that, the sweep says "active blue failed 2 of 3 probes; no
// failover yet". An active slot that runs no process (it exited, or was
// stopped with --force) fails over at once: no later probe could find it
// back; an exited slot is then restarted as the standby. It returns an
// error wrapping ErrNotHealthy (and ErrFailed) when the active slot is
// unhealthy (after a failover, the new active slot counts), or when the
// builtin proxy does not answer: that is an outage too. A proxy bgd started (proxy_pid recorded) is restarted and its
// new pid recorded; one that systemd runs is only reported. It never blocks
// long on a deploy: if the lock is busy it reports without recording (and
// restarts nothing: the deploy's flip starts a proxy itself).
func (o *Orchestrator) HealthSweep(ctx context.Context) (*Sweep, error) {
	began := time.Now()
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	o.syncUnits(st)
	probes := o.probeBoth(ctx, st)
	sw := &Sweep{Service: o.svc.Name, Actions: []string{}}
	sw.Proxy, _ = o.checkProxy(ctx, st)
	proxyWhat := "bgd did not start it (no proxy_pid recorded: systemd or another supervisor runs `bgd proxy`), so it only reports: restart that service"
	if sw.Proxy != nil && sw.Proxy.Managed {
		proxyWhat = "not restarted: another operation holds the lock"
	}
	o.fillSweep(sw, st, probes)
	var restartErrs []error
	lock, lerr := o.store.Lock(ctx, sweepCommand, max(sweepLockWait, o.opts.LockTimeout))
	switch {
	case lerr == nil:
		if sw.Proxy != nil && !sw.Proxy.Running && sw.Proxy.Managed {
			proxyWhat = o.restartProxy(ctx, sw.Proxy)
		}
		restartErrs, err = o.recordSweep(ctx, &op{o: o, lock: lock, began: began}, st, probes, sw)
		lock.Unlock()
		if err != nil {
			return sw, err
		}
	case errors.Is(lerr, state.ErrLocked):
		sw.Message = "results not recorded: " + lerr.Error()
	default:
		return sw, lerr
	}
	o.fillSweep(sw, st, probes)
	return sw, errors.Join(o.sweepError(sw, st, probes, proxyWhat), errors.Join(restartErrs...))
}

// fillSweep sets the sweep's slots from st and the probes.
func (o *Orchestrator) fillSweep(sw *Sweep, st *state.State, probes map[config.Color]error) {
	sw.Active = st.ActiveVersion
	sw.Blue = o.slotStatus(st, config.Blue, probes[config.Blue])
	sw.Green = o.slotStatus(st, config.Green, probes[config.Green])
}

// sweepError is the outage a sweep found: an unhealthy active slot (unless
// it failed over), a builtin proxy that does not run; nil if none.
func (o *Orchestrator) sweepError(sw *Sweep, st *state.State, probes map[config.Color]error, proxyWhat string) error {
	var errs []error
	if sw.FailedOver == "" && probes[sw.Active] != nil {
		err := fmt.Errorf("%w: active slot %s (port %d) is unhealthy: %w", ErrNotHealthy, sw.Active, st.Slot(sw.Active).Port, probes[sw.Active])
		if sw.failoverWait != "" {
			err = fmt.Errorf("%w; %s", err, sw.failoverWait)
		}
		errs = append(errs, failure(err))
	}
	if sw.Proxy != nil && !sw.Proxy.Running {
		errs = append(errs, o.proxyError(sw.Proxy, proxyWhat))
	}
	return errors.Join(errs...)
}

// restartProxy starts the builtin proxy again, under the lock, when bgd had
// started the one that is gone. recordSweep records the new pid (from
// ps.Restarted) and the event. It returns what was done, for the error.
func (o *Orchestrator) restartProxy(ctx context.Context, ps *ProxyStatus) string {
	starter, ok := o.lb.(proxyStarter)
	if !ok {
		return "bgd cannot start it"
	}
	pid, err := starter.Ensure(ctx)
	switch {
	case err != nil:
		o.log.Error("restarting the builtin proxy failed", "err", err)
		return "restarting it failed: " + err.Error()
	case pid == 0:
		// A proxy answers by now (a deploy started one): no outage left.
		ps.Running, ps.Error = true, ""
		return ""
	}
	ps.Restarted = pid
	o.log.Warn("restarted the builtin proxy", "pid", pid, "was", ps.Error)
	return fmt.Sprintf("restarted it (pid %d)", pid)
}

// recordSweep writes probe results under the lock, only for slots nobody
// changed since the probe (a deploy in between owns newer results: for
// those, the recorded result replaces the stale probe), restarts the slots
// that should run and do not (restartDown, whose errors it returns), after
// failing over when configured and both probes are fresh.
func (o *Orchestrator) recordSweep(ctx context.Context, p *op, probed *state.State, probes map[config.Color]error, sw *Sweep) ([]error, error) {
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	o.syncUnits(st)
	p.st = st
	fresh := keepNewer(st, probed, probes, sw)
	st.LastCheck = state.TimePtr(state.Now())
	if px := sw.Proxy; px != nil && !px.Running && px.Managed {
		o.recordProxyRestart(st, px)
	}
	if o.svc.Failover && fresh {
		// First, as ever: traffic moves at once to a healthy standby; the
		// slot that died is restarted below, as the standby.
		p.failover(ctx, probes, sw)
	}
	if did := p.enforceWatch(ctx); did != "" {
		sw.Actions = append(sw.Actions, did)
		sw.Message = strings.TrimSpace(sw.Message + " " + did + ".")
	}
	restartErrs := p.restartDown(ctx, probes, sw)
	if err := o.store.Save(st); err != nil {
		return nil, err
	}
	*probed = *st
	sw.Recorded = true
	return restartErrs, nil
}

// keepNewer records each probe in st (loaded under the lock) when nobody
// changed the slot since probed was loaded, and counts it: a passing probe
// sets the slot's consecutive failed probes to 0; a failed one adds 1 when
// the slot's recorded result was a failure too, else starts the count at
// 1 (the recorded result was a pass: a previous sweep's probe, or the
// health wait of a start or deploy, which record the slot healthy). A slot
// not meant to run (never started, or stopped) counts nothing. For a
// changed slot the recorded result is newer: it replaces the probe (a
// recorded pass sets the count to 0), and the message says so. It reports
// whether the probes are all fresh (nothing changed, nor the routing).
func keepNewer(st, probed *state.State, probes map[config.Color]error, sw *Sweep) (fresh bool) {
	fresh = st.ActiveVersion == probed.ActiveVersion && st.Generation == probed.Generation
	for _, c := range config.Colors {
		now, then := st.Slot(c), probed.Slot(c)
		if now.PID == then.PID && now.Port == then.Port && now.Release == then.Release && now.Healthy == then.Healthy {
			st.UpdateSlot(c, func(sl *state.SlotState) { sl.Healthy = probes[c] == nil })
			switch {
			case probes[c] == nil || !shouldRun(st, c):
				st.SetFailedProbes(c, 0)
			case now.Healthy:
				st.SetFailedProbes(c, 1)
			default:
				st.SetFailedProbes(c, st.FailedProbes(c)+1)
			}
			continue
		}
		fresh = false
		probes[c] = nil
		if now.Healthy {
			st.SetFailedProbes(c, 0)
		} else {
			probes[c] = fmt.Errorf("%w (as recorded by the operation that changed it since the probe)", ErrNotHealthy)
		}
		sw.Message = strings.TrimSpace(sw.Message + " " + c.String() + " changed since it was probed: its newer recorded result is kept.")
	}
	return fresh
}

// recordProxyRestart records the restart of a builtin proxy bgd started
// (its new pid) or its failure. A restart that keeps failing is recorded
// once, not once per sweep: a timer must not push the deploys out of the
// history.
func (o *Orchestrator) recordProxyRestart(st *state.State, px *ProxyStatus) {
	ev := state.Event{Action: "proxy-restart", To: st.ActiveVersion, Status: state.StatusFailed,
		Reason: "the builtin proxy was not running: " + px.Error}
	if px.Restarted > 0 {
		o.recordProxy(st, px.Restarted)
		ev.Status = state.StatusSuccess
		ev.Reason = fmt.Sprintf("restarted the builtin proxy (pid %d): it was not running: %s", px.Restarted, px.Error)
	}
	if n := len(st.History); ev.Status == state.StatusSuccess || n == 0 ||
		st.History[n-1].Action != ev.Action || st.History[n-1].Status != ev.Status {
		st.Record(ev)
	}
}

// failoverAfter is the service's failover_after: the consecutive failed
// probes of the active slot that fail over (at least 1).
func (o *Orchestrator) failoverAfter() int {
	return max(o.svc.FailoverAfter, 1)
}

// failover flips to the standby slot when the active one failed its probe
// failover_after times in a row (or it runs no process) and the
// standby passed, and records the attempt. When it waits, sw says why.
func (p *op) failover(ctx context.Context, probes map[config.Color]error, sw *Sweep) {
	st := p.st
	active := st.ActiveVersion
	standby := active.Other()
	if probes[active] == nil {
		return
	}
	n, need := st.FailedProbes(active), p.o.failoverAfter()
	exited := p.o.gone(st, active) // no process: nothing a later probe could find back
	wait := ""
	switch {
	case n < need && !exited:
		wait = fmt.Sprintf("active %s failed %d of %d probes; no failover yet", active, n, need)
	case probes[standby] != nil && exited:
		wait = fmt.Sprintf("active %s runs no process; no failover: standby %s is unhealthy too (%v)", active, standby, probes[standby])
	case probes[standby] != nil:
		wait = fmt.Sprintf("active %s failed %d of %d probes; no failover: standby %s is unhealthy too (%v)", active, n, need, standby, probes[standby])
	}
	if wait != "" {
		sw.failoverWait = wait
		sw.Message = strings.TrimSpace(sw.Message + " " + wait + ".")
		return
	}
	if err := p.flip(ctx, standby); err != nil {
		st.Record(state.Event{Action: "failover", From: active, To: standby, Status: state.StatusFailed, Reason: err.Error()})
		return
	}
	st.Record(state.Event{Action: "failover", From: active, To: standby, Status: state.StatusSuccess,
		Release: st.Slot(standby).Release, Reason: p.o.failoverReason(active, n, exited, probes[active])})
	sw.FailedOver = standby
	p.o.log.Error("failed over", "from", active, "to", standby, "err", probes[active])
}

// failoverReason is the history's reason for a failover from active.
func (o *Orchestrator) failoverReason(active config.Color, failed int, exited bool, probe error) string {
	if exited {
		return fmt.Sprintf("active slot %s unhealthy (it runs no process): %v", active, probe)
	}
	return fmt.Sprintf("active slot %s unhealthy: failed %d consecutive probes (failover_after %d): %v", active, failed, o.failoverAfter(), probe)
}
