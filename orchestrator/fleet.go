package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/bgd-dev/bgd/state"
)

// sweepParallel bounds how many services HealthSweepAll sweeps at once.
const sweepParallel = 32

// HealthSweepAll runs HealthSweep of every orchestrator concurrently, at
// most 32 at a time. The sweeps come back in the order of orchs (nil where
// HealthSweep returned none) with every sweep's error joined (errors.Join),
// so the error matches ErrNotHealthy, state.ErrLocked... when any sweep's
// does.
func HealthSweepAll(ctx context.Context, orchs []*Orchestrator) ([]*Sweep, error) {
	sweeps := make([]*Sweep, len(orchs))
	errs := make([]error, len(orchs))
	sem := make(chan struct{}, sweepParallel)
	done := make(chan int)
	for i, o := range orchs {
		go func() {
			sem <- struct{}{}
			sweeps[i], errs[i] = o.HealthSweep(ctx)
			<-sem
			done <- i
		}()
	}
	for range orchs {
		<-done
	}
	return sweeps, errors.Join(errs...)
}

// WatchHealth sweeps orchs (HealthSweepAll) and hands each round to report,
// then sweeps again every health.interval of the first service until ctx
// ends. It stops and returns:
//
//   - report's error, as soon as report returns one;
//   - a round's error that does not match ErrNotHealthy (a broken state
//     file, a lock error...): an unhealthy slot is what watching is for, a
//     sweep that cannot run is not;
//   - when ctx ends, the last round's error (nil if it was healthy).
//
// orchs must not be empty.
func WatchHealth(ctx context.Context, orchs []*Orchestrator, report func([]*Sweep, error) error) error {
	interval := orchs[0].Service().Health.Interval.D()
	for {
		sweeps, err := HealthSweepAll(ctx, orchs)
		if rerr := report(sweeps, err); rerr != nil {
			return rerr
		}
		if err != nil && !errors.Is(err, ErrNotHealthy) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}

// History is the service's deployment history as the state file records
// it, oldest first (empty before the first operation). It reads without
// locking.
func (o *Orchestrator) History() ([]state.Event, error) {
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	return st.History, nil
}
