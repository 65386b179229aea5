package orchestrator_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
)

// TestTotalsCountFlipsAndDeploys: the state's totals count each flip that
// moved all traffic (not a start of the active colour, not a flip the
// load balancer refused), and each deploy by outcome with its duration.
func TestTotalsCountFlipsAndDeploys(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	flips := func() uint64 {
		t.Helper()
		st, err := store.Load()
		if err != nil {
			t.Fatal(err)
		}
		return st.CurrentTotals().Flips
	}
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if n := flips(); n != 0 {
		t.Errorf("after start blue: %d flips, want 0 (blue was already the active colour)", n)
	}
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"}); err != nil {
		t.Fatal(err)
	}
	if n := flips(); n != 1 {
		t.Errorf("after a deploy: %d flips, want 1", n)
	}
	st, _ := store.Load()
	if d := st.Totals.LastDeploy; d == nil || d.Status != state.StatusSuccess || d.Duration <= 0 {
		t.Errorf("last deploy = %+v, want a success with its duration", d)
	}
	if _, err := o.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	bal.flipErr = lb.ErrNotConfirmed
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v3"}); !errors.Is(err, lb.ErrNotConfirmed) {
		t.Fatalf("deploy with a failing flip = %v", err)
	}
	bal.flipErr = nil
	if n := flips(); n != 2 {
		t.Errorf("after a rollback and a refused flip: %d flips, want 2", n)
	}
	st, _ = store.Load()
	tt := st.Totals
	if tt.Count("deploy", state.StatusSuccess) != 1 || tt.Count("deploy", state.StatusFailed) != 1 || tt.Count("rollback", state.StatusRolledBack) != 1 {
		t.Errorf("totals = %+v, want 1 deploy live, 1 failed, 1 rollback", tt.Events)
	}
	if d := tt.LastDeploy; d == nil || d.Status != state.StatusFailed || d.Duration <= 0 {
		t.Errorf("last deploy = %+v, want the failed one with its duration", d)
	}
}
