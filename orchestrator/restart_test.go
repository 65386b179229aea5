package orchestrator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// TestSweepRestarts decides which slots a health sweep restarts, and when
// it stops (health.max_restarts within health.restart_window).
func TestSweepRestarts(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*config.Service)
		setup func(r *rig)
		// want: restarts attempted (processes started), the error (substring,
		// "" none), the action (substring, "" none), the restart count.
		wantStarts int
		wantErr    string
		wantAction string
		wantCount  map[config.Color]int // -1: no record
	}{
		{name: "the active slot crashed: restarted, healthy, no outage",
			setup:      func(r *rig) { r.host.end(r.slot("blue", "v1")) },
			wantStarts: 1, wantAction: "restarted active slot blue (release v1, pid", wantCount: map[config.Color]int{"blue": 1, "green": -1}},
		{name: "the standby that ran crashed: restarted",
			setup:      func(r *rig) { r.slot("blue", "v1"); r.host.end(r.slot("green", "v2")) },
			wantStarts: 1, wantAction: "restarted standby slot green (release v2", wantCount: map[config.Color]int{"blue": -1, "green": 1}},
		{name: "a stopped standby (no pid) is left stopped",
			setup:      func(r *rig) { r.slot("blue", "v1"); r.store.st.GreenRelease = "v0" },
			wantStarts: 0, wantCount: map[config.Color]int{"blue": -1, "green": -1}},
		{name: "a fresh state starts nothing",
			setup:      func(r *rig) {},
			wantStarts: 0, wantErr: "active slot blue", wantCount: map[config.Color]int{"blue": -1, "green": -1}},
		{name: "an active slot alive but not answering is reported, not killed",
			setup:      func(r *rig) { r.slot("blue", "v1"); r.host.health[r.blue] = errRefused },
			wantStarts: 0, wantErr: "active slot blue", wantCount: map[config.Color]int{"blue": -1, "green": -1}},
		{name: "a recorded pid that is not bgd's is left to reconcile",
			setup: func(r *rig) {
				r.store.st.BluePID = r.host.spawn("sshd")
				r.store.st.BluePIDStart = r.host.procs[r.store.st.BluePID].start
			},
			wantStarts: 0, wantErr: "active slot blue", wantCount: map[config.Color]int{"blue": -1, "green": -1}},
		{name: "max_restarts 0: never restarted",
			edit:       func(s *config.Service) { s.Health.MaxRestarts = 0 },
			setup:      func(r *rig) { r.host.end(r.slot("blue", "v1")) },
			wantStarts: 0, wantErr: "not restarted (health.max_restarts is 0)", wantCount: map[config.Color]int{"blue": -1, "green": -1}},
		{name: "the limit within the window: a crash loop, not restarted",
			setup: func(r *rig) {
				r.host.end(r.slot("blue", "v1"))
				r.store.st.BlueRestarts = &state.Restarts{Count: 3, Since: state.Now().Add(-9 * time.Minute)}
			},
			wantStarts: 0, wantErr: "active slot blue: crash loop: 3 restarts in 10m0s", wantCount: map[config.Color]int{"blue": 3, "green": -1}},
		{name: "the window passed: counting starts again",
			setup: func(r *rig) {
				r.host.end(r.slot("blue", "v1"))
				r.store.st.BlueRestarts = &state.Restarts{Count: 3, Since: state.Now().Add(-11 * time.Minute)}
			},
			wantStarts: 1, wantAction: "restart 1 of 3 within 10m0s", wantCount: map[config.Color]int{"blue": 1, "green": -1}},
		{name: "a standby in a crash loop fails the sweep though the active is healthy",
			setup: func(r *rig) {
				r.slot("blue", "v1")
				r.store.st.GreenRestarts = &state.Restarts{Count: 3, Since: state.Now()}
			},
			wantStarts: 0, wantErr: "standby slot green: crash loop: 3 restarts", wantCount: map[config.Color]int{"blue": -1, "green": 3}},
		{name: "a standby restart that fails is an action, not an outage",
			setup: func(r *rig) {
				r.slot("blue", "v1")
				r.host.end(r.slot("green", "v2"))
				r.host.exitAtStart = true
			},
			wantStarts: 1, wantAction: "standby slot green: its process (pid", wantCount: map[config.Color]int{"blue": -1, "green": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			edits := []func(*config.Service){}
			if c.edit != nil {
				edits = append(edits, c.edit)
			}
			r := newRig(t, &testLB{active: "blue"}, edits...)
			c.setup(r)
			sw, err := r.o.HealthSweep(ctx)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, ErrFailed)) {
				t.Fatalf("sweep error %v, want %q", err, c.wantErr)
			}
			if len(r.host.started) != c.wantStarts {
				t.Errorf("%d restarts attempted, want %d", len(r.host.started), c.wantStarts)
			}
			if got := strings.Join(sw.Actions, "\n"); c.wantAction == "" && got != "" || !strings.Contains(got, c.wantAction) {
				t.Errorf("actions %q, want %q", sw.Actions, c.wantAction)
			}
			st := r.state()
			for color, want := range c.wantCount {
				rs := st.Restarts(color)
				if want < 0 && rs != nil || want >= 0 && (rs == nil || rs.Count != want) {
					t.Errorf("%s restarts %+v, want count %d", color, rs, want)
				}
			}
			if c.wantAction != "" && c.wantErr == "" && !strings.HasPrefix(c.wantAction, "standby slot green: its") {
				if ev := lastEvent(st); ev.Action != "restart" || ev.Status != state.StatusSuccess {
					t.Errorf("last event %+v, want a successful restart", ev)
				}
			}
		})
	}
}

// TestSweepCrashLoop: a slot that crashes at every start is restarted
// max_restarts times, then reported as a crash loop (recorded once) and
// left down; an operator's start begins a new count.
func TestSweepCrashLoop(t *testing.T) {
	r := newRig(t, &testLB{active: "blue"})
	r.host.end(r.slot("blue", "v1"))
	r.host.exitAtStart = true
	for i := 1; i <= 3; i++ {
		_, err := r.o.HealthSweep(ctx)
		if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "restart "+string(rune('0'+i))+" of 3 within 10m0s failed") {
			t.Fatalf("sweep %d: %v", i, err)
		}
		if ev := lastEvent(r.state()); ev.Action != "restart" || ev.Status != state.StatusFailed || !strings.Contains(ev.Reason, "exited at start") {
			t.Fatalf("sweep %d recorded %+v", i, ev)
		}
	}
	for i := 0; i < 2; i++ {
		_, err := r.o.HealthSweep(ctx)
		if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "crash loop: 3 restarts in 10m0s") {
			t.Fatalf("sweep past the limit: %v", err)
		}
	}
	if len(r.host.started) != 3 {
		t.Errorf("%d starts, want 3", len(r.host.started))
	}
	loops := 0
	for _, ev := range r.state().History {
		if strings.Contains(ev.Reason, "crash loop") {
			loops++
		}
	}
	if loops != 1 {
		t.Errorf("the crash loop is recorded %d times, want once: %+v", loops, r.state().History)
	}
	r.host.exitAtStart = false
	if _, err := r.o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if rs := r.state().BlueRestarts; rs != nil {
		t.Errorf("after an operator's start, restarts %+v, want none", rs)
	}
}

// TestSweepRestartNeedsTheLock: a sweep that cannot take the lock restarts
// nothing (a deploy may be replacing that very slot).
func TestSweepRestartNeedsTheLock(t *testing.T) {
	r := newRig(t, nil)
	r.host.end(r.slot("blue", "v1"))
	r.store.lockErr = &state.LockedError{Path: "x", PID: 7, Command: "deploy"}
	if _, err := r.o.HealthSweep(ctx); !errors.Is(err, ErrNotHealthy) || len(r.host.started) != 0 {
		t.Fatalf("sweep under a held lock: %v, %d starts", err, len(r.host.started))
	}
}

// TestSweepFailoverThenRestart: with failover, a crashed active slot
// still hands traffic to the healthy standby at once (failover keeps its
// meaning); the slot that died is then restarted, as the standby.
func TestSweepFailoverThenRestart(t *testing.T) {
	bal := &testLB{active: "green"}
	r := newRig(t, bal, func(s *config.Service) { s.Failover = true })
	r.slot("blue", "v1")
	r.host.end(r.slot("green", "v2"))
	r.store.st.ActiveVersion = "green"
	sw, err := r.o.HealthSweep(ctx)
	if err != nil || sw.FailedOver != "blue" || bal.active != "blue" {
		t.Fatalf("sweep: %v, failed over to %q, lb routes to %s", err, sw.FailedOver, bal.active)
	}
	st := r.state()
	if len(sw.Actions) != 1 || !strings.HasPrefix(sw.Actions[0], "restarted standby slot green (release v2") ||
		st.ActiveVersion != "blue" || !r.o.running(st, "green") || st.GreenRelease != "v2" {
		t.Fatalf("actions %q, active %s, green running %v release %s", sw.Actions, st.ActiveVersion, r.o.running(st, "green"), st.GreenRelease)
	}
	if n := len(st.History); n < 2 || st.History[n-2].Action != "failover" || st.History[n-1].Action != "restart" {
		t.Errorf("history %+v, want a failover then a restart", st.History)
	}
}
