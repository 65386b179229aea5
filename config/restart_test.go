package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLoadRestartsAndRunner: health.max_restarts (default 3, 0 allowed),
// health.restart_window (default 10m, at least 1ms) and the runner (per
// service, else the top-level one, else process).
func TestLoadRestartsAndRunner(t *testing.T) {
	svc := func(name, extra string, port int) string {
		return "  " + name + ":\n    command: [\"true\"]\n    blue: {port: " + itoa(port) + "}\n    green: {port: " + itoa(port+1) + "}\n" + extra
	}
	cases := []struct {
		name        string
		yaml        string
		wantMax     map[string]int
		wantWindow  map[string]time.Duration
		wantRunner  map[string]string
		wantProblem []string
	}{
		{name: "defaults", yaml: "services:\n" + svc("app", "", 7101),
			wantMax: map[string]int{"app": 3}, wantWindow: map[string]time.Duration{"app": 10 * time.Minute},
			wantRunner: map[string]string{"app": "process"}},
		{name: "set, 0 restarts kept",
			yaml:    "runner: systemd\nservices:\n" + svc("app", "    health: {max_restarts: 0, restart_window: 90s}\n", 7101) + svc("web", "    runner: process\n    health: {max_restarts: 7}\n    lb: {builtin: {listen: \"127.0.0.1:7300\"}}\n", 7201),
			wantMax: map[string]int{"app": 0, "web": 7}, wantWindow: map[string]time.Duration{"app": 90 * time.Second, "web": 10 * time.Minute},
			wantRunner: map[string]string{"app": "systemd", "web": "process"}},
		{name: "bad values",
			yaml:        "services:\n" + svc("app", "    runner: docker\n    health: {max_restarts: -1, restart_window: 0s}\n", 7101),
			wantProblem: []string{`runner "docker" is unknown (use process or systemd)`, "health.max_restarts -1 is negative", "health.restart_window is 0s (line 7)"}},
		{name: "bad top-level runner",
			yaml:        "runner: init\nservices:\n" + svc("app", "", 7101),
			wantProblem: []string{`service "app": runner "init" is unknown`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(Source{Path: writeConfig(t, c.yaml), Getenv: envOf(nil)})
			if c.wantProblem != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Load = %v, want ErrInvalid", err)
				}
				for _, w := range c.wantProblem {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range c.wantMax {
				s := cfg.Services[name]
				if s.Health.MaxRestarts != want || s.Health.RestartWindow.D() != c.wantWindow[name] || s.Runner != c.wantRunner[name] {
					t.Errorf("%s: max_restarts %d restart_window %s runner %q, want %d %s %q", name,
						s.Health.MaxRestarts, s.Health.RestartWindow, s.Runner, want, c.wantWindow[name], c.wantRunner[name])
				}
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestLoadFailoverAfter: failover_after defaults to 3 (with failover on or
// off), may be set to 1 or more (with failover off too: the reference
// config lists both keys); 0 and a negative count are refused, naming the
// key.
func TestLoadFailoverAfter(t *testing.T) {
	svc := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n"
	for _, c := range []struct {
		name, extra string
		want        int
		problem     string
	}{
		{"default without failover", "", 3, ""},
		{"default with failover", "    failover: true\n", 3, ""},
		{"one", "    failover: true\n    failover_after: 1\n", 1, ""},
		{"five", "    failover: true\n    failover_after: 5\n", 5, ""},
		{"zero", "    failover: true\n    failover_after: 0\n", 0, `service "app": failover_after 0 must be at least 1`},
		{"negative", "    failover: true\n    failover_after: -2\n", 0, "failover_after -2 must be at least 1"},
		{"without failover", "    failover: false\n    failover_after: 2\n", 2, ""},
		{"not a number", "    failover: true\n    failover_after: thrice\n", 0, "line 7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(Source{Path: writeConfig(t, svc+c.extra), Getenv: envOf(nil)})
			if c.problem != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.problem) {
					t.Fatalf("Load = %v, want ErrInvalid with %q", err, c.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Services["app"].FailoverAfter; got != c.want {
				t.Errorf("failover_after = %d, want %d", got, c.want)
			}
		})
	}
}
