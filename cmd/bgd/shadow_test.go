package main

import (
	"strings"
	"testing"
)

// TestShadowArgs: `bgd shadow` takes exactly on or off; anything else is a
// usage error (exit 2) before any config is read or anything runs.
func TestShadowArgs(t *testing.T) {
	for _, args := range [][]string{{"shadow"}, {"shadow", "maybe"}, {"shadow", "on", "off"}, {"shadow", "ON"}} {
		code, _, stderr := runCLI(t, append([]string{"--config", "/nonexistent/bluegreen.yml"}, args...)...)
		if code != exitUsage || !strings.Contains(stderr, "shadow needs one argument: on or off") {
			t.Errorf("bgd %v: exit %d, stderr %q; want exit 2 asking for on or off", args, code, stderr)
		}
	}
	code, stdout, _ := runCLI(t, "help", "shadow")
	if code != exitOK || !strings.Contains(stdout, "bgd shadow on") || !strings.Contains(stdout, "HAProxy cannot copy requests") {
		t.Errorf("bgd help shadow: exit %d\n%s", code, stdout)
	}
}
