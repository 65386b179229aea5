package testsupport

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Run is one finished process, as a user's shell runs it: timed from fork
// to exit.
type Run struct {
	Args     []string
	Code     int
	Wall     time.Duration
	End      time.Time
	MaxRSSKB int64         // the process's peak RSS (ru_maxrss)
	CPU      time.Duration // user + system time
	Stdout   string
	Stderr   string
}

// RunProcess runs bin with args in dir with env (nil: this process's), in
// its own process group, and waits for it. The error is only about running
// it at all; a non-zero exit is in Code. When ctx ends the process gets
// SIGTERM (and SIGKILL 10 s later), and the error is ctx's.
func RunProcess(ctx context.Context, bin, dir string, env []string, args ...string) (*Run, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := &Run{Args: args, Wall: time.Since(start), End: time.Now(), Stdout: out.String(), Stderr: errb.String()}
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
		r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.MaxRSSKB = ru.Maxrss // kB on Linux
		}
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		return r, fmt.Errorf("run %s %s: %w", bin, strings.Join(args, " "), err)
	}
	return r, nil
}
