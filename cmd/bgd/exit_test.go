package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
	"github.com/urfave/cli/v2"
)

// TestExitCodes is the mapping of errors to exit codes, made once at the
// top of run (asExit): the code of a run that reached a command, and of
// one that did not (every error then is a usage error).
func TestExitCodes(t *testing.T) {
	unhealthy := fmt.Errorf("%w: blue is unhealthy", orchestrator.ErrNotHealthy)
	for _, tc := range []struct {
		name   string
		err    error
		ran    int // the code when a command ran
		before int // when none did (flag parsing, unknown command)
	}{
		{"plain", errors.New("boom"), exitFailed, exitUsage},
		{"failed", fmt.Errorf("deploy: %w", orchestrator.ErrFailed), exitFailed, exitUsage},
		{"not healthy", unhealthy, exitFailed, exitUsage},
		{"locked", fmt.Errorf("x: %w", state.ErrLocked), exitLocked, exitUsage},
		{"locked, with its holder", &state.LockedError{Path: "s.json", PID: 7, Command: "deploy"}, exitLocked, exitUsage},
		{"invalid config", fmt.Errorf("x: %w", config.ErrInvalid), exitUsage, exitUsage},
		{"orchestrator usage", fmt.Errorf("x: %w", orchestrator.ErrUsage), exitUsage, exitUsage},
		{"unusable state path", fmt.Errorf("state: %w", state.ErrUnusable), exitUsage, exitUsage},
		{"route the driver cannot apply", fmt.Errorf("switch: %w", &lb.UnsupportedError{Driver: "builtin", Feature: lb.FeatureWeights}), exitUsage, exitUsage},
		{"invalid route", fmt.Errorf("switch: %w", lb.ErrInvalidRoute), exitUsage, exitUsage},
		{"cli usage", usagef("bad %s", "flag"), exitUsage, exitUsage},
		{"cli usage, wrapped", fmt.Errorf("x: %w", usagef("bad")), exitUsage, exitUsage},
		{"urfave's own", cli.Exit("flag provided but not defined", 9), exitUsage, exitUsage},
		{"urfave's, matching a sentinel", fmt.Errorf("%w (%w)", cli.Exit("x", 1), state.ErrLocked), exitLocked, exitUsage},
		// Several services' sweeps: the first sentinel in precedence wins.
		{"joined: unhealthy and locked", errors.Join(unhealthy, state.ErrLocked), exitLocked, exitUsage},
		{"joined: unhealthy and unusable", errors.Join(unhealthy, state.ErrUnusable), exitUsage, exitUsage},
		{"joined: invalid and locked", errors.Join(config.ErrInvalid, state.ErrLocked), exitLocked, exitUsage},
		{"joined: unhealthy twice", errors.Join(unhealthy, unhealthy), exitFailed, exitUsage},
	} {
		for ran, want := range map[bool]int{true: tc.ran, false: tc.before} {
			xe := asExit(tc.err, ran)
			if xe.code != want || exitCode(xe) != want {
				t.Errorf("%s (command ran: %v): code %d, exitCode %d, want %d", tc.name, ran, xe.code, exitCode(xe), want)
			}
			if xe.Error() != tc.err.Error() || !errors.Is(xe, tc.err) {
				t.Errorf("%s: asExit changed the error: %q", tc.name, xe)
			}
		}
	}
	// exitCode alone (as health-check's JSON uses it) does not know
	// urfave's errors; asExit does.
	if got := exitCode(cli.Exit("x", 9)); got != exitFailed {
		t.Errorf("exitCode(cli.Exit) = %d, want %d", got, exitFailed)
	}
	if exitCode(nil) != exitOK {
		t.Errorf("exitCode(nil) = %d", exitCode(nil))
	}
	// errUsage is the CLI's own usage errors, not every error of exit 2.
	if !errors.Is(usagef("x"), errUsage) || errors.Is(fmt.Errorf("%w", config.ErrInvalid), errUsage) {
		t.Error("errUsage matches the wrong errors")
	}
}
