package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// foreignProcess starts a process bgd did not start: this test binary as a
// demo app on port (0: a sleeping one), in its own session like a daemon,
// with no marker. Any signal bgd sent it would end it.
func foreignProcess(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	var cmd *exec.Cmd
	if port > 0 {
		cmd = exec.Command(os.Args[0], "demo-app", "--port", strconv.Itoa(port), "--color", "green", "--release", "foreign")
	} else {
		cmd = exec.Command("sleep", "600")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	if port > 0 {
		waitPort(t, port)
	}
	return cmd
}

// editState changes the state file as an operator (or an attacker) could.
func editState(t *testing.T, store *state.Store, fn func(*state.State)) {
	t.Helper()
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	fn(st)
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
}

// TestStopAndDeployNeverSignalAProcessBgdDidNotStart: a recorded pid that
// is pid 1, a foreign process (even with its start time copied), or a
// reused pid is never signalled by stop or deploy; it is forgotten.
func TestStopAndDeployNeverSignalAProcessBgdDidNotStart(t *testing.T) {
	cases := []struct {
		name string
		set  func(st *state.State, foreign int, start uint64)
	}{
		{"pid 1", func(st *state.State, _ int, _ uint64) { st.GreenPID = 1 }},
		{"a foreign pid", func(st *state.State, pid int, _ uint64) { st.GreenPID = pid }},
		{"a foreign pid with its start time", func(st *state.State, pid int, start uint64) {
			st.GreenPID, st.GreenPIDStart = pid, start
		}},
		{"a pid reused since", func(st *state.State, pid int, start uint64) {
			st.GreenPID, st.GreenPIDStart = pid, start-1
		}},
		{"bgd's own pid", func(st *state.State, _ int, _ uint64) { st.GreenPID = os.Getpid() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bal := &fakeLB{}
			o, store := newOrch(t, bal)
			ctx := context.Background()
			if _, err := o.Start(ctx, "blue", ""); err != nil {
				t.Fatal(err)
			}
			other := foreignProcess(t, 0)
			start, err := slots.StartTime(other.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			editState(t, store, func(st *state.State) { c.set(st, other.Process.Pid, start) })
			res, err := o.Stop(ctx, "green", true)
			if err != nil {
				t.Fatalf("stop green: %v", err)
			}
			if res.Changed || !strings.Contains(res.Message, "green was not running") {
				t.Errorf("stop green: changed=%v %q, want an unchanged 'was not running'", res.Changed, res.Message)
			}
			if !slots.Alive(other.Process.Pid) {
				t.Fatalf("stop green killed the foreign process %d", other.Process.Pid)
			}
			if st, _ := store.Load(); st.GreenPID != 0 || st.GreenPIDStart != 0 {
				t.Errorf("green_pid %d (start %d) after stop, want it forgotten", st.GreenPID, st.GreenPIDStart)
			}
			// The same pid recorded again, then a deploy to green.
			editState(t, store, func(st *state.State) { c.set(st, other.Process.Pid, start) })
			if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"}); err != nil {
				t.Fatalf("deploy: %v", err)
			}
			if !slots.Alive(other.Process.Pid) {
				t.Fatalf("deploy killed the foreign process %d", other.Process.Pid)
			}
			if st, _ := store.Load(); st.ActiveVersion != "green" || st.GreenPID == other.Process.Pid || st.GreenPIDStart == 0 {
				t.Errorf("after deploy: active %s green_pid %d start %d", st.ActiveVersion, st.GreenPID, st.GreenPIDStart)
			}
		})
	}
}

// TestOrphanOfAKilledDeployIsCleanedUp: a slot process that a deploy killed
// between "slot started" and "pid saved" left behind (it carries the marker,
// the state does not record it) does not block the next deploy: the deploy
// stops it and starts the slot anew.
func TestOrphanOfAKilledDeployIsCleanedUp(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	svc := o.Service()
	orphan, err := slots.StartProcess(slots.Spec{
		Argv:    []string{os.Args[0], "demo-app", "--port", strconv.Itoa(svc.Green.Port), "--color", "green", "--release", "killed"},
		LogPath: filepath.Join(t.TempDir(), "orphan.log"),
		Marker:  slots.SlotMarker(o.StatePath(), "app", "green"),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitPort(t, svc.Green.Port)
	res, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"})
	if err != nil {
		t.Fatalf("deploy with an orphan on the idle port: %v", err)
	}
	select {
	case <-orphan.Exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("the orphan %d still runs", orphan.PID)
	}
	if st, _ := store.Load(); st.ActiveVersion != "green" || st.GreenPID != res.PID || res.PID == orphan.PID || st.GreenRelease != "v2" {
		t.Errorf("after deploy: %+v, result pid %d (orphan %d)", st, res.PID, orphan.PID)
	}
}

// TestReconcileLeavesForeignProcessesAlone: a foreign process listening on
// the idle slot's port is reported, never adopted, and a start of that
// colour stays refused, before and after reconcile.
func TestReconcileLeavesForeignProcessesAlone(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	other := foreignProcess(t, o.Service().Green.Port)
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"}); !errors.Is(err, orchestrator.ErrPortBusy) {
		t.Fatalf("deploy before reconcile = %v, want ErrPortBusy", err)
	}
	rec, err := o.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	report := strings.Join(rec.Fixes, "\n")
	want := fmt.Sprintf("green: port %d is held by pid %d", o.Service().Green.Port, other.Process.Pid)
	if !strings.Contains(report, want) || !strings.Contains(report, "which bgd did not start: left alone") || strings.Contains(report, "adopted") {
		t.Errorf("reconcile report:\n%s\nwant %q, left alone, nothing adopted", report, want)
	}
	st, _ := store.Load()
	if st.GreenPID != 0 || st.GreenHealthy {
		t.Errorf("reconcile recorded green pid %d healthy %v, want 0/false", st.GreenPID, st.GreenHealthy)
	}
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"}); !errors.Is(err, orchestrator.ErrPortBusy) {
		t.Fatalf("deploy after reconcile = %v, want ErrPortBusy", err)
	}
	if _, err := o.Stop(ctx, "green", true); err != nil {
		t.Fatal(err)
	}
	if !slots.Alive(other.Process.Pid) {
		t.Fatal("the foreign process was killed")
	}
}

// TestReconcileAdoptsWhatBgdStartedAndRebuildsReleases: with the state lost,
// reconcile finds each slot bgd started by its marker, records its pid, start
// time and release (from the slot's environment).
func TestReconcileAdoptsWhatBgdStartedAndRebuildsReleases(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "r2"}); err != nil {
		t.Fatal(err)
	}
	before, _ := store.Load()
	editState(t, store, func(st *state.State) {
		*st = *state.New(st.BluePort, st.GreenPort)
	})
	rec, err := o.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := store.Load()
	if st.BluePID != before.BluePID || st.GreenPID != before.GreenPID || st.BluePIDStart != before.BluePIDStart ||
		st.GreenPIDStart != before.GreenPIDStart || st.BlueRelease != "r1" || st.GreenRelease != "r2" || st.ActiveVersion != "green" {
		t.Errorf("rebuilt %+v\nwant pids and start times of %+v, releases r1/r2, green active\nfixes:\n%s",
			st, before, strings.Join(rec.Fixes, "\n"))
	}
}

// TestDeployOfTheLiveReleaseChangesNothing: re-running a deploy of the
// release already live and healthy is a no-op (changed=false, same pid);
// --force redeploys.
func TestDeployOfTheLiveReleaseChangesNothing(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	first, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"})
	if err != nil || !first.Changed || first.Slot != "green" {
		t.Fatalf("first deploy: %+v %v", first, err)
	}
	before, _ := store.Load()
	again, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"})
	if err != nil || again.Changed || again.Slot != "green" || again.PID != first.PID {
		t.Fatalf("second deploy of v2: %+v %v, want unchanged on green pid %d", again, err, first.PID)
	}
	if st, _ := store.Load(); st.ActiveVersion != "green" || len(st.History) != len(before.History) {
		t.Errorf("after a no-op deploy: active %s, %d history entries, want green and %d (nothing recorded)", st.ActiveVersion, len(st.History), len(before.History))
	}
	forced, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2", Force: true})
	if err != nil || !forced.Changed || forced.Slot != "blue" {
		t.Fatalf("forced deploy: %+v %v, want a deploy to blue", forced, err)
	}
}

// TestStartTakesARelease: start runs the release asked for; the same one
// again changes nothing; a missing release directory is named.
func TestStartTakesARelease(t *testing.T) {
	releases := t.TempDir()
	for _, r := range []string{"r1", "r2"} {
		os.Mkdir(filepath.Join(releases, r), 0o755)
	}
	o, store := newOrch(t, &fakeLB{}, func(s *config.Service) { s.Workdir = filepath.Join(releases, "{{.Release}}") })
	ctx := context.Background()
	for _, step := range []struct {
		release     string
		wantChanged bool
	}{{"r1", true}, {"r1", false}, {"", false}, {"r2", true}} {
		res, err := o.Start(ctx, "blue", step.release)
		if err != nil {
			t.Fatalf("start blue %q: %v", step.release, err)
		}
		if res.Changed != step.wantChanged {
			t.Errorf("start blue %q: changed=%v, want %v", step.release, res.Changed, step.wantChanged)
		}
	}
	if st, _ := store.Load(); st.BlueRelease != "r2" {
		t.Errorf("blue_release %q, want r2", st.BlueRelease)
	}
	_, err := o.Start(ctx, "green", "r3")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(releases, "r3")) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("start of a missing release = %v, want an error naming %s", err, filepath.Join(releases, "r3"))
	}
	for _, bad := range []string{"../../x", "a/b", "v1\nv2", "..", strings.Repeat("x", 200)} {
		if _, err := o.Start(ctx, "green", bad); !errors.Is(err, config.ErrInvalid) {
			t.Errorf("start green with release %q = %v, want ErrInvalid", bad, err)
		}
		if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: bad}); !errors.Is(err, config.ErrInvalid) {
			t.Errorf("deploy of release %q = %v, want ErrInvalid", bad, err)
		}
	}
}

func waitPort(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %d", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlotOfAnOlderStateFileIsRecognised: a state file written before start
// times were recorded (pid only) still lets bgd stop the slot it started,
// recognised by the environment every bgd gave its slots; reconcile records
// the start time.
func TestSlotOfAnOlderStateFileIsRecognised(t *testing.T) {
	o, store := newOrch(t, &fakeLB{})
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2", NoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	before, _ := store.Load()
	editState(t, store, func(st *state.State) { st.BluePIDStart, st.GreenPIDStart = 0, 0 })
	rec, err := o.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := store.Load(); st.BluePIDStart != before.BluePIDStart || st.GreenPIDStart != before.GreenPIDStart {
		t.Errorf("reconcile did not record the start times: %d/%d, want %d/%d\n%s", st.BluePIDStart, st.GreenPIDStart,
			before.BluePIDStart, before.GreenPIDStart, strings.Join(rec.Fixes, "\n"))
	}
	editState(t, store, func(st *state.State) { st.GreenPIDStart = 0 })
	res, err := o.Stop(ctx, "green", false)
	if err != nil || !res.Changed {
		t.Fatalf("stop green of an older state file: %+v %v", res, err)
	}
	if slots.Alive(before.GreenPID) {
		t.Errorf("green (pid %d) still runs", before.GreenPID)
	}
}
