package orchestrator

import "testing"

// TestCanaryWeightsAreNotFlips: a canary's weights leave the flip count
// alone; its promote moves all traffic, and counts.
func TestCanaryWeightsAreNotFlips(t *testing.T) {
	r, _ := canaryRig(t, false)
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Canary: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.o.Canary(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if n := r.state().CurrentTotals().Flips; n != 0 {
		t.Errorf("after canary 10 and 50: %d flips, want 0", n)
	}
	if _, err := r.o.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.state().CurrentTotals().Flips; n != 1 {
		t.Errorf("after promote: %d flips, want 1", n)
	}
}
