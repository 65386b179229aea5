package testsupport

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunProcess(t *testing.T) {
	r, err := RunProcess(context.Background(), "/bin/sh", t.TempDir(), nil, "-c", "echo out; echo err >&2; exit 3")
	if err != nil || r.Code != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" || r.Wall <= 0 || r.MaxRSSKB <= 0 {
		t.Errorf("RunProcess = %+v, %v", r, err)
	}
	if _, err := RunProcess(context.Background(), "/no/such/program", "", nil); err == nil {
		t.Error("a missing program is no error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err = RunProcess(ctx, "/bin/sh", "", nil, "-c", "exec sleep 10")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second || r.Code != -1 {
		t.Errorf("a cancelled run: %+v, %v after %s", r, err, time.Since(start))
	}
}

// TestStartReady: a process that gets ready is returned running; one that
// exits first, or never gets ready, is reported and its group killed.
func TestStartReady(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ready")
	p, err := StartReady("sh", exec.Command("/bin/sh", "-c", "sleep 0.1; touch "+marker+"; exec sleep 10"), 5*time.Second,
		func(*Proc) bool { _, err := os.Stat(marker); return err == nil })
	if err != nil {
		t.Fatalf("StartReady = %v", err)
	}
	t.Cleanup(p.Kill)
	if p.Exited() {
		t.Error("the ready process is not running")
	}
	never := func(*Proc) bool { return false }
	if _, err := StartReady("quitter", exec.Command("/bin/true"), 5*time.Second, never); err == nil ||
		!strings.Contains(err.Error(), "quitter exited before it was ready") {
		t.Errorf("a process that exits: %v", err)
	}
	var slow *Proc
	start := time.Now()
	_, err = StartReady("sleeper", exec.Command("/bin/sleep", "10"), 100*time.Millisecond, func(p *Proc) bool { slow = p; return false })
	if err == nil || !strings.Contains(err.Error(), "sleeper not ready within 100ms") || time.Since(start) > 5*time.Second {
		t.Errorf("a process never ready: %v after %s", err, time.Since(start))
	}
	if slow == nil || !slow.Exited() {
		t.Error("the process that never got ready was left running")
	}
	if _, err := StartReady("missing", exec.Command("/no/such/program"), time.Second, never); err == nil {
		t.Error("a missing program is no error")
	}
}
