package orchestrator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
)

// unitRig is a rig whose slots run as systemd units: mainPID answers
// from units (unit name: pid).
func unitRig(t *testing.T) (*rig, map[string]int) {
	r := newRig(t, &testLB{active: "blue"}, func(s *config.Service) { s.Runner = config.RunnerSystemd })
	units := map[string]int{}
	r.o.units = &slots.Systemd{}
	r.o.sys.mainPID = func(unit string) int { return units[unit] }
	return r, units
}

// TestSystemdRestartedSlotIsRecognised: systemd restarted the slot under a
// new pid (Restart=on-failure); bgd records that pid (it carries the
// marker) instead of taking the slot for crashed. A unit running a process
// without the marker is not adopted.
func TestSystemdRestartedSlotIsRecognised(t *testing.T) {
	r, units := unitRig(t)
	old := r.slot("blue", "v1")
	r.host.end(old)
	again := r.host.spawn("demo-app", append([]string{"BG_RELEASE=v1"}, r.o.marker("blue")...)...)
	r.host.listen(again, r.blue)
	units["bgd-slot-app-blue.service"] = again

	sw, err := r.o.HealthSweep(ctx)
	if err != nil || len(sw.Actions) != 0 || len(r.host.started) != 0 {
		t.Fatalf("sweep: %v, actions %q, %d starts (systemd restarted it already)", err, sw.Actions, len(r.host.started))
	}
	if st := r.state(); st.BluePID != again || st.BluePIDStart != r.host.procs[again].start || st.BlueRestarts != nil {
		t.Errorf("recorded pid %d (start %d), want %d; restarts %+v", st.BluePID, st.BluePIDStart, again, st.BlueRestarts)
	}
	s, err := r.o.Status(ctx)
	if err != nil || !s.Blue.Running || s.Blue.PID != again {
		t.Fatalf("status: %+v %v", s.Blue, err)
	}

	units["bgd-slot-app-green.service"] = r.host.spawn("sshd")
	r.o.syncUnits(r.store.st)
	if r.store.st.GreenPID != 0 {
		t.Errorf("a unit process without the marker was recorded: %d", r.store.st.GreenPID)
	}
}

// TestSystemdSlotThatExitsAtStartIsStopped: with Restart=on-failure systemd
// would start a crashing slot again and again: bgd stops its unit.
func TestSystemdSlotThatExitsAtStartIsStopped(t *testing.T) {
	r, _ := unitRig(t)
	r.host.exitAtStart = true
	var stopped []slots.Identity
	stop := r.o.sys.stop
	r.o.sys.stop = func(c_ context.Context, id slots.Identity, g time.Duration) error {
		stopped = append(stopped, id)
		return stop(c_, id, g)
	}
	_, err := r.o.Start(ctx, "blue", "v1")
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "process exited at start") {
		t.Fatalf("start: %v", err)
	}
	if len(stopped) != 1 || stopped[0].PID != r.host.nextPID {
		t.Fatalf("stopped %+v, want the unit of the slot that exited (pid %d)", stopped, r.host.nextPID)
	}
	if !strings.Contains(err.Error(), "bgd-slot-app-blue.service") {
		t.Errorf("the error does not point at the unit's journal: %v", err)
	}
}

// TestSystemdRunnerWithoutSystemd: where systemd is not PID 1, status works
// and a command that starts or stops a slot is a usage error (exit 2).
func TestSystemdRunnerWithoutSystemd(t *testing.T) {
	env := map[string]string{"BLUE_PORT": pickPort(t), "GREEN_PORT": pickPort(t), "BG_PROXY_PORT": pickPort(t),
		"BG_STATE_FILE": filepath.Join(t.TempDir(), "bg_state.json")}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services["app"].Runner = config.RunnerSystemd
	o, err := New(cfg, "app", Options{Balancer: &testLB{}})
	if err != nil {
		t.Fatal(err)
	}
	o.units.SystemDir = filepath.Join(t.TempDir(), "not-booted-with-systemd")
	if _, err := o.Status(ctx); err != nil {
		t.Fatalf("status: %v", err)
	}
	for name, run := range map[string]func() error{
		"start": func() error { _, err := o.Start(ctx, "blue", ""); return err },
		"stop": func() error {
			st, _ := o.store.Load()
			st.GreenPID = 4242
			if err := o.store.Save(st); err != nil {
				return err
			}
			_, err := o.Stop(ctx, "green", false)
			return err
		},
	} {
		err := run()
		if !errors.Is(err, ErrUsage) || !errors.Is(err, slots.ErrNoSystemd) || !strings.Contains(err.Error(), "runner: process") {
			t.Errorf("%s: %v, want a usage error naming the runner", name, err)
		}
	}
}

// TestSystemdRunnerWorkflows runs start, deploy and stop under the systemd
// runner with the fake systemd programs (slots/testdata/fakesystemd),
// which start real demo app processes: the slots are started as units with
// their release, port and marker, health-gated as ever, recorded by their
// unit's main pid, and stopped through systemctl.
func TestSystemdRunnerWorkflows(t *testing.T) {
	calls := t.TempDir()
	fakes, err := filepath.Abs(filepath.Join("..", "slots", "testdata", "fakesystemd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fakes+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_DIR", calls)
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(calls, "started.pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	env := map[string]string{"BLUE_PORT": pickPort(t), "GREEN_PORT": pickPort(t), "BG_PROXY_PORT": pickPort(t),
		"BG_STATE_FILE": filepath.Join(t.TempDir(), "bg_state.json")}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services["app"].Runner = config.RunnerSystemd
	bal := &testLB{}
	o, err := New(cfg, "app", Options{Balancer: bal})
	if err != nil {
		t.Fatal(err)
	}
	o.units.SystemDir = calls // "booted with systemd"
	unitPID := func(color string) int { return o.units.MainPID(slots.SlotUnit("app", color)) }

	if _, err := o.Start(ctx, "blue", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Deploy(ctx, DeployOptions{Release: "v2"}); err != nil {
		t.Fatal(err)
	}
	st, _ := o.store.Load()
	if st.BluePID != unitPID("blue") || st.GreenPID != unitPID("green") || st.BluePID == 0 || st.GreenPID == 0 || bal.active != "green" {
		t.Fatalf("recorded pids %d/%d, units' %d/%d, lb %s", st.BluePID, st.GreenPID, unitPID("blue"), unitPID("green"), bal.active)
	}
	if got := slots.Getenv(st.GreenPID, "BG_RELEASE"); got != "v2" || !slots.HasEnv(st.GreenPID, o.marker("green")...) {
		t.Errorf("green's unit process: BG_RELEASE %q, marker %v", got, slots.HasEnv(st.GreenPID, o.marker("green")...))
	}
	b, _ := os.ReadFile(filepath.Join(calls, "calls"))
	for _, want := range []string{
		"systemd-run --unit=bgd-slot-app-blue.service --collect",
		"systemd-run --unit=bgd-slot-app-green.service --collect",
		"-p Restart=on-failure -p RestartSec=100ms -p TimeoutStopSec=10000ms",
		"--setenv=PORT=" + env["GREEN_PORT"] + " --setenv=BG_COLOR=green --setenv=BG_RELEASE=v2 --setenv=BGD_SLOT=app/green --setenv=BGD_STATE=" + o.stateAbs,
		"-- " + o.svc.Command[0] + " demo-app --port " + env["GREEN_PORT"] + " --color green --release v2",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the calls lack %q:\n%s", want, b)
		}
	}

	green := st.GreenPID
	if _, err := o.Stop(ctx, "green", true); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(calls, "calls"))
	if !strings.Contains(string(b), "systemctl stop -- bgd-slot-app-green.service") || unitPID("green") != 0 {
		t.Fatalf("green not stopped through its unit:\n%s", b)
	}
	for i := 0; i < 200 && slots.Alive(green); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if slots.Alive(green) {
		t.Errorf("green's process %d survived its unit's stop", green)
	}
}
