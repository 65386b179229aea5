package orchestrator

import (
	"errors"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// failingRig is a service with failover and failover_after 3 (the
// default), blue active and green standby, both running and healthy.
func failingRig(t *testing.T) (*rig, *testLB) {
	t.Helper()
	bal := &testLB{active: "blue"}
	r := newRig(t, bal, func(s *config.Service) { s.Failover = true })
	if got := r.o.svc.FailoverAfter; got != 3 {
		t.Fatalf("failover_after = %d, want the default 3", got)
	}
	r.slot("blue", "v1")
	r.slot("green", "v2")
	return r, bal
}

// TestSweepFailsOverAtTheThirdFailedProbe: an active slot that runs but
// fails its probes is kept by the first two sweeps (each says how many of
// failover_after it failed and fails with ErrNotHealthy), and the third
// fails over to the healthy standby.
func TestSweepFailsOverAtTheThirdFailedProbe(t *testing.T) {
	r, bal := failingRig(t)
	r.host.health[r.blue] = errRefused
	for i := 1; i <= 2; i++ {
		sw, err := r.o.HealthSweep(ctx)
		want := map[int]string{1: "active blue failed 1 of 3 probes; no failover yet", 2: "active blue failed 2 of 3 probes; no failover yet"}[i]
		st := r.state()
		if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), want) || !strings.Contains(sw.Message, want) {
			t.Fatalf("sweep %d: error %v, message %q, want ErrNotHealthy and %q in both", i, err, sw.Message, want)
		}
		if sw.FailedOver != "" || bal.active != "blue" || len(bal.flips) != 0 || st.ActiveVersion != "blue" {
			t.Fatalf("sweep %d failed over (to %q, lb %s, %d flips, active %s); want none before the 3rd failed probe",
				i, sw.FailedOver, bal.active, len(bal.flips), st.ActiveVersion)
		}
		if st.BlueFailedProbes != i || st.GreenFailedProbes != 0 || sw.Blue.FailedProbes != i {
			t.Fatalf("sweep %d: blue_failed_probes %d (sweep says %d), green %d; want %d and 0", i, st.BlueFailedProbes, sw.Blue.FailedProbes, st.GreenFailedProbes, i)
		}
	}
	sw, err := r.o.HealthSweep(ctx)
	st := r.state()
	if err != nil || sw.FailedOver != "green" || bal.active != "green" || st.ActiveVersion != "green" {
		t.Fatalf("3rd sweep: %v, failed over to %q, lb %s, active %s; want a failover to green", err, sw.FailedOver, bal.active, st.ActiveVersion)
	}
	ev := lastEvent(st)
	if ev.Action != "failover" || ev.Status != state.StatusSuccess || ev.From != "blue" || ev.To != "green" ||
		!strings.Contains(ev.Reason, "failed 3 consecutive probes (failover_after 3)") {
		t.Errorf("last event %+v, want a successful failover blue->green naming 3 consecutive probes", ev)
	}
	if st.BlueFailedProbes != 3 || strings.Contains(sw.Message, "no failover") {
		t.Errorf("after the failover: blue_failed_probes %d (want 3), message %q", st.BlueFailedProbes, sw.Message)
	}
}

// TestSweepPassingProbeStartsTheCountAgain: failures must be consecutive:
// a passing probe in between sets the count to 0, and so does a start or
// deploy that records the slot healthy after a failed probe.
func TestSweepPassingProbeStartsTheCountAgain(t *testing.T) {
	r, bal := failingRig(t)
	sweep := func(blue error) *Sweep {
		t.Helper()
		if blue == nil {
			delete(r.host.health, r.blue)
		} else {
			r.host.health[r.blue] = blue
		}
		sw, _ := r.o.HealthSweep(ctx)
		return sw
	}
	sweep(errRefused)
	sweep(errRefused)
	if got := r.state().BlueFailedProbes; got != 2 {
		t.Fatalf("after 2 failed probes blue_failed_probes = %d", got)
	}
	if sweep(nil); r.state().BlueFailedProbes != 0 || !r.state().BlueHealthy {
		t.Fatalf("after a passing probe blue_failed_probes = %d, healthy %v; want 0, true", r.state().BlueFailedProbes, r.state().BlueHealthy)
	}
	sweep(errRefused)
	sweep(errRefused)
	// A start or deploy of blue records it healthy (as its health wait
	// passed); the count it left behind does not carry on.
	r.store.st.BlueHealthy = true
	sw := sweep(errRefused)
	if got := r.state().BlueFailedProbes; got != 1 || sw.FailedOver != "" || bal.active != "blue" ||
		!strings.Contains(sw.Message, "active blue failed 1 of 3 probes; no failover yet") {
		t.Fatalf("after a recorded pass: blue_failed_probes %d, failed over %q (lb %s), message %q; want 1, none, blue, 1 of 3",
			got, sw.FailedOver, bal.active, sw.Message)
	}
}

// TestSweepNoFailoverToAFailingStandby: at failover_after, a standby that
// fails its probe too is not flipped to, and the sweep says so.
func TestSweepNoFailoverToAFailingStandby(t *testing.T) {
	r, bal := failingRig(t)
	r.host.health[r.blue], r.host.health[r.green] = errRefused, errRefused
	var sw *Sweep
	var err error
	for range 3 {
		sw, err = r.o.HealthSweep(ctx)
	}
	want := "active blue failed 3 of 3 probes; no failover: standby green is unhealthy too"
	if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), want) || !strings.Contains(sw.Message, want) ||
		sw.FailedOver != "" || len(bal.flips) != 0 {
		t.Fatalf("3rd sweep: %v, message %q, failed over %q, %d flips; want no flip and %q", err, sw.Message, sw.FailedOver, len(bal.flips), want)
	}
	if st := r.state(); st.BlueFailedProbes != 3 || st.GreenFailedProbes != 3 {
		t.Errorf("failed probes blue %d green %d, want 3 and 3", st.BlueFailedProbes, st.GreenFailedProbes)
	}
}

// TestSweepCountsOnlySlotsMeantToRun: a standby never started (or
// stopped) fails its probe every sweep but counts nothing.
func TestSweepCountsOnlySlotsMeantToRun(t *testing.T) {
	r := newRig(t, &testLB{active: "blue"}, func(s *config.Service) { s.Failover = true })
	r.slot("blue", "v1")
	for range 4 {
		if _, err := r.o.HealthSweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.state(); st.GreenFailedProbes != 0 || st.BlueFailedProbes != 0 || st.GreenHealthy {
		t.Errorf("green never started: green_failed_probes %d, blue %d, green healthy %v; want 0, 0, false",
			st.GreenFailedProbes, st.BlueFailedProbes, st.GreenHealthy)
	}
}

// TestSweepRestartStartsTheCountAgain: a slot the sweep restarts (its
// process had exited) is a new process: its count is 0 again.
func TestSweepRestartStartsTheCountAgain(t *testing.T) {
	r := newRig(t, &testLB{active: "blue"}) // no failover: the active slot is restarted in place
	r.host.end(r.slot("blue", "v1"))
	r.store.st.BlueFailedProbes = 2
	sw, err := r.o.HealthSweep(ctx)
	st := r.state()
	if err != nil || len(sw.Actions) != 1 || !strings.HasPrefix(sw.Actions[0], "restarted active slot blue") {
		t.Fatalf("sweep: %v, actions %q; want blue restarted", err, sw.Actions)
	}
	if st.BlueFailedProbes != 0 {
		t.Errorf("after the restart blue_failed_probes = %d, want 0", st.BlueFailedProbes)
	}
}

// TestSweepExitedActiveFailsOverAtOnce: an active slot whose process has
// exited is not a probe to give a second chance: with failover_after 3 the
// first sweep fails over to the healthy standby, then restarts the exited
// slot as the standby (its count back to 0).
func TestSweepExitedActiveFailsOverAtOnce(t *testing.T) {
	r, bal := failingRig(t)
	r.host.end(r.store.st.BluePID)
	sw, err := r.o.HealthSweep(ctx)
	st := r.state()
	if err != nil || sw.FailedOver != "green" || bal.active != "green" || st.ActiveVersion != "green" {
		t.Fatalf("sweep: %v, failed over to %q (lb %s); want green at once", err, sw.FailedOver, bal.active)
	}
	failover := st.History[len(st.History)-2]
	if failover.Action != "failover" || !strings.Contains(failover.Reason, "it runs no process") {
		t.Errorf("failover event %+v, want its reason to say it runs no process", failover)
	}
	if st.BlueFailedProbes != 0 || !r.o.running(st, "blue") {
		t.Errorf("blue restarted as the standby: running %v, blue_failed_probes %d (want 0)", r.o.running(st, "blue"), st.BlueFailedProbes)
	}
}

// TestSweepWithoutFailoverStillCounts: without failover the count is
// recorded (bgd status shows it) but never fails over nor talks of it.
func TestSweepWithoutFailoverStillCounts(t *testing.T) {
	bal := &testLB{active: "blue"}
	r := newRig(t, bal)
	r.slot("blue", "v1")
	r.slot("green", "v2")
	r.host.health[r.blue] = errRefused
	var sw *Sweep
	var err error
	for range 4 {
		sw, err = r.o.HealthSweep(ctx)
	}
	if !errors.Is(err, ErrNotHealthy) || sw.FailedOver != "" || len(bal.flips) != 0 || strings.Contains(err.Error(), "failover") ||
		r.state().BlueFailedProbes != 4 {
		t.Fatalf("4th sweep without failover: %v, failed over %q, %d flips, blue_failed_probes %d", err, sw.FailedOver, len(bal.flips), r.state().BlueFailedProbes)
	}
	status, err := r.o.Status(ctx)
	if err != nil || status.Blue.FailedProbes != 4 {
		t.Errorf("status: %v, blue failed_probes %d, want 4", err, status.Blue.FailedProbes)
	}
}

// TestSweepStoppedActiveFailsOverAtOnce: an active slot stopped with
// --force (no pid recorded, not meant to run) is failed over at once to a
// healthy standby, as before failover_after: no probe of it can pass.
func TestSweepStoppedActiveFailsOverAtOnce(t *testing.T) {
	r, bal := failingRig(t)
	r.host.end(r.store.st.BluePID)
	r.store.st.BluePID, r.store.st.BlueHealthy = 0, false
	sw, err := r.o.HealthSweep(ctx)
	if err != nil || sw.FailedOver != "green" || bal.active != "green" || r.state().ActiveVersion != "green" {
		t.Fatalf("sweep: %v, failed over to %q (lb %s), message %q; want green at once", err, sw.FailedOver, bal.active, sw.Message)
	}
	if ev := lastEvent(r.state()); ev.Action != "failover" || !strings.Contains(ev.Reason, "it runs no process") {
		t.Errorf("last event %+v, want a failover saying blue runs no process", ev)
	}
}
