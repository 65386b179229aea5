package slots

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrNoSystemd: the systemd runner was asked for where systemd is not PID 1.
var ErrNoSystemd = errors.New("systemd is not running as PID 1 on this host")

// Systemd runs slots as transient systemd units (the `runner: systemd` of a
// service): `systemd-run --unit=<unit> --collect` with Restart=on-failure,
// so systemd itself brings a crashed slot back, and the slot's output goes
// to the journal. bgd never signals a slot's pid under this runner: it
// stops the unit (`systemctl stop`), which signals the whole unit. The
// slot's current pid is the unit's MainPID, which changes when systemd
// restarts it.
type Systemd struct {
	// StopGrace is the unit's TimeoutStopSec: SIGTERM, then SIGKILL after it.
	StopGrace time.Duration
	// RestartDelay (the unit's RestartSec) is how long systemd waits
	// before restarting a crashed slot. Default 100ms.
	RestartDelay time.Duration
	// SystemDir proves that systemd is PID 1. Default /run/systemd/system
	// (sd_booted(3)'s test).
	SystemDir string
	// Run, Ctl and Journal are the programs, looked up on PATH. Defaults
	// systemd-run, systemctl, journalctl.
	Run, Ctl, Journal string
}

// SlotUnit is the unit that runs service's color slot. Service names are
// [A-Za-z0-9_.-] (config.ValidName), all valid in a unit name, and the
// colour is always last, so two services never share a unit.
func SlotUnit(service, color string) string {
	return "bgd-slot-" + service + "-" + color + ".service"
}

// UnitOfMarker is the unit of the slot a slot marker (SlotMarker) names;
// false for another marker.
func UnitOfMarker(marker []string) (string, bool) {
	for _, kv := range marker {
		if v, ok := strings.CutPrefix(kv, "BGD_SLOT="); ok {
			service, color, ok := strings.Cut(v, "/")
			return SlotUnit(service, color), ok
		}
	}
	return "", false
}

func (s *Systemd) prog(p, def string) string {
	if p != "" {
		return p
	}
	return def
}

// Ready fails (ErrNoSystemd) unless systemd is PID 1 here.
func (s *Systemd) Ready() error {
	dir := s.prog(s.SystemDir, "/run/systemd/system")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("runner systemd: %w (no %s): use `runner: process` here, or run bgd on a host booted with systemd", ErrNoSystemd, dir)
	}
	return nil
}

// ctl runs systemctl with args and returns its output.
func (s *Systemd) ctl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, s.prog(s.Ctl, "systemctl"), args...)
}

func run(ctx context.Context, prog string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// show returns the unit's properties (systemctl show -p ...), by name.
func (s *Systemd) show(ctx context.Context, unit string, props ...string) (map[string]string, error) {
	args := []string{"show"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := s.ctl(ctx, append(args, "--", unit)...)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// MainPID is the unit's main process now (0: none, or systemd cannot be
// asked).
func (s *Systemd) MainPID(unit string) int {
	m, err := s.show(context.Background(), unit, "MainPID")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(m["MainPID"])
	return pid
}

// owned reports whether the unit is loaded, and fails (ErrNotOurs) when it
// is loaded but its environment lacks marker: another bgd installation's
// slot of a service of the same name, or a unit bgd did not make.
func (s *Systemd) owned(ctx context.Context, unit string, marker []string) (bool, error) {
	m, err := s.show(ctx, unit, "LoadState", "Environment")
	if err != nil {
		return false, err
	}
	if m["LoadState"] == "not-found" || m["LoadState"] == "" {
		return false, nil
	}
	have := map[string]bool{}
	for _, kv := range envWords(m["Environment"]) {
		have[kv] = true
	}
	for _, kv := range marker {
		if !have[kv] {
			return true, fmt.Errorf("unit %s is %w: its environment lacks %s", unit, ErrNotOurs, kv)
		}
	}
	return true, nil
}

// envWords splits systemctl show's Environment= value into its KEY=VALUE
// entries: separated by spaces, an entry holding a space or a quote is
// written in double quotes, with \" and \\ escaped inside.
func envWords(s string) []string {
	var out []string
	var b strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				out = append(out, b.String())
				b.Reset()
			}
			inWord = false
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, b.String())
	}
	return out
}

// Start runs spec as the transient unit named unit and returns its main
// process once systemd has exec'd it (Type=exec). The environment given to
// the unit is spec.Env and spec.Marker only (--setenv; systemd adds its own
// PATH), never bgd's. A leftover unit of the same name (bgd's own) is
// stopped first. Exited is closed when that main process ends (systemd may
// restart it under a new pid, which MainPID then names).
func (s *Systemd) Start(spec Spec, unit string) (*Process, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("start slot: empty command")
	}
	if len(spec.Marker) == 0 {
		return nil, errors.New("start slot: no marker: bgd could never recognise the process to stop it")
	}
	ctx := context.Background()
	if err := s.Stop(ctx, unit, spec.Marker); err != nil {
		return nil, fmt.Errorf("start slot: a unit %s is left: %w", unit, err)
	}
	argv0, err := resolve(spec.Argv[0], spec.Dir)
	if err != nil {
		return nil, err
	}
	restart := s.RestartDelay
	if restart <= 0 {
		restart = 100 * time.Millisecond
	}
	args := []string{"--unit=" + unit, "--collect", "--quiet",
		"--description=bgd slot " + strings.TrimSuffix(strings.TrimPrefix(unit, "bgd-slot-"), ".service"),
		"-p", "Type=exec", "-p", "Restart=on-failure",
		"-p", "RestartSec=" + strconv.FormatInt(restart.Milliseconds(), 10) + "ms",
		"-p", "TimeoutStopSec=" + strconv.FormatInt(max(s.StopGrace.Milliseconds(), 1), 10) + "ms"}
	if spec.Dir != "" {
		dir, err := filepath.Abs(spec.Dir)
		if err != nil {
			return nil, err
		}
		args = append(args, "--working-directory="+dir)
	}
	for _, kv := range append(append([]string{}, spec.Env...), spec.Marker...) {
		args = append(args, "--setenv="+kv)
	}
	args = append(append(args, "--", argv0), spec.Argv[1:]...)
	if _, err := run(ctx, s.prog(s.Run, "systemd-run"), args...); err != nil {
		return nil, fmt.Errorf("start slot: %w", err)
	}
	pid := s.MainPID(unit)
	if pid <= 0 {
		// It exited at once, and systemd would restart it again and again.
		s.ctl(ctx, "stop", "--", unit)
		s.ctl(ctx, "reset-failed", "--", unit)
		return nil, fmt.Errorf("start slot: unit %s started, but its process exited at once (stopped again): see journalctl -u %s", unit, unit)
	}
	st, _ := StartTime(pid)
	exited := make(chan struct{})
	p := &Process{PID: pid, Identity: Identity{PID: pid, StartTime: st, Env: spec.Marker}, Exited: exited}
	go func() {
		// Polled: the process is systemd's child, not bgd's. Bounded, so
		// a watching sweep does not gather pollers.
		for deadline := time.Now().Add(time.Hour); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if !Alive(pid) {
				p.err = fmt.Errorf("the main process of %s (pid %d) exited", unit, pid)
				close(exited)
				return
			}
		}
	}()
	return p, nil
}

// resolve makes argv0 absolute, as systemd-run needs: a bare name is looked
// up on PATH, a relative path is taken from dir (the slot's workdir).
func resolve(argv0, dir string) (string, error) {
	switch {
	case filepath.IsAbs(argv0):
		return argv0, nil
	case strings.Contains(argv0, "/"):
		return filepath.Abs(filepath.Join(dir, argv0))
	}
	p, err := exec.LookPath(argv0)
	if err != nil {
		return "", fmt.Errorf("start slot %q: %w", argv0, err)
	}
	return filepath.Abs(p)
}

// Stop stops the unit (systemctl stop: SIGTERM to the unit, SIGKILL after
// its TimeoutStopSec) if it is loaded, and clears a failed state. A unit
// that is not bgd's (its environment lacks marker) is never stopped: the
// error matches ErrNotOurs.
func (s *Systemd) Stop(ctx context.Context, unit string, marker []string) error {
	if err := s.Ready(); err != nil {
		return err
	}
	loaded, err := s.owned(ctx, unit, marker)
	if err != nil || !loaded {
		return err
	}
	if _, err := s.ctl(ctx, "stop", "--", unit); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	s.ctl(ctx, "reset-failed", "--", unit) // gone already with --collect; not an error
	return nil
}

// JournalTail is the last n lines the unit logged (journalctl -u).
func (s *Systemd) JournalTail(unit string, n int) (string, error) {
	out, err := run(context.Background(), s.prog(s.Journal, "journalctl"), "-u", unit, "-n", strconv.Itoa(n), "--no-pager", "-o", "short-iso")
	return strings.TrimRight(out, "\n"), err
}
