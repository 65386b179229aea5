package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// cleanEnv is the harness's environment without the variables that would
// override the bench configurations (a developer may have them set).
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains([]string{"BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT", "BG_STATE_FILE", "BG_CONFIG"}, k)
	})
}

// expect runs bgd with args in dir, as a user's shell would, and fails
// unless it exits code (a missing load-balancer binary or a broken config
// is an error of the run, never a skip); with code anyExit any exit will
// do. On ctx's end the process gets SIGTERM.
func (b *bench) expect(ctx context.Context, dir string, code int, args ...string) (*ts.Run, error) {
	r, err := ts.RunProcess(ctx, b.bgd, dir, b.env, args...)
	if err == nil && code != anyExit && r.Code != code {
		err = fmt.Errorf("bgd %s exited %d, want %d: %s", strings.Join(args, " "), r.Code, code, strings.TrimSpace(r.Stderr))
	}
	return r, err
}

const anyExit = -1

// jsonDuration reads duration_ns from a --json answer (the time bgd spent
// inside its workflow, without process start-up); 0 if absent.
func jsonDuration(stdout string) time.Duration {
	var v struct {
		D int64 `json:"duration_ns"`
	}
	if json.Unmarshal([]byte(stdout), &v) != nil {
		return 0
	}
	return time.Duration(v.D)
}

// writeConfig writes a bgd config. JSON is YAML, and the strict loader
// checks every key, so a typo here fails loudly.
func writeConfig(path, stateDir string, services map[string]any) error {
	data, err := json.MarshalIndent(map[string]any{"state_dir": stateDir, "services": services}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// serviceConfig is one service of a bench config.
func serviceConfig(command []string, blue, green int, lb map[string]any) map[string]any {
	return map[string]any{
		"command":    command,
		"blue":       map[string]any{"port": blue},
		"green":      map[string]any{"port": green},
		"health":     map[string]any{"path": "/health", "interval": "1s", "timeout": "20s", "request_timeout": "2s"},
		"stop_grace": "5s",
		"lb":         lb,
	}
}

// demoCommand is the demo app as a slot command; extra flags are appended.
func demoCommand(bgd string, extra ...string) []string {
	return append([]string{bgd, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"}, extra...)
}

// timed is what every figure keeps of a bgd process.
func timed(r *ts.Run) Timed {
	return Timed{WallMs: ms(r.Wall), InProcessMs: ms(jsonDuration(r.Stdout)), RSSKB: r.MaxRSSKB, CPUMs: ms(r.CPU)}
}
