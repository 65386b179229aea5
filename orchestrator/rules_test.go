package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

var ctx = context.Background()

// TestSweepKeepsNewerResults: a sweep records its probes only for slots
// nobody changed since it probed; a slot a deploy changed in between keeps
// the deploy's result, and no failover follows from a stale probe.
func TestSweepKeepsNewerResults(t *testing.T) {
	cases := []struct {
		name     string
		failover bool
		// probe results by colour ("" healthy)
		blueProbe, greenProbe error
		// between: what another operation writes after the probe
		between     func(r *rig, st *state.State)
		wantBlue    bool // blue_healthy recorded
		wantGreen   bool
		wantActive  config.Color
		wantMessage string // substring ("" none)
		wantErr     bool
	}{
		{name: "nothing changed: the probes are recorded", blueProbe: nil, greenProbe: errRefused,
			wantBlue: true, wantGreen: false, wantActive: "blue"},
		{name: "a deploy started green since: its result is kept", blueProbe: nil, greenProbe: errRefused,
			between: func(r *rig, st *state.State) {
				st.GreenPID, st.GreenHealthy, st.GreenRelease = r.host.spawn("new", r.o.marker("green")...), true, "v2"
				st.GreenPIDStart = r.host.procs[st.GreenPID].start
			},
			wantBlue: true, wantGreen: true, wantActive: "blue", wantMessage: "green changed since it was probed"},
		{name: "a stop of green since, recorded unhealthy: kept unhealthy", blueProbe: nil, greenProbe: nil,
			between:  func(r *rig, st *state.State) { st.GreenPID, st.GreenHealthy = 0, false },
			wantBlue: true, wantGreen: false, wantActive: "blue", wantMessage: "green changed"},
		{name: "failover when both probes are fresh", failover: true, blueProbe: errRefused, greenProbe: nil,
			wantBlue: false, wantGreen: true, wantActive: "green"},
		{name: "no failover when a switch happened since the probe", failover: true, blueProbe: errRefused, greenProbe: nil,
			between:  func(r *rig, st *state.State) { st.Generation++ },
			wantBlue: false, wantGreen: true, wantActive: "blue", wantErr: true},
		{name: "no failover when the standby changed since the probe", failover: true, blueProbe: errRefused, greenProbe: nil,
			between:  func(r *rig, st *state.State) { st.GreenRelease = "v3" },
			wantBlue: false, wantGreen: true, wantActive: "blue", wantMessage: "green changed", wantErr: true},
		{name: "the active slot unhealthy without failover is an error", blueProbe: errRefused, greenProbe: nil,
			wantBlue: false, wantGreen: true, wantActive: "blue", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bal := &testLB{active: "blue"}
			r := newRig(t, bal, func(s *config.Service) { s.Failover, s.FailoverAfter = c.failover, 1 })
			r.slot("blue", "v1")
			r.slot("green", "v1")
			r.host.health[r.blue], r.host.health[r.green] = c.blueProbe, c.greenProbe
			r.store.beforeLoad = func(n int, st *state.State) {
				if n == 2 && c.between != nil {
					c.between(r, st)
				}
			}
			sw, err := r.o.HealthSweep(ctx)
			if (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrNotHealthy)) {
				t.Fatalf("HealthSweep error = %v, want error %v (ErrNotHealthy)", err, c.wantErr)
			}
			st := r.state()
			if !sw.Recorded || st.BlueHealthy != c.wantBlue || st.GreenHealthy != c.wantGreen || st.ActiveVersion != c.wantActive {
				t.Errorf("recorded=%v blue_healthy=%v green_healthy=%v active=%s, want true/%v/%v/%s",
					sw.Recorded, st.BlueHealthy, st.GreenHealthy, st.ActiveVersion, c.wantBlue, c.wantGreen, c.wantActive)
			}
			if sw.Green.Healthy != c.wantGreen || sw.Active != c.wantActive {
				t.Errorf("sweep says green healthy %v, active %s", sw.Green.Healthy, sw.Active)
			}
			if c.wantMessage == "" && sw.Message != "" || !strings.Contains(sw.Message, c.wantMessage) {
				t.Errorf("message %q, want %q", sw.Message, c.wantMessage)
			}
			if c.wantActive == "green" && (sw.FailedOver != "green" || lastEvent(st).Action != "failover" || bal.active != "green") {
				t.Errorf("failed over to %q, last event %+v, lb %s", sw.FailedOver, lastEvent(st), bal.active)
			}
			if st.LastCheck == nil || r.store.locks != 0 {
				t.Errorf("last_check %v, locks held %d", st.LastCheck, r.store.locks)
			}
		})
	}
}

// TestSweepLockBusyRecordsNothing: a sweep that cannot take the lock
// reports without recording; another lock error is returned.
func TestSweepLockBusyRecordsNothing(t *testing.T) {
	r := newRig(t, nil)
	r.slot("blue", "v1")
	r.store.lockErr = &state.LockedError{Path: "x", PID: 7, Command: "deploy"}
	sw, err := r.o.HealthSweep(ctx)
	if err != nil || sw.Recorded || !strings.Contains(sw.Message, "results not recorded") || r.store.saves != 0 {
		t.Fatalf("sweep under a held lock: %+v %v (saves %d)", sw, err, r.store.saves)
	}
	r.store.lockErr = errors.New("disk on fire")
	if _, err := r.o.HealthSweep(ctx); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("sweep with a broken lock = %v", err)
	}
}

// TestSweepFailoverFlipFails: a failover whose flip fails is recorded as a
// failed failover; traffic stays.
func TestSweepFailoverFlipFails(t *testing.T) {
	bal := &testLB{active: "blue", flipErr: errors.New("reload failed")}
	r := newRig(t, bal, func(s *config.Service) { s.Failover, s.FailoverAfter = true, 1 })
	r.slot("blue", "v1")
	r.slot("green", "v1")
	r.host.health[r.blue] = errRefused
	sw, err := r.o.HealthSweep(ctx)
	ev := lastEvent(r.state())
	if !errors.Is(err, ErrNotHealthy) || sw.FailedOver != "" || ev.Action != "failover" || ev.Status != state.StatusFailed ||
		!strings.Contains(ev.Reason, "reload failed") || r.state().ActiveVersion != "blue" {
		t.Fatalf("sweep: %v, failed over %q, last event %+v", err, sw.FailedOver, ev)
	}
}

// TestInterruptedOperationRecord: begin (every mutating workflow) and
// Reconcile record an operation left in progress as failed "interrupted".
func TestInterruptedOperationRecord(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	left := &state.Operation{Command: "deploy --release v9", PID: 4242, Started: started, From: "blue", To: "green"}
	want := state.Event{Action: "deploy --release v9", From: "blue", To: "green", Status: state.StatusFailed,
		Reason: "interrupted: deploy --release v9 (pid 4242) started at 2026-01-02T03:04:05Z and never finished"}
	for _, c := range []struct {
		name string
		run  func(r *rig) error
		// inProgress: what in_progress holds while the run is under way
		// (begin marks its own operation).
		fix string
	}{
		{"begin", func(r *rig) error {
			p, err := r.o.begin(ctx, "stop", "green", "")
			if err != nil {
				return err
			}
			if p.st.InProgress == nil || p.st.InProgress.Command != "stop" || r.state().InProgress.Command != "stop" {
				return fmt.Errorf("in progress %+v, want stop (saved)", p.st.InProgress)
			}
			return p.end(nil)
		}, ""},
		{"reconcile", func(r *rig) error { _, err := r.o.Reconcile(ctx); return err },
			"deploy --release v9 (pid 4242) was interrupted: recorded as failed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.store.st.InProgress = left
			if err := c.run(r); err != nil {
				t.Fatal(err)
			}
			st := r.state()
			got := st.History[0]
			got.Timestamp = time.Time{}
			if len(st.History) != 1 || got != want || st.InProgress != nil {
				t.Fatalf("history %+v in progress %+v\nwant [%+v] and none", st.History, st.InProgress, want)
			}
		})
	}
	if got := interrupted(left); got != want {
		t.Errorf("interrupted = %+v", got)
	}
}

// TestBeginLock: begin waits a moment for a health sweep's lock, not for
// another operation's; an operation ends unlocked.
func TestBeginLock(t *testing.T) {
	r := newRig(t, nil)
	r.store.lockErr = &state.LockedError{Command: "deploy", PID: 9}
	if _, err := r.o.Stop(ctx, "green", false); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("Stop under another operation's lock = %v", err)
	}
	r.store.lockErr = nil
	if _, err := r.o.Stop(ctx, "green", false); err != nil || r.store.locks != 0 {
		t.Fatalf("Stop = %v, locks held %d", err, r.store.locks)
	}
}

// TestBeginWaitsForASweep: a command that finds a health sweep holding the
// lock waits sweepGrace for it, even with --lock-timeout 0; another
// operation's lock is not waited for beyond the timeout asked.
func TestBeginWaitsForASweep(t *testing.T) {
	sweep := &state.LockedError{Command: sweepCommand, PID: 5}
	deploy := &state.LockedError{Command: "deploy", PID: 6}
	cases := []struct {
		name         string
		lockTimeout  time.Duration
		errs         []error
		wantTimeouts []time.Duration
		wantErr      error
	}{
		{"free", 0, []error{nil}, []time.Duration{0}, nil},
		{"a sweep holds it: waited for", 0, []error{sweep, nil}, []time.Duration{0, sweepGrace}, nil},
		{"a sweep holds it past the grace", 0, []error{sweep, sweep}, []time.Duration{0, sweepGrace}, state.ErrLocked},
		{"a sweep holds it, a longer timeout asked: no second wait", time.Minute, []error{sweep}, []time.Duration{time.Minute}, state.ErrLocked},
		{"a deploy holds it", 0, []error{deploy}, []time.Duration{0}, state.ErrLocked},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.o.opts.LockTimeout = c.lockTimeout
			r.store.lockErrs = c.errs
			r.store.lockErr = errors.New("unexpected Lock call")
			p, err := r.o.begin(ctx, "switch", "", "green")
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("begin = %v, want %v", err, c.wantErr)
			}
			if !slices.Equal(r.store.timeouts, c.wantTimeouts) {
				t.Errorf("lock timeouts %v, want %v", r.store.timeouts, c.wantTimeouts)
			}
			if p != nil {
				if op := r.state().InProgress; op == nil || op.Command != "switch" || op.To != "green" {
					t.Errorf("in progress %+v", op)
				}
				p.end(nil)
			}
		})
	}
}

// TestProxyRestartRecord: a sweep records a restart of the proxy bgd
// started (its new pid and start time) each time, and a failure to restart
// it only once in a row.
func TestProxyRestartRecord(t *testing.T) {
	cases := []struct {
		name       string
		last       state.Event // the last history entry before
		restarted  bool
		wantRecord bool
	}{
		{"restarted", state.Event{}, true, true},
		{"restarted again", state.Event{Action: "proxy-restart", Status: state.StatusSuccess}, true, true},
		{"the first failure", state.Event{Action: "deploy", Status: state.StatusSuccess}, false, true},
		{"a failure after a restart", state.Event{Action: "proxy-restart", Status: state.StatusSuccess}, false, true},
		{"the same failure again", state.Event{Action: "proxy-restart", Status: state.StatusFailed}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			st := state.New(r.blue, r.green)
			st.ProxyPID, st.ProxyPIDStart = 40, 1
			if c.last.Action != "" {
				st.Record(c.last)
			}
			n := len(st.History)
			px := &ProxyStatus{Error: "connection refused", Managed: true}
			wantPID := 40
			if c.restarted {
				px.Restarted = r.host.spawn("bgd proxy", slots.ProxyMarker(r.o.stateAbs, "app")...)
				wantPID = px.Restarted
			}
			r.o.recordProxyRestart(st, px)
			if recorded := len(st.History) > n; recorded != c.wantRecord {
				t.Fatalf("history %+v: recorded %v, want %v", st.History, recorded, c.wantRecord)
			}
			ev := lastEvent(st)
			if c.wantRecord && (ev.Action != "proxy-restart" || (ev.Status == state.StatusSuccess) != c.restarted ||
				!strings.Contains(ev.Reason, "connection refused")) {
				t.Errorf("recorded %+v", ev)
			}
			if st.ProxyPID != wantPID || (c.restarted && st.ProxyPIDStart != r.host.procs[wantPID].start) {
				t.Errorf("proxy_pid %d start %d, want %d", st.ProxyPID, st.ProxyPIDStart, wantPID)
			}
		})
	}
}

// TestReconcileSlot: what reconcile decides about each slot.
func TestReconcileSlot(t *testing.T) {
	cases := []struct {
		name string
		// set up green (the slot under test) on the rig
		set       func(r *rig) (wantPID int)
		wantFix   []string // substrings of the report, in order
		noFix     bool
		release   string // green_release afterwards ("" unchecked)
		healthy   bool
		signalled bool // whether anything was signalled (never)
	}{
		{name: "recorded pid ok", set: func(r *rig) int { return r.slot("green", "v1") }, noFix: true, healthy: true},
		{name: "recorded pid ok, legacy start time 0: recorded now", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.store.st.GreenPIDStart = 0
			return pid
		}, wantFix: []string{"green: pid {pid}: its start time is now recorded"}, healthy: true},
		{name: "recorded pid gone", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.host.end(pid)
			return 0
		}, wantFix: []string{"is gone: recorded as stopped", "green: healthy is false (was true)"}},
		{name: "recorded pid reused since", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.host.end(pid)
			r.host.procs[pid] = &fakeProc{start: 99999, cmd: "cron"}
			return 0
		}, wantFix: []string{"is gone: recorded as stopped", "healthy is false"}},
		{name: "recorded pid is not ours", set: func(r *rig) int {
			r.store.st.GreenPID = r.host.spawn("sshd")
			return 0
		}, wantFix: []string{"(sshd) is not a process bgd started", "recorded as stopped and left alone"}},
		{name: "a marked process bgd never recorded, serving the port: adopted", set: func(r *rig) int {
			pid := r.slot("green", "v2")
			r.store.st.GreenPID, r.store.st.GreenPIDStart, r.store.st.GreenRelease = 0, 0, ""
			return pid
		}, wantFix: []string{"green: port {port} is served by pid {pid} (demo-app --color green), which bgd started for this slot: adopted",
			`green: release is v2 (was "")`}, release: "v2", healthy: true},
		{name: "a marked process not listening: adopted", set: func(r *rig) int {
			pid := r.slot("green", "v2")
			delete(r.host.listeners, r.green)
			r.store.st.GreenPID, r.store.st.GreenPIDStart = 0, 0
			return pid
		}, wantFix: []string{"green: pid {pid} (demo-app --color green) was started by bgd for port {port} but never recorded: adopted",
			"green: healthy is false (was true)"}, release: "v2"},
		{name: "two marked processes: the first adopted, the other reported", set: func(r *rig) int {
			first := r.slot("green", "v2")
			second := r.host.spawn("demo-app second", r.o.marker("green")...)
			_ = second
			r.store.st.GreenPID, r.store.st.GreenPIDStart = 0, 0
			return first
		}, wantFix: []string{"adopted", "was also started by bgd for this slot: left for the next start of green to stop"}, healthy: true},
		{name: "a foreign listener: reported, left alone", set: func(r *rig) int {
			r.host.listen(r.host.spawn("nc -l"), r.green)
			r.store.st.GreenHealthy = false
			return 0
		}, wantFix: []string{"(nc -l), which bgd did not start: left alone; starting green stays refused until it stops"}},
		{name: "a listener bgd cannot see", set: func(r *rig) int {
			r.host.listeners[r.green] = slots.PortOwner{}
			return 0
		}, wantFix: []string{"is held by a process bgd cannot see, which bgd did not start"}},
		{name: "a foreign listener beside a recorded slot that does not listen", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.host.listen(r.host.spawn("nc -l"), r.green)
			r.host.health[r.green] = errRefused
			return pid
		}, wantFix: []string{"which bgd did not start: left alone", "healthy is false"}},
		{name: "release from the environment", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.store.st.GreenRelease = "v0"
			return pid
		}, wantFix: []string{`green: release is v1 (was "v0"), as the slot's environment says`}, release: "v1", healthy: true},
		{name: "an invalid release in the environment is not taken", set: func(r *rig) int {
			pid := r.slot("green", "../../etc")
			r.store.st.GreenRelease = "v0"
			return pid
		}, noFix: true, release: "v0", healthy: true},
		{name: "recorded healthy, probe fails", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.host.health[r.green] = errRefused
			return pid
		}, wantFix: []string{"green: healthy is false (was true)"}},
		{name: "a missing port is set from the config", set: func(r *rig) int {
			r.store.st.GreenPort = 0
			return 0
		}, noFix: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			wantPID := c.set(r)
			st := r.store.st.Clone()
			var fixes []string
			r.o.reconcileSlot(ctx, st, "green", func(f string, a ...any) { fixes = append(fixes, fmt.Sprintf(f, a...)) })
			report := strings.Join(fixes, "\n")
			if c.noFix && len(fixes) > 0 {
				t.Errorf("report:\n%s\nwant none", report)
			}
			rest := report
			for _, w := range c.wantFix {
				w = strings.NewReplacer("{pid}", fmt.Sprint(wantPID), "{port}", fmt.Sprint(r.green)).Replace(w)
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("report:\n%s\nwant (in order) %q", report, w)
				}
				rest = rest[i+len(w):]
			}
			if st.GreenPID != wantPID || st.GreenPort != r.green || st.GreenHealthy != c.healthy {
				t.Errorf("green pid %d port %d healthy %v, want %d %d %v", st.GreenPID, st.GreenPort, st.GreenHealthy, wantPID, r.green, c.healthy)
			}
			if wantPID > 0 && st.GreenPIDStart != r.host.procs[wantPID].start {
				t.Errorf("green start time %d, want %d", st.GreenPIDStart, r.host.procs[wantPID].start)
			}
			if c.release != "" && st.GreenRelease != c.release {
				t.Errorf("green release %q, want %q", st.GreenRelease, c.release)
			}
			if len(r.host.signalled) > 0 {
				t.Errorf("reconcile signalled %v", r.host.signalled)
			}
		})
	}
}

// TestReconcileProxy: the recorded proxy pid, generation and active colour
// rebuilt from what the load balancer answers.
func TestReconcileProxy(t *testing.T) {
	cases := []struct {
		name      string
		set       func(r *rig, b *proxyLB)
		plain     bool // a driver that reports no route (nginx, HAProxy)
		wantFix   string
		wantPID   int // -1: the pid set up
		wantGen   uint64
		wantActiv config.Color
	}{
		{name: "a newer generation and colour", set: func(r *rig, b *proxyLB) {
			b.route = &builtin.RouteInfo{Active: "green", Generation: 7}
		}, wantFix: "serves generation 7, the state said 3", wantGen: 7, wantActiv: "green"},
		{name: "an older generation is not taken", set: func(r *rig, b *proxyLB) {
			b.route = &builtin.RouteInfo{Active: "blue", Generation: 1}
		}, wantGen: 3, wantActiv: "blue"},
		{name: "a proxy bgd started serves: recorded", set: func(r *rig, b *proxyLB) {
			pid := r.host.spawn("bgd proxy", slots.ProxyMarker(r.o.stateAbs, "app")...)
			b.route = &builtin.RouteInfo{Active: "blue", Generation: 3, PID: pid}
		}, wantFix: "which bgd started, serves the route: recorded", wantPID: -1, wantGen: 3, wantActiv: "blue"},
		{name: "a proxy systemd runs: not recorded", set: func(r *rig, b *proxyLB) {
			pid := r.host.spawn("bgd proxy")
			b.route = &builtin.RouteInfo{Active: "blue", Generation: 3, PID: pid}
		}, wantFix: "was not started by bgd (a systemd unit?)", wantGen: 3, wantActiv: "blue"},
		{name: "a recorded proxy that is gone: forgotten", set: func(r *rig, b *proxyLB) {
			r.store.st.ProxyPID, r.store.st.ProxyPIDStart = 77, 1
			b.routeErr = errors.New("connection refused")
		}, wantFix: "builtin proxy pid 77: process is gone: forgotten", wantGen: 3, wantActiv: "blue"},
		{name: "the load balancer cannot be asked", set: func(r *rig, b *proxyLB) {
			b.routeErr = errors.New("connection refused")
		}, wantFix: "could not be asked (connection refused): active_version kept as blue", wantGen: 3, wantActiv: "blue"},
		{name: "a plain driver routes to green", plain: true, set: func(r *rig, b *proxyLB) {},
			wantFix: "the load balancer routes to green, the state said blue", wantGen: 3, wantActiv: "green"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &proxyLB{}
			var bal lb.Balancer = b
			if c.plain {
				bal = &testLB{active: "green"}
			}
			r := newRig(t, bal)
			r.store.st.Generation = 3
			c.set(r, b)
			st := r.store.st.Clone()
			var fixes []string
			r.o.reconcileProxy(ctx, st, func(f string, a ...any) { fixes = append(fixes, fmt.Sprintf(f, a...)) })
			report := strings.Join(fixes, "\n")
			if (c.wantFix == "") != (report == "") || !strings.Contains(report, c.wantFix) {
				t.Errorf("report %q, want %q", report, c.wantFix)
			}
			wantPID := c.wantPID
			if wantPID < 0 {
				wantPID = b.route.PID
			}
			if st.ProxyPID != wantPID || st.Generation != c.wantGen || st.ActiveVersion != c.wantActiv {
				t.Errorf("proxy_pid %d generation %d active %s, want %d %d %s", st.ProxyPID, st.Generation, st.ActiveVersion, wantPID, c.wantGen, c.wantActiv)
			}
			if wantPID > 0 && st.ProxyPIDStart != r.host.procs[wantPID].start {
				t.Errorf("proxy start time %d", st.ProxyPIDStart)
			}
		})
	}
}

// TestStopSlot: a process bgd started is stopped and forgotten; one that
// is not bgd's is forgotten unsignalled, with a note; a failed stop keeps
// the pid.
func TestStopSlot(t *testing.T) {
	stopFails := errors.New("stop pid: still running after SIGKILL")
	cases := []struct {
		name      string
		set       func(r *rig) int
		wantNote  string
		wantErr   error
		wantPID   bool // the pid stays recorded
		signalled bool
	}{
		{name: "nothing recorded", set: func(r *rig) int { return 0 }},
		{name: "ours: stopped", set: func(r *rig) int { return r.slot("green", "v1") }, signalled: true},
		{name: "gone already", set: func(r *rig) int { pid := r.slot("green", "v1"); r.host.end(pid); return pid }},
		{name: "not ours: forgotten with a note", set: func(r *rig) int {
			pid := r.host.spawn("postgres")
			r.store.st.GreenPID = pid
			return pid
		}, wantNote: "the recorded green pid {pid} was not signalled: stop: pid {pid} (postgres) is not a process bgd started"},
		{name: "the stop fails: kept", set: func(r *rig) int {
			pid := r.slot("green", "v1")
			r.host.procs[pid].stopErr = stopFails
			return pid
		}, wantErr: stopFails, wantPID: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			pid := c.set(r)
			p := r.op()
			note, err := p.stopSlot(ctx, "green")
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !errors.Is(err, ErrFailed) || !strings.HasPrefix(err.Error(), "stop green: ") {
					t.Fatalf("stopSlot = %v, want ErrFailed wrapping %v", err, c.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(c.wantNote, "{pid}", fmt.Sprint(pid)); (c.wantNote == "") != (note == "") || !strings.HasPrefix(note, want) {
				t.Errorf("note %q, want %q", note, want)
			}
			if got := p.st.GreenPID; (got == pid && pid > 0) != c.wantPID || (!c.wantPID && (got != 0 || p.st.GreenPIDStart != 0)) {
				t.Errorf("green_pid %d (start %d) after stopSlot, recorded %d; want kept %v", got, p.st.GreenPIDStart, pid, c.wantPID)
			}
			if signalled := slices.Contains(r.host.signalled, pid); signalled != c.signalled {
				t.Errorf("signalled %v, want %v", r.host.signalled, c.signalled)
			}
		})
	}
}

// TestStopWorkflow: the active slot is refused without force; stop says
// what it did.
func TestStopWorkflow(t *testing.T) {
	r := newRig(t, nil)
	r.slot("blue", "v1")
	if _, err := r.o.Stop(ctx, "blue", false); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "switch to green first, or use --force") {
		t.Fatalf("stop of the active slot = %v", err)
	}
	if _, err := r.o.Stop(ctx, "purple", false); !errors.Is(err, ErrUsage) {
		t.Fatalf("stop purple = %v", err)
	}
	pid := r.host.spawn("postgres")
	r.store.st.GreenPID = pid
	res, err := r.o.Stop(ctx, "green", false)
	if err != nil || res.Changed || !strings.HasPrefix(res.Message, "green was not running; the recorded green pid") || !r.host.alive(pid) {
		t.Fatalf("stop of a foreign pid: %+v %v", res, err)
	}
	r.slot("green", "v1")
	r.host.procs[r.store.st.GreenPID].stopErr = errors.New("still running")
	if _, err := r.o.Stop(ctx, "green", false); !errors.Is(err, ErrFailed) || r.state().GreenPID == 0 {
		t.Fatalf("a failed stop: %v, green_pid %d (want kept)", err, r.state().GreenPID)
	}
	r.host.procs[r.store.st.GreenPID].stopErr = nil
	res, err = r.o.Stop(ctx, "blue", true)
	if err != nil || !res.Changed || res.Message != "blue stopped" || r.state().BluePID != 0 {
		t.Fatalf("forced stop of the active slot: %+v %v", res, err)
	}
}

// TestDeployDecisions: whether a deploy has nothing to do, and what it
// does otherwise.
func TestDeployDecisions(t *testing.T) {
	cases := []struct {
		name        string
		set         func(r *rig, b *testLB)
		d           DeployOptions
		wantChanged bool
		wantSlot    config.Color
		wantStarts  int
		wantMsg     string
		wantActive  config.Color
	}{
		{name: "the release runs healthy and routed: no-op", set: func(r *rig, b *testLB) {
			r.slot("blue", "v2")
			b.active = "blue"
		}, d: DeployOptions{Release: "v2"}, wantSlot: "blue", wantMsg: "release v2 is already live on blue: nothing to do (--force redeploys)", wantActive: "blue"},
		{name: "the release runs healthy, the lb routes elsewhere: routed", set: func(r *rig, b *testLB) {
			r.slot("blue", "v2")
			b.active = "green"
		}, d: DeployOptions{Release: "v2"}, wantChanged: true, wantSlot: "blue",
			wantMsg: "release v2 was already healthy on blue; the load balancer now routes to it", wantActive: "blue"},
		{name: "--force redeploys", set: func(r *rig, b *testLB) {
			r.slot("blue", "v2")
			b.active = "blue"
		}, d: DeployOptions{Release: "v2", Force: true}, wantChanged: true, wantSlot: "green", wantStarts: 1,
			wantMsg: "release v2 is live on green; blue keeps running for rollback", wantActive: "green"},
		{name: "the release runs unhealthy: redeployed", set: func(r *rig, b *testLB) {
			r.slot("blue", "v2")
			r.host.health[r.blue] = errRefused
		}, d: DeployOptions{Release: "v2"}, wantChanged: true, wantSlot: "green", wantStarts: 1, wantActive: "green"},
		{name: "another release: deployed", set: func(r *rig, b *testLB) { r.slot("blue", "v1") },
			d: DeployOptions{Release: "v2"}, wantChanged: true, wantSlot: "green", wantStarts: 1, wantActive: "green"},
		{name: "--no-switch with the release healthy on the idle slot: no-op", set: func(r *rig, b *testLB) {
			r.slot("blue", "v1")
			r.slot("green", "v2")
		}, d: DeployOptions{Release: "v2", NoSwitch: true}, wantSlot: "green",
			wantMsg: "release v2 already runs healthy on green; traffic stays on blue (--no-switch)", wantActive: "blue"},
		{name: "--no-switch: started, traffic stays", set: func(r *rig, b *testLB) { r.slot("blue", "v1") },
			d: DeployOptions{Release: "v2", NoSwitch: true}, wantChanged: true, wantSlot: "green", wantStarts: 1,
			wantMsg: "release v2 is healthy on green; traffic stays on blue (--no-switch)", wantActive: "blue"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &testLB{}
			r := newRig(t, b)
			c.set(r, b)
			history := len(r.store.st.History)
			res, err := r.o.Deploy(ctx, c.d)
			if err != nil {
				t.Fatal(err)
			}
			if res.Changed != c.wantChanged || res.Slot != c.wantSlot || len(r.host.started) != c.wantStarts ||
				(c.wantMsg != "" && res.Message != c.wantMsg) {
				t.Errorf("deploy: changed=%v slot=%s starts=%d %q\nwant %v %s %d %q", res.Changed, res.Slot, len(r.host.started),
					res.Message, c.wantChanged, c.wantSlot, c.wantStarts, c.wantMsg)
			}
			st := r.state()
			if st.ActiveVersion != c.wantActive || st.InProgress != nil {
				t.Errorf("active %s in progress %+v, want %s", st.ActiveVersion, st.InProgress, c.wantActive)
			}
			if recorded := len(st.History) > history; recorded != (c.wantStarts > 0) {
				t.Errorf("history %+v: a no-op records nothing, a deploy records itself", st.History)
			}
		})
	}
}

// TestDeployFailures: a failed deploy leaves traffic where it was, records
// why, and never forgets a slot it could not stop.
func TestDeployFailures(t *testing.T) {
	stuck := errors.New("still running after SIGKILL")
	cases := []struct {
		name       string
		set        func(r *rig, b *testLB)
		wantIs     []error
		wantMsg    []string
		wantGreen  bool // green pid still recorded
		wantReason string
	}{
		{name: "the flip fails: the new slot is stopped", set: func(r *rig, b *testLB) {
			b.flipErr = fmt.Errorf("%w: nginx kept its old config", lb.ErrNotConfirmed)
		}, wantIs: []error{ErrFailed, lb.ErrNotConfirmed}, wantMsg: []string{"switch to green: ", "traffic stays on blue"}},
		{name: "the flip fails and the new slot cannot be stopped: reported, kept", set: func(r *rig, b *testLB) {
			b.flipErr = errors.New("reload failed")
			r.host.stopErrOfNewProcs = stuck
		}, wantIs: []error{ErrFailed, stuck}, wantMsg: []string{"reload failed", "the new slot was not stopped: stop green: still running"},
			wantGreen: true},
		{name: "the new slot is never healthy: stopped, its log quoted", set: func(r *rig, b *testLB) {
			r.host.waitErr = fmt.Errorf("%w: timeout after 1s", slots.ErrNotHealthy)
			r.host.logs[r.o.cfg.LogPath("app", "green")] = "panic: no database"
		}, wantIs: []error{ErrFailed, ErrNotHealthy}, wantMsg: []string{"green (port", "is not healthy: not healthy: timeout after 1s", "last lines of", "    panic: no database"}},
		{name: "never healthy and cannot be stopped: kept", set: func(r *rig, b *testLB) {
			r.host.waitErr = fmt.Errorf("%w: timeout", slots.ErrNotHealthy)
			r.host.stopErrOfNewProcs = stuck
		}, wantIs: []error{ErrFailed, ErrNotHealthy, stuck}, wantMsg: []string{"stopping the new green process", "so it stays recorded", "is empty"},
			wantGreen: true},
		{name: "it exits at start", set: func(r *rig, b *testLB) { r.host.exitAtStart = true },
			wantIs: []error{ErrFailed, ErrNotHealthy}, wantMsg: []string{"process exited at start"}},
		{name: "another process answers on its port", set: func(r *rig, b *testLB) {
			r.host.noBind = true
			r.host.health[r.green] = nil
		}, wantIs: []error{ErrFailed, ErrPortBusy}, wantMsg: []string{"answered health checks, but it is held by nobody, not by the slot"}},
		{name: "another process answers on its port and the slot cannot be stopped", set: func(r *rig, b *testLB) {
			r.host.noBind = true
			r.host.health[r.green] = nil
			r.host.stopErrOfNewProcs = stuck
		}, wantIs: []error{ErrFailed, ErrPortBusy, stuck}, wantMsg: []string{"held by nobody", "stays recorded"}, wantGreen: true},
		{name: "a foreign process holds the port", set: func(r *rig, b *testLB) {
			r.host.listen(r.host.spawn("nc -l"), r.green)
		}, wantIs: []error{ErrFailed, ErrPortBusy}, wantMsg: []string{"green port", "is held by pid", "(nc -l): stop that process or choose another port (GREEN_PORT)"}},
		{name: "the process cannot start", set: func(r *rig, b *testLB) { r.host.startErr = errors.New("exec format error") },
			wantIs: []error{ErrFailed}, wantMsg: []string{"start green: exec format error"}},
		{name: "an orphan cannot be stopped", set: func(r *rig, b *testLB) {
			pid := r.host.spawn("demo-app orphan", r.o.marker("green")...)
			r.host.procs[pid].stopErr = stuck
		}, wantIs: []error{ErrFailed, stuck}, wantMsg: []string{"which bgd started but never recorded"}},
		{name: "the recorded idle slot cannot be stopped", set: func(r *rig, b *testLB) {
			pid := r.slot("green", "v0")
			r.host.procs[pid].stopErr = stuck
		}, wantIs: []error{ErrFailed, stuck}, wantMsg: []string{"stop green: "}, wantGreen: true},
		{name: "the release directory is missing", set: func(r *rig, b *testLB) {
			r.o.svc.Workdir = "/srv/app/{{.Release}}"
			r.host.missing["/srv/app/v2"] = true
		}, wantIs: []error{ErrFailed}, wantMsg: []string{"release v2: its directory /srv/app/v2 (workdir \"/srv/app/{{.Release}}\") does not exist"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &testLB{active: "blue"}
			r := newRig(t, b)
			r.slot("blue", "v1")
			c.set(r, b)
			_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2"})
			for _, is := range c.wantIs {
				if !errors.Is(err, is) {
					t.Errorf("Deploy = %v, want it to match %v", err, is)
				}
			}
			for _, m := range c.wantMsg {
				if err == nil || !strings.Contains(err.Error(), m) {
					t.Errorf("Deploy = %v, want %q in it", err, m)
				}
			}
			st := r.state()
			ev := lastEvent(st)
			if st.ActiveVersion != "blue" || b.active != "blue" || st.InProgress != nil {
				t.Errorf("active %s, lb %s, in progress %+v", st.ActiveVersion, b.active, st.InProgress)
			}
			if ev.Action != "deploy" || ev.Status != state.StatusFailed || err == nil || ev.Reason != err.Error() {
				t.Errorf("last event %+v, want the failed deploy with the error as its reason", ev)
			}
			if (st.GreenPID != 0) != c.wantGreen || (!c.wantGreen && st.GreenHealthy) {
				t.Errorf("green_pid %d healthy %v, want recorded %v", st.GreenPID, st.GreenHealthy, c.wantGreen)
			}
			if c.wantGreen && !r.host.alive(st.GreenPID) {
				t.Errorf("recorded green pid %d is not the running one", st.GreenPID)
			}
		})
	}
}

// TestLaunchSaveFails: a slot whose pid cannot be saved is stopped again;
// when that fails too it stays recorded in memory and both are said.
func TestLaunchSaveFails(t *testing.T) {
	full := errors.New("no space left on device")
	for _, stuck := range []bool{false, true} {
		r := newRig(t, nil)
		if stuck {
			r.host.stopErrOfNewProcs = errors.New("still running")
		}
		p := r.op()
		r.store.saveErrs = []error{full}
		err := p.startSlot(ctx, "green", "v2")
		if !errors.Is(err, full) || len(r.host.started) != 1 {
			t.Fatalf("startSlot with a failing save = %v", err)
		}
		pid := r.host.nextPID
		if stuck != (p.st.GreenPID == pid) || stuck != strings.Contains(err.Error(), "stays recorded") || stuck == !r.host.alive(pid) {
			t.Errorf("stop fails %v: green_pid %d (new %d, alive %v): %v", stuck, p.st.GreenPID, pid, r.host.alive(pid), err)
		}
	}
}

// TestEndReportsBoth: the operation's error decides what end returns
// matches; a failed save is named beside it, or returned alone.
func TestEndReportsBoth(t *testing.T) {
	full := errors.New("no space left on device")
	r := newRig(t, nil)
	p, err := r.o.begin(ctx, "stop", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r.store.saveErrs = []error{full}
	err = p.end(usagef("bad"))
	if !errors.Is(err, ErrUsage) || errors.Is(err, full) || err.Error() != "bad; saving the state failed too: no space left on device" || r.store.locks != 0 {
		t.Fatalf("end = %v (locks %d)", err, r.store.locks)
	}
	p, _ = r.o.begin(ctx, "stop", "", "")
	r.store.saveErrs = []error{full}
	if err := p.end(nil); err != full {
		t.Fatalf("end(nil) = %v", err)
	}
}

// TestCheckTarget: a switch or rollback target is probed now.
func TestCheckTarget(t *testing.T) {
	cases := []struct {
		name    string
		set     func(r *rig)
		force   bool
		wantErr string
		healthy bool
	}{
		{name: "healthy", set: func(r *rig) { r.slot("green", "v1") }, healthy: true},
		{name: "running, unhealthy", set: func(r *rig) { r.slot("green", "v1"); r.host.health[r.green] = errRefused },
			wantErr: "Cannot switch to green: not healthy (not healthy: connection refused); start it with `bgd start green`, or use --force"},
		{name: "stopped", set: func(r *rig) {},
			wantErr: "Cannot switch to green: not healthy (not healthy: connection refused); it is stopped: start it with `bgd start green`"},
		{name: "unhealthy, forced", set: func(r *rig) {}, force: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, nil)
			c.set(r)
			r.store.st.GreenHealthy = !c.healthy
			p := r.op()
			err := p.checkTarget(ctx, "green", "switch to", c.force)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || err.Error() != c.wantErr || !errors.Is(err, ErrNotHealthy) ||
				!errors.Is(err, ErrFailed) || !errors.Is(err, slots.ErrNotHealthy)) {
				t.Fatalf("checkTarget = %v, want %q", err, c.wantErr)
			}
			if p.st.GreenHealthy != c.healthy || p.st.LastCheck == nil {
				t.Errorf("green_healthy %v, want %v (last_check %v)", p.st.GreenHealthy, c.healthy, p.st.LastCheck)
			}
		})
	}
}

// TestEnsureRouted: the load balancer is made to route to the active
// colour; a driver already routing there is only asked to confirm, one
// that follows the state file not even that.
func TestEnsureRouted(t *testing.T) {
	cases := []struct {
		name        string
		follows     bool
		lbActive    config.Color
		activeErr   error
		flipErr     error
		wantFlipped bool
		wantFlips   int
		wantGen     uint64 // generation of the last flip asked
		wantErr     string
	}{
		{name: "routes there already, follows the state", follows: true, lbActive: "blue"},
		{name: "routes there already: confirmed under the same generation", lbActive: "blue", wantFlips: 1, wantGen: 4},
		{name: "routes there, the confirmation fails", lbActive: "blue", flipErr: errors.New("haproxy: blue DOWN"), wantFlips: 1, wantGen: 4,
			wantErr: "confirm that the load balancer routes to blue: haproxy: blue DOWN"},
		{name: "routes elsewhere: flipped", lbActive: "green", wantFlipped: true, wantFlips: 1, wantGen: 5},
		{name: "cannot be asked: flipped", activeErr: errors.New("no socket"), wantFlipped: true, wantFlips: 1, wantGen: 5},
		{name: "routes elsewhere, the flip fails", lbActive: "green", flipErr: errors.New("reload failed"), wantFlips: 1, wantGen: 5,
			wantErr: "switch to blue: reload failed; traffic stays on blue"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := testLB{active: c.lbActive, activeErr: c.activeErr, flipErr: c.flipErr}
			var bal lb.Balancer = &tb
			flips := func() []lb.Route { return tb.flips }
			if c.follows {
				pb := &proxyLB{testLB: tb}
				bal, flips = pb, func() []lb.Route { return pb.flips }
			}
			r := newRig(t, bal)
			r.slot("blue", "v1")
			r.slot("green", "v1")
			r.store.st.Generation = 4
			p := r.op()
			flipped, err := p.ensureRouted(ctx, "blue")
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || err.Error() != c.wantErr || !errors.Is(err, ErrFailed)) {
				t.Fatalf("ensureRouted = %v, want %q", err, c.wantErr)
			}
			if flipped != c.wantFlipped || len(flips()) != c.wantFlips {
				t.Errorf("flipped %v after %d flips, want %v %d", flipped, len(flips()), c.wantFlipped, c.wantFlips)
			}
			if n := len(flips()); n > 0 && flips()[n-1].Generation != c.wantGen {
				t.Errorf("flip asked generation %d, want %d", flips()[n-1].Generation, c.wantGen)
			}
			if p.st.ActiveVersion != "blue" {
				t.Errorf("active %s", p.st.ActiveVersion)
			}
		})
	}
}

// TestFlipWithAFailingBalancer: a flip that fails leaves the previous
// routing in force and recorded.
func TestFlipWithAFailingBalancer(t *testing.T) {
	reload := errors.New("reload failed")
	full := errors.New("no space left on device")
	cases := []struct {
		name     string
		follows  bool
		flipErr  error
		ensure   error
		saveErrs []error
		wantErr  string
		wantGen  uint64 // generation in memory and saved afterwards
		wantSave int
	}{
		{name: "a driver of its own: nothing changed", flipErr: reload, wantErr: "switch to green: reload failed; traffic stays on blue", wantGen: 4},
		{name: "following the state: routed back under a new generation", follows: true, flipErr: reload,
			wantErr: "switch to green: reload failed; traffic stays on blue", wantGen: 6, wantSave: 2},
		{name: "following the state, the restore's save fails", follows: true, flipErr: reload, saveErrs: []error{nil, full},
			wantErr: "switch to green: reload failed; restoring blue in the state failed too: no space left on device", wantGen: 6, wantSave: 1},
		{name: "following the state, the first save fails", follows: true, saveErrs: []error{full},
			wantErr: "no space left on device", wantGen: 5},
		{name: "the proxy cannot be started", follows: true, ensure: errors.New("bind: address in use"),
			wantErr: "switch to green: bind: address in use", wantGen: 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := testLB{active: "blue", flipErr: c.flipErr}
			var bal lb.Balancer = &tb
			if c.follows {
				bal = &proxyLB{testLB: tb, ensureErr: c.ensure}
			}
			r := newRig(t, bal)
			r.slot("blue", "v1")
			r.slot("green", "v1")
			r.store.st.Generation = 4
			before := r.state().LastSwitch
			p := r.op()
			r.store.saveErrs = c.saveErrs
			err := p.flip(ctx, "green")
			if err == nil || err.Error() != c.wantErr {
				t.Fatalf("flip = %v, want %q", err, c.wantErr)
			}
			if c.flipErr != nil && !errors.Is(err, reload) || c.saveErrs != nil && !errors.Is(err, full) && c.flipErr == nil {
				t.Errorf("flip = %v does not match its cause", err)
			}
			if p.st.ActiveVersion != "blue" || p.st.LastSwitch != before || p.st.Generation != c.wantGen {
				t.Errorf("in memory: active %s last switch %v generation %d, want blue %v %d", p.st.ActiveVersion, p.st.LastSwitch, p.st.Generation, before, c.wantGen)
			}
			if r.store.saves != c.wantSave {
				t.Errorf("%d saves, want %d", r.store.saves, c.wantSave)
			}
			if c.wantSave == 2 && (r.state().ActiveVersion != "blue" || r.state().Generation != c.wantGen) {
				t.Errorf("saved: active %s generation %d", r.state().ActiveVersion, r.state().Generation)
			}
		})
	}
}

// TestFlipRefusesARouteBeforeSavingIt: a route the driver cannot apply (here
// one with no port for the target) is refused before the state is written,
// so a driver that follows the state file never sees it.
func TestFlipRefusesARouteBeforeSavingIt(t *testing.T) {
	r := newRig(t, &proxyLB{testLB: testLB{active: "blue"}})
	r.slot("blue", "v1")
	r.slot("green", "v1")
	r.store.st.GreenPort = 0
	r.store.st.Generation = 4
	p := r.op()
	err := p.flip(ctx, "green")
	if !errors.Is(err, lb.ErrInvalidRoute) || !errors.Is(err, ErrFailed) {
		t.Fatalf("flip = %v, want ErrFailed wrapping lb.ErrInvalidRoute", err)
	}
	if r.store.saves != 0 || p.st.ActiveVersion != "blue" || p.st.Generation != 4 {
		t.Errorf("%d saves, active %s, generation %d: want nothing changed", r.store.saves, p.st.ActiveVersion, p.st.Generation)
	}
}

// TestSwitchAndRollback: the workflows around checkTarget and flip.
func TestSwitchAndRollback(t *testing.T) {
	b := &testLB{active: "blue"}
	r := newRig(t, b)
	r.slot("blue", "v1")
	r.slot("green", "v2")
	res, err := r.o.Switch(ctx, "blue", false)
	if err != nil || res.Changed || res.Message != "blue is already active" {
		t.Fatalf("switch to the active colour: %+v %v", res, err)
	}
	if _, err := r.o.Switch(ctx, "red", false); !errors.Is(err, ErrUsage) {
		t.Fatalf("switch red = %v", err)
	}
	res, err = r.o.Switch(ctx, "green", false)
	if err != nil || !res.Changed || res.Message != "traffic switched from blue to green" || b.active != "green" ||
		lastEvent(r.state()).Release != "v2" {
		t.Fatalf("switch to green: %+v %v (lb %s)", res, err, b.active)
	}
	b.flipErr = errors.New("reload failed")
	if _, err := r.o.Rollback(ctx); !errors.Is(err, ErrFailed) || lastEvent(r.state()).Status != state.StatusFailed || r.state().ActiveVersion != "green" {
		t.Fatalf("rollback with a failing balancer: %v, %+v", err, lastEvent(r.state()))
	}
	if _, err := r.o.Switch(ctx, "blue", false); !errors.Is(err, ErrFailed) || lastEvent(r.state()).Action != "switch" {
		t.Fatalf("switch with a failing balancer: %v", err)
	}
	b.flipErr = nil
	res, err = r.o.Rollback(ctx)
	if err != nil || res.Message != "rolled back from green to blue" || lastEvent(r.state()).Status != state.StatusRolledBack {
		t.Fatalf("rollback: %+v %v", res, err)
	}
	r.host.health[r.green] = errRefused
	if _, err := r.o.Rollback(ctx); !errors.Is(err, ErrNotHealthy) || !strings.HasPrefix(err.Error(), "rollback impossible: Cannot roll back to green") {
		t.Fatalf("rollback to an unhealthy slot = %v", err)
	}
	if out, err := r.o.Render(); err != nil || string(out) != "blue" {
		t.Fatalf("Render = %q %v", out, err)
	}
}

// TestStartDecisions: start (re)starts only what needs it and routes the
// active colour.
func TestStartDecisions(t *testing.T) {
	b := &testLB{}
	r := newRig(t, b)
	var phases []string
	r.o.opts.Progress = func(ph Phase) { phases = append(phases, ph.Step) }
	res, err := r.o.Start(ctx, "blue", "")
	if err != nil || !res.Changed || res.Release != "initial" || b.active != "blue" || res.Message != fmt.Sprintf("blue is running and healthy on port %d", r.blue) {
		t.Fatalf("first start: %+v %v", res, err)
	}
	if want := []string{"starting", "waiting", "healthy", "switching", "done"}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	res, err = r.o.Start(ctx, "blue", "")
	if err != nil || res.Changed || len(r.host.started) != 1 || !strings.Contains(res.Message, "was already running") {
		t.Fatalf("second start: %+v %v", res, err)
	}
	if _, err := r.o.Start(ctx, "blue", "../x"); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("start of a bad release = %v", err)
	}
	r.host.waitErr = fmt.Errorf("%w: timeout", slots.ErrNotHealthy)
	if _, err := r.o.Start(ctx, "green", "v3"); !errors.Is(err, ErrNotHealthy) || lastEvent(r.state()).Action != "start" || r.state().GreenPID != 0 {
		t.Fatalf("failed start: %v %+v", err, lastEvent(r.state()))
	}
}

// TestSlotSpec: the command, directory and environment of a slot.
func TestSlotSpec(t *testing.T) {
	r := newRig(t, nil, func(s *config.Service) {
		s.Command = []string{"/srv/app/{{.Release}}/run", "--port={{.Port}}"}
		s.Workdir = "/srv/app/{{.Release}}"
		s.Env = map[string]string{"Z": "{{.Color}}", "A": "x"}
	})
	spec, err := r.o.slotSpec("green", "v2", 8080)
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := []string{"PORT=8080", "BG_COLOR=green", "BG_RELEASE=v2", "A=x", "Z=green"}
	if !slices.Equal(spec.Argv, []string{"/srv/app/v2/run", "--port=8080"}) || spec.Dir != "/srv/app/v2" || !slices.Equal(spec.Env, wantEnv) ||
		!slices.Equal(spec.Marker, r.o.marker("green")) || spec.LogPath != r.o.cfg.LogPath("app", "green") {
		t.Errorf("spec %+v", spec)
	}
	r.o.svc.Env["B"] = "{{.Nope}}"
	if _, err := r.o.slotSpec("green", "v2", 8080); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "env B") {
		t.Errorf("a bad env template = %v", err)
	}
	r.o.svc.Command = []string{"{{.Nope}}"}
	if _, err := r.o.slotSpec("green", "v2", 8080); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("a bad command template = %v", err)
	}
}

// TestStatus: status reports each slot as it is, not as recorded.
func TestStatus(t *testing.T) {
	b := &testLB{active: "green"}
	r := newRig(t, b)
	r.slot("blue", "v1")
	r.store.st.GreenPID = r.host.spawn("sshd")
	s, err := r.o.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Blue.Running || !s.Blue.Healthy || !s.Blue.Active || s.Blue.PID == 0 || s.Blue.Release != "v1" || s.ActivePort != r.blue {
		t.Errorf("blue %+v", s.Blue)
	}
	if s.Green.Running || s.Green.PID != 0 || s.Green.Healthy || s.Green.HealthError == "" || s.LBActive != "green" {
		t.Errorf("green %+v lb %s", s.Green, s.LBActive)
	}
	b.activeErr = errors.New("no socket")
	if s, _ := r.o.Status(ctx); s.LBError != "no socket" || s.LBActive != "" {
		t.Errorf("lb error %q active %q", s.LBError, s.LBActive)
	}
}

// TestIndentEscapesControlCharacters: a slot's log quoted in an error can
// never send escape sequences to the operator's terminal.
func TestIndentEscapesControlCharacters(t *testing.T) {
	got := indent("ok\tline\n\x1b[2J\x1b]0;pwned\x07 end\r")
	want := "    ok\tline\n    \\x1b[2J\\x1b]0;pwned\\x07 end\\x0d"
	if got != want {
		t.Errorf("indent = %q, want %q", got, want)
	}
}
