package slots

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// bgd runs as root, so a pid read from a state file must never be trusted
// alone: the file may be stale (the process ended and the pid was reused)
// or edited (pid 1, an sshd). Every process bgd starts carries a marker in
// its environment, and bgd records its start time beside its pid; a signal
// goes only to a process that still has both.

// Identity is how bgd recognises a process it started.
type Identity struct {
	PID int
	// StartTime is when the process started, in clock ticks after boot
	// (field 22 of /proc/PID/stat); a process that reuses the pid has
	// another. 0: not recorded (a state file older than identities).
	StartTime uint64
	// Env lists KEY=VALUE entries the process's environment must hold:
	// the marker bgd gave it at start.
	Env []string
}

var (
	// ErrGone: the recorded process no longer runs (its pid may now belong
	// to another process, started later).
	ErrGone = errors.New("process is gone")
	// ErrNotOurs: a process runs with the recorded pid, but it is not one
	// bgd started; bgd never signals it.
	ErrNotOurs = errors.New("not a process bgd started")
)

// Check returns nil when id's process runs and is the one bgd started; an
// error matching ErrGone or ErrNotOurs otherwise. Pid 1, bgd itself and
// bgd's own process group are never ours.
func (id Identity) Check() error {
	if id.PID <= 0 {
		return ErrGone
	}
	if id.PID == 1 || id.PID == os.Getpid() || id.PID == syscall.Getpgrp() {
		return fmt.Errorf("pid %d is %w: it is init, bgd itself or bgd's own process group", id.PID, ErrNotOurs)
	}
	if !Alive(id.PID) {
		return ErrGone
	}
	if id.StartTime != 0 {
		st, err := StartTime(id.PID)
		if err != nil {
			return ErrGone
		}
		if st != id.StartTime {
			return fmt.Errorf("%w: pid %d now belongs to a process started later (%s)", ErrGone, id.PID, CommandLine(id.PID))
		}
	}
	if len(id.Env) == 0 {
		return fmt.Errorf("pid %d (%s): no marker to recognise it by: %w", id.PID, CommandLine(id.PID), ErrNotOurs)
	}
	if !HasEnv(id.PID, id.Env...) {
		return fmt.Errorf("pid %d (%s) is %w: its environment lacks %s", id.PID, CommandLine(id.PID), ErrNotOurs, strings.Join(id.Env, " "))
	}
	return nil
}

// StartTime reads a process's start time in clock ticks after boot.
func StartTime(pid int) (uint64, error) {
	f, err := ProcStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ProcStat reads /proc/<pid>/stat and returns its fields from the third
// on, field n of proc(5) at index n-3: [0] the state, [1] the parent pid,
// [2] the process group, [11] and [12] the user and system time in clock
// ticks, [19] the start time.
func ProcStat(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	return statFields(pid, string(data))
}

// statFields splits a /proc/<pid>/stat line after the command name, which
// stands in parentheses and may hold spaces and ')' itself: the fields
// start after its last ')'.
func statFields(pid int, stat string) ([]string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	return f, nil
}

// environ returns a process's initial environment ("" entries dropped).
func environ(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range strings.Split(string(data), "\x00") {
		if kv != "" {
			out = append(out, kv)
		}
	}
	return out, nil
}

// HasEnv reports whether the process's environment holds every one of the
// KEY=VALUE pairs (false when it cannot be read).
func HasEnv(pid int, pairs ...string) bool {
	env, err := environ(pid)
	if err != nil || len(pairs) == 0 {
		return false
	}
	have := make(map[string]bool, len(env))
	for _, kv := range env {
		have[kv] = true
	}
	for _, kv := range pairs {
		if !have[kv] {
			return false
		}
	}
	return true
}

// Getenv returns the value of key in the process's environment ("" if unset
// or unreadable).
func Getenv(pid int, key string) string {
	env, _ := environ(pid)
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Identify returns the identity of a running process with the given marker
// (its current start time), for recording a process bgd just started or
// found by its marker.
func Identify(pid int, marker []string) (Identity, error) {
	st, err := StartTime(pid)
	if err != nil {
		return Identity{}, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	id := Identity{PID: pid, StartTime: st, Env: marker}
	return id, id.Check()
}

// SlotMarker is the environment that marks the slot of service and color
// whose state file is statePath (absolute): two bgd installations on one
// host, or two test rigs, never take each other's processes for their own.
func SlotMarker(statePath, service, color string) []string {
	return []string{"BGD_SLOT=" + service + "/" + color, "BGD_STATE=" + statePath}
}

// ProxyMarker is the environment that marks a builtin proxy bgd started for
// the service whose state file is statePath (absolute).
func ProxyMarker(statePath, service string) []string {
	return []string{"BGD_PROXY=" + service, "BGD_STATE=" + statePath}
}

// FindMarked returns the identities of the live processes carrying marker
// that lead their own process group: the processes bgd started with it
// (their children inherit the marker, but not the group leadership).
func FindMarked(marker []string) []Identity {
	var out []Identity
	for _, pid := range FindByEnv(marker...) {
		if pg, err := syscall.Getpgid(pid); err != nil || pg != pid {
			continue
		}
		if id, err := Identify(pid, marker); err == nil {
			out = append(out, id)
		}
	}
	return out
}
