package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
	"github.com/urfave/cli/v2"
)

// runCLI runs bgd in this process with a clean environment and returns its
// exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	for _, k := range []string{"BG_CONFIG", "BG_STATE_FILE", "BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT"} {
		t.Setenv(k, "")
	}
	t.Setenv("NO_COLOR", "1")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"bgd"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestFlagsFirst(t *testing.T) {
	app := &cli.App{Flags: (&options{}).flags(), Commands: commands(&env{})}
	for _, tc := range []struct{ in, want string }{
		{"status", "status"},
		{"--json status", "--json status"},
		{"status --json", "--json status"},
		{"status --config f.yml", "--config f.yml status"},
		{"status --config=f.yml", "--config=f.yml status"},
		{"status -c f.yml -v", "-c f.yml -v status"},
		{"health-check -s app --json", "-s app --json health-check"},
		{"health-check --service=app --watch", "--service=app health-check --watch"},
		{"deploy --release v2 --json", "--json deploy --release v2"},
		{"deploy -r v2 --force -s web", "-s web deploy -r v2 --force"},
		{"switch green --force", "switch --force green"},
		{"switch green --force --json", "--json switch --force green"},
		{"-s web switch green --lock-timeout 5s", "-s web --lock-timeout 5s switch green"},
		{"logs -n -1 blue", "logs -n -1 blue"},
		{"logs blue -n 5 --json", "--json logs -n 5 blue"},
		{"stop blue --force=true", "stop --force=true blue"},
		// A value that looks like a command or a flag stays a value.
		{"--config status status", "--config status status"},
		{"status -s --json", "-s --json status"},
		// "--" ends the reordering.
		{"logs -- --json", "logs -- --json"},
		{"logs green -- -n 3", "logs green -- -n 3"},
		{"-- status --json", "-- status --json"},
		// Unknown flags and unknown commands are left to urfave to report.
		{"deploy --bogus", "deploy --bogus"},
		{"frobnicate --json", "frobnicate --json"},
		{"status --help", "status --help"},
	} {
		got, err := flagsFirst(append([]string{"bgd"}, strings.Fields(tc.in)...), app)
		if err != nil {
			t.Errorf("flagsFirst(%q): %v", tc.in, err)
			continue
		}
		if want := append([]string{"bgd"}, strings.Fields(tc.want)...); !slices.Equal(got, want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got[1:], want[1:])
		}
	}
	for _, in := range []string{"status --config", "health-check -s"} {
		if _, err := flagsFirst(append([]string{"bgd"}, strings.Fields(in)...), app); !errors.Is(err, errUsage) {
			t.Errorf("flagsFirst(%q): err = %v, want a usage error", in, err)
		}
	}
}

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

// TestNoArgs: every command without positional arguments (no ArgsUsage),
// hidden ones too, refuses one before it loads any config.
func TestNoArgs(t *testing.T) {
	for _, cmd := range commands(&env{}) {
		if cmd.ArgsUsage != "" {
			continue
		}
		code, stdout, stderr := runCLI(t, "--config", "missing.yml", cmd.Name, "extra")
		want := "bgd: " + cmd.Name + ` takes no arguments (got "extra")`
		if code != exitUsage || !strings.HasPrefix(stderr, want) || stdout != "" {
			t.Errorf("bgd %s extra: exit %d, stdout %q, stderr %q; want exit 2 and %q", cmd.Name, code, stdout, stderr, want)
		}
	}
}

// TestReleaseChecked: a bad release exits 2 before the config is read.
func TestReleaseChecked(t *testing.T) {
	for _, rel := range []string{"../../x", "v1\nv2", "v1\x1b[2J", strings.Repeat("a", 200), ".."} {
		for _, args := range [][]string{{"deploy", "--release", rel}, {"start", "blue", "--release", rel}, {"start", "-r", rel, "green"}} {
			code, _, stderr := runCLI(t, append([]string{"--config", "missing.yml"}, args...)...)
			if code != exitUsage || !strings.Contains(stderr, "release name") || strings.Contains(stderr, "missing.yml") {
				t.Errorf("bgd %q: exit %d, stderr %q; want exit 2 about the release name", args, code, stderr)
			}
		}
	}
}

// TestHelp: the app's help and every command's show an example, the exit
// codes and the environment variables, and exit 0.
func TestHelp(t *testing.T) {
	var cmds []string
	for _, c := range commands(&env{}) {
		if !c.Hidden {
			cmds = append(cmds, c.Name)
		}
	}
	runs := [][]string{{"--help"}, {"help"}}
	for _, c := range cmds {
		runs = append(runs, []string{c, "--help"}, []string{"help", c})
	}
	for _, args := range runs {
		code, stdout, stderr := runCLI(t, args...)
		if code != exitOK || stderr != "" {
			t.Errorf("bgd %q: exit %d, stderr %q", args, code, stderr)
		}
		for _, want := range []string{"Example", "EXIT CODES:", "   3  another bgd operation holds the lock",
			"BG_CONFIG", "BG_STATE_FILE", "BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT", "NO_COLOR"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("bgd %q: help lacks %q:\n%s", args, want, stdout)
			}
		}
		if n := strings.Count(stdout, "EXIT CODES:"); n != 1 {
			t.Errorf("bgd %q: %d exit code sections", args, n)
		}
	}
}

// TestHealthCheckJSONShape: health-check --json writes the same shape for
// one service and for several: {"ok", "services": [...]}. The services use
// the HAProxy driver, whose sweep probes only the slots (a builtin proxy
// that is not running would fail the sweep).
func TestHealthCheckJSONShape(t *testing.T) {
	dir := t.TempDir()
	service := func(name string) string {
		blue, green, listen := healthyPort(t), freePort(t), freePort(t)
		return fmt.Sprintf("  %s:\n    command: [\"true\"]\n    blue: {port: %d}\n    green: {port: %d}\n    lb: {driver: haproxy, haproxy: {listen: \"%d\"}}\n",
			name, blue, green, listen)
	}
	write := func(file string, services ...string) string {
		path := filepath.Join(dir, file)
		text := "state_dir: " + filepath.Join(dir, file+".state") + "\nservices:\n" + strings.Join(services, "")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	one := write("one.yml", service("web"))
	two := write("two.yml", service("web"), service("api"))

	decode := func(args ...string) map[string]any {
		t.Helper()
		code, stdout, stderr := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("bgd %q: exit %d, stderr %q", args, code, stderr)
		}
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(stdout))
		if err := dec.Decode(&v); err != nil || dec.More() {
			t.Fatalf("bgd %q: stdout is not one JSON object (%v): %s", args, err, stdout)
		}
		return v
	}
	shape := func(v map[string]any) (top, entry []string) {
		for k := range v {
			top = append(top, k)
		}
		sort.Strings(top)
		list, _ := v["services"].([]any)
		for _, s := range list {
			var keys []string
			for k := range s.(map[string]any) {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if entry != nil && !slices.Equal(keys, entry) {
				t.Errorf("services differ in shape: %q and %q", entry, keys)
			}
			entry = keys
		}
		return top, entry
	}
	runs := map[string]map[string]any{
		"one service":                decode("--config", one, "--json", "health-check"),
		"one of two, with --service": decode("--config", two, "health-check", "-s", "api", "--json"),
		"two services":               decode("--config", two, "--json", "health-check"),
	}
	var wantTop, wantEntry []string
	for name, v := range runs {
		if v["ok"] != true {
			t.Errorf("%s: ok = %v", name, v["ok"])
		}
		list, isList := v["services"].([]any)
		if !isList {
			t.Fatalf("%s: services = %v, want a list", name, v["services"])
		}
		if n := map[bool]int{true: 2, false: 1}[name == "two services"]; len(list) != n {
			t.Errorf("%s: %d services, want %d", name, len(list), n)
		}
		top, entry := shape(v)
		if wantTop == nil {
			wantTop, wantEntry = top, entry
		}
		if !slices.Equal(top, wantTop) || !slices.Equal(entry, wantEntry) {
			t.Errorf("%s: shape %q / %q, want %q / %q", name, top, entry, wantTop, wantEntry)
		}
	}
	if !reflect.DeepEqual(wantTop, []string{"ok", "services"}) {
		t.Errorf("health-check --json keys = %q, want ok and services", wantTop)
	}
}

// healthyPort serves 200 on /health on a free port until the test ends.
func healthyPort(t *testing.T) int {
	port := freePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return port
}

// TestJSONErrorOnce: a failed health-check writes one JSON object, the
// sweep with ok false and the error, not the sweep and an error object.
func TestJSONErrorOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "one.yml")
	text := fmt.Sprintf("state_dir: %s\nservices:\n  web:\n    command: [\"true\"]\n    blue: {port: %d}\n    green: {port: %d}\n    lb: {builtin: {listen: \"127.0.0.1:%d\"}}\n",
		filepath.Join(dir, "state"), freePort(t), freePort(t), freePort(t))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "--config", path, "health-check", "--json")
	if code != exitFailed {
		t.Fatalf("exit %d, want 1 (blue is not running): %s", code, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var v struct {
		OK       *bool  `json:"ok"`
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
		Services []any  `json:"services"`
	}
	if err := dec.Decode(&v); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON object (%v): %s", err, stdout)
	}
	if v.OK == nil || *v.OK || v.ExitCode != exitFailed || !strings.Contains(v.Error, "unhealthy") || len(v.Services) != 1 {
		t.Errorf("got %s", stdout)
	}
	if n := strings.Count(stderr, "unhealthy"); n != 1 {
		t.Errorf("stderr says it %d times: %q", n, stderr)
	}
}
