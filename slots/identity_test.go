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

// foreign starts a process bgd did not start (no marker, its own group, as
// a daemon would be), which any SIGTERM or SIGKILL would end, and kills it
// at the end.
func foreign(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BGD_SLOT_HELPER=sleep", "PORT=1", "BG_COLOR=green")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestIdentityCheck(t *testing.T) {
	p, spec := startHelper(t, "ignore-term")
	waitLog(t, spec.LogPath, "ready")
	if p.Identity.StartTime == 0 || p.Identity.PID != p.PID {
		t.Fatalf("StartProcess recorded identity %+v", p.Identity)
	}
	other := foreign(t)
	cases := []struct {
		name string
		id   Identity
		want error // nil, ErrGone or ErrNotOurs
	}{
		{"the process bgd started", p.Identity, nil},
		{"no pid", Identity{Env: spec.Marker}, ErrGone},
		{"pid 1 (init)", Identity{PID: 1, Env: []string{"PATH=" + os.Getenv("PATH")}}, ErrNotOurs},
		{"bgd itself", Identity{PID: os.Getpid(), Env: []string{"PATH=" + os.Getenv("PATH")}}, ErrNotOurs},
		{"bgd's own process group", Identity{PID: syscall.Getpgrp(), Env: []string{"PATH=" + os.Getenv("PATH")}}, ErrNotOurs},
		{"pid reused: another start time", Identity{PID: p.PID, StartTime: p.Identity.StartTime + 1, Env: spec.Marker}, ErrGone},
		{"a process without the marker", Identity{PID: other.Process.Pid, Env: spec.Marker}, ErrNotOurs},
		{"the marker of another slot", Identity{PID: p.PID, StartTime: p.Identity.StartTime, Env: []string{"BGD_TEST_SLOT=other"}}, ErrNotOurs},
		{"no marker to check", Identity{PID: p.PID, StartTime: p.Identity.StartTime}, ErrNotOurs},
		{"a pid that does not exist", Identity{PID: 1 << 30, Env: spec.Marker}, ErrGone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.id.Check()
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("Check(%+v) = %v, want %v", c.id, err, c.want)
			}
		})
	}
}

// TestStopNeverSignalsAProcessBgdDidNotStart: a stale or edited pid (a
// foreign process, pid 1, a reused pid) is never signalled.
func TestStopNeverSignalsAProcessBgdDidNotStart(t *testing.T) {
	other := foreign(t)
	marker := []string{"BGD_TEST_SLOT=" + t.Name()}
	st, err := StartTime(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		id      Identity
		wantErr error
	}{
		{"foreign process, recorded as ours", Identity{PID: other.Process.Pid, Env: marker}, ErrNotOurs},
		{"foreign process, its start time copied too", Identity{PID: other.Process.Pid, StartTime: st, Env: marker}, ErrNotOurs},
		{"foreign process in a pid reused since", Identity{PID: other.Process.Pid, StartTime: st - 1, Env: marker}, nil},
		{"pid 1", Identity{PID: 1, Env: marker}, ErrNotOurs},
		{"bgd's own group", Identity{PID: syscall.Getpgrp(), Env: marker}, ErrNotOurs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Stop(context.Background(), c.id, 50*time.Millisecond)
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("Stop = %v, want %v", err, c.wantErr)
			}
			if !Alive(other.Process.Pid) {
				t.Fatalf("the foreign process %d was killed", other.Process.Pid)
			}
		})
	}
}

func TestFindMarked(t *testing.T) {
	p, spec := startHelper(t, "group")
	grandkid := waitNumber(t, spec.LogPath)
	found := FindMarked(spec.Marker)
	if len(found) != 1 || found[0].PID != p.PID || found[0].StartTime != p.Identity.StartTime {
		t.Fatalf("FindMarked = %+v, want only the group leader %d (its child %d inherits the marker)", found, p.PID, grandkid)
	}
	if got := FindMarked([]string{"BGD_TEST_SLOT=nobody"}); len(got) != 0 {
		t.Errorf("FindMarked of an unused marker = %+v", got)
	}
}

// TestLogsNeverFollowSymlinks: a symlink planted where a slot's log goes
// can never make bgd append to (or read) the file it points at.
func TestLogsNeverFollowSymlinks(t *testing.T) {
	spec := helperSpec(t, "exit")
	target := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(target, []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(spec.LogPath), 0o750)
	if err := os.Symlink(target, spec.LogPath); err != nil {
		t.Fatal(err)
	}
	_, err := StartProcess(spec)
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("StartProcess with a symlinked log = %v, want a refusal naming the symlink", err)
	}
	if data, _ := os.ReadFile(target); string(data) != "root:x:0:0\n" {
		t.Errorf("the symlink's target was written: %q", data)
	}
	if tail := LogTail(spec.LogPath, 5); tail != "" {
		t.Errorf("LogTail followed the symlink: %q", tail)
	}
	if tail := LogTail(target, -1); tail != "" {
		t.Errorf("LogTail(-1) = %q, want empty", tail)
	}
}

// TestStatFields reads /proc/<pid>/stat lines: a real one, one whose
// command holds ") " itself, and broken ones.
func TestStatFields(t *testing.T) {
	real := "24709 (nginx) S 24645 24645 2712 0 -1 4194304 100 0 0 0 731 212 0 0 20 0 1 0 47504 3133440 380 18446744073709551615 0 0 0\n"
	if f, err := statFields(24709, real); err != nil || f[0] != "S" || f[1] != "24645" || f[11] != "731" || f[12] != "212" || f[19] != "47504" {
		t.Errorf("statFields = %q, %v", f, err)
	}
	odd := "7 (a) b (c) Z 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 99 1 1\n"
	if f, err := statFields(7, odd); err != nil || f[0] != "Z" || f[2] != "7" || f[19] != "99" {
		t.Errorf("statFields of an odd command = %q, %v", f, err)
	}
	for _, bad := range []string{"", "7 (gone) S 1 2 3"} {
		if f, err := statFields(7, bad); err == nil {
			t.Errorf("statFields(%q) = %q, want an error", bad, f)
		}
	}
	if f, err := ProcStat(os.Getpid()); err != nil || f[1] != strconv.Itoa(os.Getppid()) || f[2] != strconv.Itoa(syscall.Getpgrp()) {
		t.Errorf("ProcStat(self) = %q, %v; want parent %d, group %d", f, err, os.Getppid(), syscall.Getpgrp())
	}
}
