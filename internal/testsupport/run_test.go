package testsupport

import (
	"context"
	"errors"
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
