package slots

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	// LogPath receives stdout and stderr (appended; created 0640).
	LogPath string
}

// Vars are the values a command, workdir or env template may use.
type Vars struct {
	Port    int
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
	PID    int
	Exited <-chan struct{}
	cmd    *exec.Cmd
	err    error
}

// ExitErr is the process's exit status once Exited is closed.
func (p *Process) ExitErr() error { return p.err }

// StartProcess starts spec detached: own session and process group, stdin
// from /dev/null, output appended to the log.
func StartProcess(spec Spec) (*Process, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("start slot: empty command")
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o750); err != nil {
		return nil, fmt.Errorf("start slot: log directory: %w", err)
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("start slot: open log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- bgd: starting %q at %s\n", spec.Argv, time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start slot %q: %w", spec.Argv[0], err)
	}
	exited := make(chan struct{})
	p := &Process{PID: cmd.Process.Pid, Exited: exited, cmd: cmd}
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
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// A process being reaped answers ESRCH rather than "not exist".
		return !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ESRCH)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
}

// Stop ends the slot's process group: SIGTERM, up to grace for the leader to
// exit, then SIGKILL. A pid that is already gone is not an error.
func Stop(ctx context.Context, pid int, grace time.Duration) error {
	if !Alive(pid) {
		return nil
	}
	signalGroup(pid, syscall.SIGTERM)
	if waitGone(ctx, pid, grace) {
		return nil
	}
	signalGroup(pid, syscall.SIGKILL)
	if waitGone(ctx, pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("stop pid %d: still running after SIGKILL", pid)
}

// signalGroup signals the process group led by pid, or pid alone when it
// leads no group (a slot started by something other than bgd).
func signalGroup(pid int, sig syscall.Signal) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
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

// LogTail returns the last n lines of a log file ("" if unreadable).
func LogTail(path string, n int) string {
	f, err := os.Open(path)
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
