package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/slots"
)

// twoServices writes and loads a config of the services web and api.
func twoServices(t *testing.T, stateDir string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %s\nservices:\n", stateDir)
	for _, name := range []string{"web", "api"} {
		fmt.Fprintf(&b, "  %s:\n    command: [\"true\"]\n    blue: {port: %s}\n    green: {port: %s}\n    lb: {builtin: {listen: \"127.0.0.1:%s\"}}\n",
			name, pickPort(t), pickPort(t), pickPort(t))
	}
	path := filepath.Join(dir, "bluegreen.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Source{Path: path, Getenv: func(string) string { return "" }, Self: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestProxySpec: how bgd starts a detached proxy, for one service (the
// state file is passed) and for one of several (the config is).
func TestProxySpec(t *testing.T) {
	one := newRig(t, nil).o.cfg // the embedded default: no config file
	spec, err := proxySpec(one, "", "/usr/bin/bgd")
	if err != nil {
		t.Fatal(err)
	}
	state, _ := filepath.Abs(one.StatePath("app"))
	if want := []string{"/usr/bin/bgd", "--service", "app", "--state-file", state, "proxy"}; !slices.Equal(spec.Argv, want) {
		t.Errorf("argv = %q, want %q", spec.Argv, want)
	}
	if want := filepath.Join(filepath.Dir(state), "logs", "app-proxy.log"); spec.LogPath != want {
		t.Errorf("log = %s, want %s", spec.LogPath, want)
	}
	if !slices.Equal(spec.Marker, slots.ProxyMarker(state, "app")) {
		t.Errorf("marker = %q", spec.Marker)
	}

	two := twoServices(t, t.TempDir())
	spec, err = proxySpec(two, "api", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bgd", "--config", two.Path, "--service", "api", "proxy"}; !slices.Equal(spec.Argv, want) {
		t.Errorf("argv = %q, want %q", spec.Argv, want)
	}
	if _, err := proxySpec(two, "", "bgd"); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("no service chosen of two: %v", err)
	}
	if _, err := SpawnProxy(two, "nope", "bgd"); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("SpawnProxy of an unknown service: %v", err)
	}
}

// TestSpawnProxy starts a real process as the proxy: a script that writes
// its arguments and the marker it was given.
func TestSpawnProxy(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	self := filepath.Join(dir, "bgd")
	script := "#!/bin/sh\necho \"$@\" \"$BGD_PROXY\" > " + out + ".tmp && mv " + out + ".tmp " + out + "\n"
	if err := os.WriteFile(self, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	two := twoServices(t, filepath.Join(dir, "state"))
	pid, err := SpawnProxy(two, "web", self)
	if err != nil || pid <= 0 {
		t.Fatalf("SpawnProxy = %d, %v", pid, err)
	}
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = os.ReadFile(out); err == nil {
			break
		}
	}
	if want := "--config " + two.Path + " --service web proxy web\n"; string(got) != want {
		t.Errorf("the proxy ran with %q, want %q", got, want)
	}
	logData, _ := os.ReadFile(filepath.Join(dir, "state", "logs", "web-proxy.log"))
	if !strings.Contains(string(logData), "--- bgd: starting") {
		t.Errorf("proxy log: %q", logData)
	}
	if _, err := SpawnProxy(two, "web", ""); err == nil {
		t.Error("SpawnProxy with no command: no error")
	}
}

// TestSlotLog: the end of a slot's log, or why there is none.
func TestSlotLog(t *testing.T) {
	cfg := twoServices(t, t.TempDir())
	if _, _, err := SlotLog(cfg, "web", "blue", 5); !errors.Is(err, fs.ErrNotExist) ||
		!strings.Contains(err.Error(), "no log for blue") || !strings.Contains(err.Error(), "has it ever been started?") {
		t.Errorf("no log yet: %v", err)
	}
	logPath := cfg.LogPath("web", "blue")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, []byte("one\ntwo\nthree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path, tail, err := SlotLog(cfg, "web", "blue", 2)
	if err != nil || path != logPath || tail != "two\nthree" {
		t.Errorf("SlotLog = %q, %q, %v; want %s and the last two lines", path, tail, err, logPath)
	}
	if _, _, err := SlotLog(cfg, "", "blue", 2); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("no service chosen of two: %v", err)
	}
}

// TestRunProxy runs the builtin proxy until its context ends, and refuses
// a state directory it cannot make.
func TestRunProxy(t *testing.T) {
	dir := t.TempDir()
	cfg := twoServices(t, filepath.Join(dir, "state"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunProxy(ctx, cfg, "api", nil) }()
	listen := cfg.Services["api"].LB.Builtin.Listen
	up := false
	for deadline := time.Now().Add(5 * time.Second); !up && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			up = true
		}
	}
	cancel()
	if err := <-done; !up || err != nil {
		t.Errorf("proxy listening: %v; Run returned %v", up, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "state")); err != nil || !fi.IsDir() {
		t.Errorf("state directory not made: %v", err)
	}

	if err := RunProxy(context.Background(), cfg, "nope", nil); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("unknown service: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	blocked := twoServices(t, filepath.Join(file, "state"))
	if err := RunProxy(context.Background(), blocked, "web", nil); err == nil || !strings.Contains(err.Error(), "proxy: state directory") {
		t.Errorf("state directory under a file: %v", err)
	}
}
