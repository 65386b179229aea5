package orchestrator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// fastInterval makes health.interval 1ms, for WatchHealth's rounds.
func fastInterval(s *config.Service) { s.Health.Interval = config.Duration(time.Millisecond) }

// TestHealthSweepAll: the sweeps come back in the services' order, nil
// where a sweep returned none, with every error joined.
func TestHealthSweepAll(t *testing.T) {
	healthy, down, broken := newRig(t, nil), newRig(t, nil), newRig(t, nil)
	healthy.slot("blue", "v1") // active blue runs; down's does not
	broken.store.lockErr = errors.New("disk on fire")
	orchs := []*Orchestrator{healthy.o, down.o, broken.o}

	sweeps, err := HealthSweepAll(context.Background(), orchs)
	if len(sweeps) != 3 || sweeps[0] == nil || sweeps[1] == nil || sweeps[2] == nil {
		t.Fatalf("sweeps = %v", sweeps)
	}
	if !sweeps[0].Blue.Healthy || sweeps[1].Blue.Healthy || !sweeps[0].Recorded || !sweeps[1].Recorded {
		t.Errorf("sweeps out of order or not recorded: %+v %+v", sweeps[0], sweeps[1])
	}
	if !errors.Is(err, ErrNotHealthy) || !errors.Is(err, ErrFailed) || !errors.Is(err, broken.store.lockErr) {
		t.Errorf("err = %v, want down's ErrNotHealthy joined with broken's lock error", err)
	}

	sweeps, err = HealthSweepAll(context.Background(), orchs[:1])
	if err != nil || len(sweeps) != 1 || !sweeps[0].Blue.Healthy {
		t.Errorf("one healthy service: %v, %v", sweeps, err)
	}
	if sweeps, err := HealthSweepAll(context.Background(), nil); err != nil || len(sweeps) != 0 {
		t.Errorf("no service: %v, %v", sweeps, err)
	}
}

// TestHealthSweepAllBounded: at most sweepParallel sweeps run at once; the
// others start as those end.
func TestHealthSweepAllBounded(t *testing.T) {
	const n = sweepParallel + 3
	entered := make(chan int, n)
	release := make(chan struct{})
	var orchs []*Orchestrator
	for i := range n {
		r := newRig(t, nil)
		r.store.beforeLoad = func(load int, _ *state.State) {
			if load == 1 { // the sweep's first read: it is running
				entered <- i
				<-release
			}
		}
		orchs = append(orchs, r.o)
	}
	done := make(chan error, 1)
	var sweeps []*Sweep
	go func() {
		var err error
		sweeps, err = HealthSweepAll(context.Background(), orchs)
		done <- err
	}()
	for range sweepParallel {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("fewer than sweepParallel sweeps started")
		}
	}
	select {
	case i := <-entered:
		t.Fatalf("sweep %d started while %d were running", i, sweepParallel)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; !errors.Is(err, ErrNotHealthy) {
		t.Errorf("err = %v, want ErrNotHealthy (no slot runs)", err)
	}
	if len(entered) != n-sweepParallel {
		t.Errorf("%d more sweeps ran after the release, want %d", len(entered), n-sweepParallel)
	}
	for i, s := range sweeps {
		if s == nil {
			t.Errorf("sweep %d missing", i)
		}
	}
}

// TestWatchHealth decides which errors end the --watch loop.
func TestWatchHealth(t *testing.T) {
	errReport := errors.New("stdout closed")
	for _, tc := range []struct {
		name    string
		healthy bool  // the active slot runs
		lockErr error // the store's Lock fails so
		// report fails with errReport on this round (0: never) and cancels
		// the context on cancelAt.
		failAt, cancelAt int
		wantRounds       int
		want             error // nil: no error
	}{
		{name: "healthy until cancelled", healthy: true, cancelAt: 3, wantRounds: 3},
		{name: "unhealthy goes on; the last round's error", cancelAt: 3, wantRounds: 3, want: ErrNotHealthy},
		{name: "report error stops at once", healthy: true, failAt: 2, cancelAt: 5, wantRounds: 2, want: errReport},
		{name: "report error beats the round's", failAt: 1, cancelAt: 5, wantRounds: 1, want: errReport},
		{name: "a sweep that cannot run stops", lockErr: errors.New("disk on fire"), cancelAt: 5, wantRounds: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil, fastInterval)
			if tc.healthy {
				r.slot("blue", "v1")
			}
			r.store.lockErr = tc.lockErr
			want := tc.want
			if tc.lockErr != nil {
				want = tc.lockErr
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rounds := 0
			err := WatchHealth(ctx, []*Orchestrator{r.o}, func(sw []*Sweep, err error) error {
				rounds++
				if len(sw) != 1 || sw[0] == nil || sw[0].Blue.Healthy != tc.healthy {
					t.Errorf("round %d: sweeps %v", rounds, sw)
				}
				if rounds == tc.cancelAt {
					cancel()
				}
				if rounds == tc.failAt {
					return errReport
				}
				return nil
			})
			if rounds != tc.wantRounds {
				t.Errorf("%d rounds, want %d", rounds, tc.wantRounds)
			}
			switch {
			case want == nil && err != nil, want != nil && !errors.Is(err, want):
				t.Errorf("err = %v, want %v", err, want)
			}
		})
	}
}

// TestWatchHealthLockedRound: a round whose sweep finds the lock busy
// (state.ErrLocked from a lock wait: reported, not recorded) is not an
// error; the loop goes on.
func TestWatchHealthLockedRound(t *testing.T) {
	r := newRig(t, nil, fastInterval)
	r.slot("blue", "v1")
	r.store.lockErrs = []error{&state.LockedError{Command: "deploy"}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recorded []bool
	err := WatchHealth(ctx, []*Orchestrator{r.o}, func(sw []*Sweep, err error) error {
		recorded = append(recorded, sw[0].Recorded)
		if err != nil {
			t.Errorf("round %d: %v", len(recorded), err)
		}
		if len(recorded) == 2 {
			cancel()
		}
		return nil
	})
	if err != nil || len(recorded) != 2 || recorded[0] || !recorded[1] {
		t.Errorf("err %v, recorded %v; want nil and [false true]", err, recorded)
	}
}

// TestHistory reads the recorded events, oldest first.
func TestHistory(t *testing.T) {
	r := newRig(t, nil)
	if h, err := r.o.History(); err != nil || len(h) != 0 {
		t.Errorf("no operation yet: %v, %v", h, err)
	}
	r.state().Record(state.Event{Action: "deploy", To: "green", Status: state.StatusSuccess, Release: "v2"})
	r.state().Record(state.Event{Action: "rollback", To: "blue", Status: state.StatusSuccess})
	h, err := r.o.History()
	if err != nil || len(h) != 2 || h[0].Release != "v2" || h[1].Action != "rollback" {
		t.Errorf("History() = %+v, %v", h, err)
	}
}

// TestStatusInProgressRunning: status tells an operation under way from
// one whose process is gone.
func TestStatusInProgressRunning(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(*rig) *state.Operation
		want bool
	}{
		{"none", func(*rig) *state.Operation { return nil }, false},
		{"its process runs", func(r *rig) *state.Operation {
			return &state.Operation{Command: "deploy", PID: r.host.spawn("bgd deploy")}
		}, true},
		{"its process is gone", func(r *rig) *state.Operation {
			pid := r.host.spawn("bgd deploy")
			r.host.end(pid)
			return &state.Operation{Command: "deploy", PID: pid}
		}, false},
		{"no pid recorded", func(*rig) *state.Operation { return &state.Operation{Command: "deploy"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.state().InProgress = tc.op(r)
			s, err := r.o.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if s.InProgressRunning != tc.want || (s.InProgress == nil) != (r.state().InProgress == nil) {
				t.Errorf("InProgressRunning = %v (InProgress %+v), want %v", s.InProgressRunning, s.InProgress, tc.want)
			}
		})
	}
}
