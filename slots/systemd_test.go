package slots

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fakes in testdata/fakesystemd stand in for systemd's programs and
// record each call in $FAKE_DIR/calls: systemd-run starts the command
// (with the --setenv environment only) in its own session and keeps
// <unit>.pid and <unit>.env there; systemctl show/stop read and end them;
// journalctl prints one line. They test bgd's side (the arguments,
// ownership, pids), not systemd: the real one is tested in a container.
// (The orchestrator's tests use them too.)

// fakeSystemd puts the fakes first on PATH and returns the directory where
// they record the calls and a Systemd that believes systemd runs.
func fakeSystemd(t *testing.T) (string, *Systemd) {
	t.Helper()
	dir := t.TempDir()
	fakes, err := filepath.Abs(filepath.Join("testdata", "fakesystemd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fakes+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_DIR", dir)
	booted := filepath.Join(dir, "run-systemd-system")
	if err := os.Mkdir(booted, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(dir, "started.pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	return dir, &Systemd{StopGrace: 3 * time.Second, SystemDir: booted}
}

func calls(t *testing.T, dir string) string {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	return string(b)
}

func TestSlotUnit(t *testing.T) {
	if u := SlotUnit("web.v2_a-b", "green"); u != "bgd-slot-web.v2_a-b-green.service" {
		t.Errorf("SlotUnit = %q", u)
	}
	u, ok := UnitOfMarker(SlotMarker("/s/web.json", "web", "blue"))
	if !ok || u != "bgd-slot-web-blue.service" {
		t.Errorf("UnitOfMarker(slot) = %q %v", u, ok)
	}
	if _, ok := UnitOfMarker(ProxyMarker("/s/web.json", "web")); ok {
		t.Error("UnitOfMarker(proxy) names a slot unit")
	}
}

func TestSystemdNotPID1(t *testing.T) {
	s := &Systemd{SystemDir: filepath.Join(t.TempDir(), "missing")}
	_, err := s.Start(Spec{Argv: []string{"sleep", "1"}, Marker: []string{"BGD_SLOT=a/blue"}}, "bgd-slot-a-blue.service")
	if !errors.Is(err, ErrNoSystemd) || !strings.Contains(err.Error(), "use `runner: process`") {
		t.Fatalf("Start without systemd = %v", err)
	}
	if err := s.Stop(context.Background(), "bgd-slot-a-blue.service", nil); !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("Stop without systemd = %v", err)
	}
}

// TestSystemdStartStopLogs: the unit is started with the slot's
// environment and marker, Restart=on-failure and a short RestartSec; its
// main process carries the marker; a unit of another installation is never
// stopped; logs come from the journal.
func TestSystemdStartStopLogs(t *testing.T) {
	dir, s := fakeSystemd(t)
	unit := SlotUnit("app", "blue")
	marker := SlotMarker(filepath.Join(dir, "state.json"), "app", "blue")
	spec := Spec{Argv: []string{"sleep", "30"}, Dir: dir, Env: []string{"PORT=7001", "BG_COLOR=blue", "BG_RELEASE=v2"}, Marker: marker}
	p, err := s.Start(spec, unit)
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ := exec.LookPath("sleep")
	sleep, _ = filepath.Abs(sleep)
	got := calls(t, dir)
	for _, want := range []string{
		"systemd-run --unit=bgd-slot-app-blue.service --collect --quiet --description=bgd slot app-blue",
		"-p Type=exec -p Restart=on-failure -p RestartSec=100ms -p TimeoutStopSec=3000ms",
		"--working-directory=" + dir,
		"--setenv=PORT=7001 --setenv=BG_COLOR=blue --setenv=BG_RELEASE=v2 --setenv=BGD_SLOT=app/blue --setenv=BGD_STATE=" + filepath.Join(dir, "state.json"),
		"-- " + sleep + " 30",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("calls lack %q:\n%s", want, got)
		}
	}
	if p.PID <= 0 || s.MainPID(unit) != p.PID {
		t.Fatalf("pid %d, MainPID %d", p.PID, s.MainPID(unit))
	}
	if err := p.Identity.Check(); err != nil {
		t.Fatalf("the unit's process is not recognised: %v", err)
	}

	// Another installation's marker: its unit is left alone.
	other := SlotMarker("/elsewhere/state.json", "app", "blue")
	if err := s.Stop(context.Background(), unit, other); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("Stop with another marker = %v, want ErrNotOurs", err)
	}
	if strings.Contains(calls(t, dir), "systemctl stop") || !Alive(p.PID) {
		t.Fatal("a unit that is not ours was stopped")
	}
	// Starting again over our own leftover unit stops it first.
	p2, err := s.Start(spec, unit)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited:
	case <-time.After(2 * time.Second):
		t.Fatal("Exited not closed after the unit was replaced")
	}
	if !strings.Contains(calls(t, dir), "systemctl stop -- bgd-slot-app-blue.service") || p2.PID == p.PID {
		t.Fatalf("leftover unit not stopped first:\n%s", calls(t, dir))
	}
	if err := s.Stop(context.Background(), unit, marker); err != nil {
		t.Fatal(err)
	}
	waitGone(context.Background(), p2.PID, 2*time.Second)
	if Alive(p2.PID) || s.MainPID(unit) != 0 {
		t.Fatalf("after Stop: alive %v, MainPID %d", Alive(p2.PID), s.MainPID(unit))
	}
	// A unit that is not loaded: nothing to stop, no error.
	before := strings.Count(calls(t, dir), "systemctl stop")
	if err := s.Stop(context.Background(), unit, marker); err != nil || strings.Count(calls(t, dir), "systemctl stop") != before {
		t.Fatalf("Stop of an unloaded unit: %v", err)
	}

	tail, err := s.JournalTail(unit, 7)
	if err != nil || tail != "2026-12-01T06:00:00+0000 host app[1]: listening" ||
		!strings.Contains(calls(t, dir), "journalctl -u bgd-slot-app-blue.service -n 7 --no-pager -o short-iso") {
		t.Fatalf("JournalTail = %q, %v\n%s", tail, err, calls(t, dir))
	}
}

func TestEnvWords(t *testing.T) {
	got := envWords(`PORT=5006 "APP_OPTS=a b" "Q=say \"hi\"" BGD_STATE=/srv/x.json "BGD_PATH=/my dir/s.json"`)
	want := []string{"PORT=5006", "APP_OPTS=a b", `Q=say "hi"`, "BGD_STATE=/srv/x.json", "BGD_PATH=/my dir/s.json"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("envWords = %q, want %q", got, want)
	}
	if got := envWords(""); len(got) != 0 {
		t.Errorf("envWords(\"\") = %q", got)
	}
}
