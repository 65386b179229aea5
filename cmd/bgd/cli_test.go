package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitFailed},
		{fmt.Errorf("state: %w", state.ErrUnusable), exitUsage},
		{fmt.Errorf("x: %w", config.ErrInvalid), exitUsage},
		{fmt.Errorf("x: %w", orchestrator.ErrUsage), exitUsage},
		{usagef("bad"), exitUsage},
		{fmt.Errorf("x: %w", state.ErrLocked), exitLocked},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
