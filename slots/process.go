package slots

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Spec is what it takes to start one slot.
type Spec struct {
	// Argv is the command, already expanded. Argv[0] is looked up in PATH
	// when it has no slash.
	Argv []string
	// Dir is the working directory. Default: bgd's own.
	Dir string
	// Env is appended to bgd's environment.
	Env []string
	// LogPath receives stdout and stderr (appended; created 0640; a
	// symlink is refused, so the log can never be redirected elsewhere).
	LogPath string
	// Marker holds KEY=VALUE entries added to the environment by which bgd
	// recognises the process later (see Identity). Required.
	Marker []string
}

// Vars are the values a command, workdir or env template may use.
type Vars struct {
	Port int
	// Color is "blue" or "green": a plain string (not config.Color), so a
	// template may pass it where a string is expected (printf's format).
	Color   string
	Release string
}

// Expand renders each element of argv (and dir) as a text/template with v.
func Expand(argv []string, dir string, v Vars) ([]string, string, error) {
	out := make([]string, len(argv))
	for i, a := range argv {
		s, err := expandOne(a, v)
		if err != nil {
			return nil, "", err
		}
		out[i] = s
	}
	d, err := expandOne(dir, v)
	return out, d, err
}

func expandOne(s string, v Vars) (string, error) {
	if !strings.Contains(s, "{{") {
		return s, nil
	}
	t, err := template.New("arg").Option("missingkey=error").Parse(s)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", s, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return "", fmt.Errorf("template %q: %w", s, err)
	}
	return b.String(), nil
}

// Process is a started slot. Exited is closed when bgd sees the process end
// (only while the bgd that started it runs).
type Process struct {
	PID int
	// Identity is what to record to signal it later.
	Identity Identity
	Exited   <-chan struct{}
	cmd      *exec.Cmd
	err      error
}

// ExitErr is the process's exit status once Exited is closed.
func (p *Process) ExitErr() error { return p.err }

// StartProcess starts spec detached: own session and process group, stdin
// from /dev/null, output appended to the log.
func StartProcess(spec Spec) (*Process, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("start slot: empty command")
	}
	if len(spec.Marker) == 0 {
		return nil, errors.New("start slot: no marker: bgd could never recognise the process to stop it")
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o750); err != nil {
		return nil, fmt.Errorf("start slot: log directory: %w", err)
	}
	logf, err := openLog(spec.LogPath)
	if err != nil {
		return nil, fmt.Errorf("start slot: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- bgd: starting %q at %s\n", spec.Argv, time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	// Later entries win (os/exec keeps the last of a duplicated key), so an
	// inherited marker never masks the one given here.
	cmd.Env = append(append(os.Environ(), spec.Env...), spec.Marker...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start slot %q: %w", spec.Argv[0], err)
	}
	exited := make(chan struct{})
	pid := cmd.Process.Pid
	// Start returns once the child has exec'd (os/exec waits on a
	// close-on-exec pipe), so its environment is the slot's, and its start
	// time, set at fork, is readable until it is reaped below.
	st, _ := StartTime(pid)
	p := &Process{PID: pid, Identity: Identity{PID: pid, StartTime: st, Env: spec.Marker}, Exited: exited, cmd: cmd}
	go func() {
		p.err = cmd.Wait()
		close(exited)
	}()
	return p, nil
}

// Alive reports whether pid is a live (not zombie) process.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	f, err := ProcStat(pid)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return false // ESRCH: a process being reaped
	case err != nil:
		return true // unreadable, but signalable
	}
	return f[0] != "Z"
}

// openLog opens a log for appending, creating it 0640. A symlink (or any
// file that is not regular) is refused, so that a link planted in the log
// directory can never make bgd, running as root, append to another file.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o640)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("open log %s: it is a symlink: remove it (bgd writes only to a regular file)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open log %s: not a regular file: remove it", path)
	}
	return f, nil
}

// Stop ends the process group of a process bgd started: SIGTERM, up to
// grace for the leader to exit, then SIGKILL. Before each signal the
// process is checked against id (see Identity.Check): a process that is
// gone is not an error; one that is not bgd's is never signalled, and the
// error matches ErrNotOurs.
func Stop(ctx context.Context, id Identity, grace time.Duration) error {
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGTERM, grace}, {syscall.SIGKILL, 5 * time.Second}} {
		if err := id.Check(); errors.Is(err, ErrGone) {
			return nil
		} else if err != nil {
			return fmt.Errorf("stop: %w: left running", err)
		}
		signalGroup(id.PID, step.sig)
		if waitGone(ctx, id.PID, step.wait) {
			return nil
		}
	}
	return fmt.Errorf("stop pid %d: still running after SIGKILL", id.PID)
}

// signalGroup signals the process group led by pid (every process bgd
// starts leads its own session and group), or pid alone when it leads none.
// Callers have checked pid's identity, which excludes pid 1 and bgd's own
// group.
func signalGroup(pid int, sig syscall.Signal) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid && pid > 1 && pgid != syscall.Getpgrp() {
		if syscall.Kill(-pid, sig) == nil {
			return
		}
	}
	syscall.Kill(pid, sig)
}

func waitGone(ctx context.Context, pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for wait := time.Millisecond; ; wait = min(wait*2, 50*time.Millisecond) {
		if !Alive(pid) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(wait)
	}
}

// LogTail returns the last n lines of a log file ("" if unreadable or n < 1).
func LogTail(path string, n int) string {
	if n < 1 {
		return ""
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max64(0, st.Size()-max)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
