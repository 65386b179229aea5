package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

// TestHAProxyFlip: flips through the driver against a real HAProxy running
// the rendered snippet, with real demo-app slots; each flip is seen by new
// requests at once, read back by Active, and written to the map file.
func TestHAProxyFlip(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newHAProxy(t, bluePort, greenPort, haSetup{})
	h.waitUp(t, "blue")
	h.assertRoutesTo(t, "blue")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	for _, color := range []string{"green", "blue", "green", "green"} {
		if err := b.Flip(ctx, haRoute(color, bluePort, greenPort)); err != nil {
			t.Fatalf("flip to %s: %v", color, err)
		}
		h.assertRoutesTo(t, color)
		if got, err := b.Active(ctx); err != nil || got != config.Color(color) {
			t.Fatalf("Active: %q, %v; want %s", got, err, color)
		}
		data, _ := os.ReadFile(h.mapFile)
		if string(data) != "app app_"+color+"\napp@preview app_"+config.Color(color).Other().String()+"\n" {
			t.Fatalf("map file %q after flip to %s", data, color)
		}
	}
}

// TestHAProxyFlipAddsAMissingEntry: with no entry for the service HAProxy
// answers 503; a flip adds the entry (`add map`) and the map file line.
func TestHAProxyFlipAddsAMissingEntry(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	comment := "# bgd routes\n"
	h := newHAProxy(t, bluePort, greenPort, haSetup{mapInit: &comment})
	h.waitUp(t, "blue")
	if _, code := h.slot(t); code != 503 {
		t.Fatalf("without an entry HAProxy answers %d, want 503", code)
	}
	b := h.balancer(t, 5*time.Second)
	if _, err := b.Active(context.Background()); !errors.Is(err, haproxy.ErrNoEntry) {
		t.Errorf("Active without an entry: %v, want ErrNoEntry", err)
	}
	if err := b.Flip(context.Background(), haRoute("blue", bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	h.assertRoutesTo(t, "blue")
	if data, _ := os.ReadFile(h.mapFile); string(data) != "# bgd routes\napp app_blue\napp@preview app_green\n" {
		t.Errorf("map file %q", data)
	}
}

// TestHAProxyFlipsUnderLoad: 50 flips while new-connection clients and
// keep-alive clients (POST, never retried by Go's transport) send requests
// through HAProxy: zero failed requests, both colours seen.
func TestHAProxyFlipsUnderLoad(t *testing.T) {
	const flips = 50
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newHAProxy(t, bluePort, greenPort, haSetup{})
	h.waitUp(t, "blue", "green")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()

	fresh := startHALoad(h.url(), "new-connection clients", false, 3)
	alive := startHALoad(h.url(), "keep-alive clients", true, 3)
	time.Sleep(100 * time.Millisecond)
	var lat []time.Duration
	color := "blue"
	for i := range flips {
		color = []string{"green", "blue"}[i%2]
		start := time.Now()
		if err := b.Flip(ctx, haRoute(color, bluePort, greenPort)); err != nil {
			fresh.stop()
			alive.stop()
			t.Fatalf("flip %d to %s: %v", i+1, color, err)
		}
		lat = append(lat, time.Since(start))
		// Once Flip returns, a new request goes to the new colour.
		if got, code := h.slot(t); got != color {
			t.Errorf("flip %d: first request after it went to %q (status %d), want %s", i+1, got, code, color)
		}
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	fresh.stop()
	alive.stop()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("%d flips through HAProxy's runtime API: median %s, p90 %s, max %s",
		flips, lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1])
	for _, l := range []*haLoad{fresh, alive} {
		t.Logf("%s", l)
		if l.c.Failures != 0 {
			t.Errorf("%s: %d failed requests", l.name, l.c.Failures)
		}
		if l.c.Slots["blue"] == 0 || l.c.Slots["green"] == 0 {
			t.Errorf("%s: did not see both colours", l.name)
		}
		if l.c.Requests < 100 {
			t.Errorf("%s: only %d requests: the load was too light to mean anything", l.name, l.c.Requests)
		}
	}
	if alive.c.Reused < alive.c.Requests/2 {
		t.Errorf("keep-alive clients reused a connection for only %d of %d requests", alive.c.Reused, alive.c.Requests)
	}
	if fresh.c.Reused != 0 {
		t.Errorf("new-connection clients reused %d connections", fresh.c.Reused)
	}
}

// TestHAProxyReloadAndRestartKeepTheColour: after a flip, a reload (SIGUSR2
// to the master) and a full restart both route to the flipped colour,
// because the driver rewrote the map file. The same runtime change made
// without the rewrite is lost by the reload: the rewrite is what matters.
func TestHAProxyReloadAndRestartKeepTheColour(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newHAProxy(t, bluePort, greenPort, haSetup{})
	h.waitUp(t, "blue", "green")
	ctx := context.Background()

	// Control: a bare `set map` does not survive a reload.
	if err := admin.New(h.sock).SetMap(ctx, h.mapFile, "app", "app_green"); err != nil {
		t.Fatal(err)
	}
	h.assertRoutesTo(t, "green")
	h.reload(t)
	h.waitUp(t, "blue", "green")
	h.assertRoutesTo(t, "blue")

	b := h.balancer(t, 5*time.Second)
	if err := b.Flip(ctx, haRoute("green", bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	h.assertRoutesTo(t, "green")

	alive := startHALoad(h.url(), "keep-alive clients across the reload", true, 2)
	fresh := startHALoad(h.url(), "new-connection clients across the reload", false, 2)
	time.Sleep(100 * time.Millisecond)
	h.reload(t)
	time.Sleep(200 * time.Millisecond)
	alive.stop()
	fresh.stop()
	t.Logf("%s", fresh)
	t.Logf("%s", alive)
	if fresh.c.Failures != 0 {
		t.Errorf("%d new-connection requests failed across a reload", fresh.c.Failures)
	}
	if fresh.c.Slots["blue"] != 0 || alive.c.Slots["blue"] != 0 {
		t.Errorf("blue answered during or after the reload: %d + %d requests", fresh.c.Slots["blue"], alive.c.Slots["blue"])
	}
	h.waitUp(t, "green")
	h.assertRoutesTo(t, "green")
	if got, err := b.Active(ctx); err != nil || got != "green" {
		t.Errorf("Active after reload: %q, %v", got, err)
	}

	h.restart(t)
	h.waitUp(t, "green")
	h.assertRoutesTo(t, "green")
	if got, err := b.Active(ctx); err != nil || got != "green" {
		t.Errorf("Active after restart: %q, %v", got, err)
	}
}

// TestHAProxyFlipWaitsForHAProxysChecks: a slot that becomes healthy late
// is flipped to only once HAProxy's own checks say UP; no request fails.
func TestHAProxyFlipWaitsForHAProxysChecks(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	h := newHAProxy(t, bluePort, greenPort, haSetup{})
	h.waitUp(t, "blue")
	startDemoApp(t, greenPort, "green", "v2", "--ready-after", "700ms")
	fresh := startHALoad(h.url(), "new-connection clients", false, 2)
	start := time.Now()
	err := h.balancer(t, 5*time.Second).Flip(context.Background(), haRoute("green", bluePort, greenPort))
	waited := time.Since(start)
	fresh.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flip waited %s for HAProxy's checks; %s", waited, fresh)
	if waited < 500*time.Millisecond {
		t.Errorf("flipped after %s, before the slot could be healthy", waited)
	}
	if fresh.c.Failures != 0 {
		t.Errorf("%d requests failed", fresh.c.Failures)
	}
	h.assertRoutesTo(t, "green")
}

// haFault checks a failed flip: the error is what the fault says, and
// HAProxy still routes as before, in memory and in the map file.
func haFault(t *testing.T, h *testHAProxy, err error, is error, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("the flip succeeded")
	}
	t.Logf("error: %v", err)
	if is != nil && !errors.Is(err, is) {
		t.Errorf("error is not %v", is)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q", s)
		}
	}
	if v := h.mapValue(t); v != "app_blue" {
		t.Errorf("HAProxy's entry is %q, want app_blue unchanged", v)
	}
	if data, _ := os.ReadFile(h.mapFile); string(data) != "app app_blue\n" {
		t.Errorf("map file changed: %q", data)
	}
	if got, code := h.slot(t); got != "blue" {
		t.Errorf("HAProxy routes to %q (status %d), want blue", got, code)
	}
}

// TestHAProxyFaults: each fault refuses the flip and leaves routing as it was.
func TestHAProxyFaults(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	// green is not started: HAProxy's checks see it DOWN.
	h := newHAProxy(t, bluePort, greenPort, haSetup{})
	h.waitUp(t, "blue")
	ctx := context.Background()
	green := haRoute("green", bluePort, greenPort)
	driver := func(t *testing.T, mutate func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string)) *haproxy.Balancer {
		t.Helper()
		cfg := h.hcfg
		opts := haproxy.Options{UpTimeout: 500 * time.Millisecond, PollInterval: 10 * time.Millisecond}
		if mutate != nil {
			sock, mapFile, backends := mutate(&opts, h)
			if sock != "" {
				cfg.Socket = sock
			}
			if mapFile != "" {
				cfg.MapFile = mapFile
			}
			if backends != nil {
				cfg.Backends = backends
			}
		}
		b, err := haproxy.New("app", cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("socket missing", func(t *testing.T) {
		missing := h.dir + "/gone.sock"
		err := driver(t, func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string) {
			return missing, "", nil
		}).Flip(ctx, green)
		haFault(t, h, err, lb.ErrUnreachable, missing, "no such file or directory")
	})
	t.Run("connection refused", func(t *testing.T) {
		// A TCP admin socket nobody listens on.
		addr := "tcp://127.0.0.1:" + strconv.Itoa(freePort(t))
		err := driver(t, func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string) { return addr, "", nil }).Flip(ctx, green)
		haFault(t, h, err, lb.ErrUnreachable, addr, "connection refused")
	})
	t.Run("permission denied", func(t *testing.T) {
		// HAProxy made its socket "mode 600" as root. Root itself ignores
		// file modes, so the flip runs in a child process as nobody, as a
		// non-root bgd would; the directory is opened up so that it is the
		// socket's own mode that refuses.
		if err := os.Chmod(h.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(h.sock); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket mode %v, %v; want 0600 from the rendered snippet", fi.Mode(), err)
		}
		if os.Geteuid() != 0 {
			// Not root: HAProxy's socket is ours, so take our own write
			// permission away; the kernel refuses the owner just the same.
			if err := os.Chmod(h.sock, 0); err != nil {
				t.Fatal(err)
			}
			err := driver(t, nil).Flip(ctx, green)
			os.Chmod(h.sock, 0o600)
			haFault(t, h, err, fs.ErrPermission, h.sock, "permission denied")
			if !errors.Is(err, lb.ErrUnreachable) {
				t.Errorf("error is not lb.ErrUnreachable")
			}
			return
		}
		out := flipAsNobody(t, h.sock, h.mapFile)
		t.Logf("child: %s", out)
		if !strings.Contains(out, "uid=65534 unreachable=true permission=true") || !strings.Contains(out, h.sock) ||
			!strings.Contains(out, "permission denied") {
			t.Errorf("want ErrUnreachable, fs.ErrPermission and the socket path")
		}
		haFault(t, h, errors.New(out), nil)
	})
	t.Run("backend missing", func(t *testing.T) {
		err := driver(t, func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string) {
			return "", "", map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green_v2"}
		}).Flip(ctx, green)
		haFault(t, h, err, haproxy.ErrNoBackend, `backend "app_green_v2"`, "app_blue, app_green")
	})
	t.Run("no server up", func(t *testing.T) {
		err := driver(t, nil).Flip(ctx, green)
		haFault(t, h, err, haproxy.ErrNoServerUp, `backend "app_green"`, "green DOWN", "Layer4 connection problem")
	})
	t.Run("map file not loaded", func(t *testing.T) {
		other := h.dir + "/other.map"
		os.WriteFile(other, []byte("app app_blue\n"), 0o644)
		err := driver(t, func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string) { return "", other, nil }).Flip(ctx, green)
		haFault(t, h, err, haproxy.ErrMapNotLoaded, other, "it has: "+h.mapFile)
		if data, _ := os.ReadFile(other); string(data) != "app app_blue\n" {
			t.Errorf("the unloaded map file was rewritten: %q", data)
		}
	})
	t.Run("error text from the master CLI", func(t *testing.T) {
		// lb.haproxy.socket naming the master socket: HAProxy answers
		// "Unknown command" to show backend.
		err := driver(t, func(*haproxy.Options, *testHAProxy) (string, string, map[config.Color]string) {
			return h.master, "", nil
		}).Flip(ctx, green)
		haFault(t, h, err, admin.ErrUnknownCommand, "Unknown command", "master CLI")
	})
}

// TestHAProxyErrorTextOnSet: HAProxy answers `add map` with an error text
// (the map also feeds an integer converter, so "app_green" does not parse);
// the flip fails carrying that text, and the service stays without entry.
func TestHAProxyErrorTextOnSet(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	empty := ""
	h := newHAProxy(t, bluePort, greenPort, haSetup{mapInit: &empty,
		frontendExtra: "http-request set-var(txn.weight) str(app),map_str_int({{map}})"})
	h.waitUp(t, "blue", "green")
	if _, code := h.slot(t); code != 503 {
		t.Fatalf("without an entry HAProxy answers %d, want 503", code)
	}
	err := h.balancer(t, 5*time.Second).Flip(context.Background(), haRoute("green", bluePort, greenPort))
	if err == nil {
		t.Fatal("the flip succeeded")
	}
	t.Logf("error: %v", err)
	var ce *admin.CommandError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "unable to parse 'app_green'") ||
		!strings.Contains(err.Error(), "add map "+h.mapFile+" app app_green") {
		t.Errorf("want HAProxy's text and the command")
	}
	if v := h.mapValue(t); v != "" {
		t.Errorf("HAProxy's entry is %q, want none", v)
	}
	if data, _ := os.ReadFile(h.mapFile); len(data) != 0 {
		t.Errorf("map file changed: %q", data)
	}
	if _, code := h.slot(t); code != 503 {
		t.Errorf("HAProxy answers %d, want 503 as before", code)
	}
}

// TestHAProxyCLI: the runbook through `bgd` with lb.driver haproxy, real
// demo-app slots and a real HAProxy; then faults and their exit codes.
func TestHAProxyCLI(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	h := newHAProxy(t, blue, green, haSetup{})
	dir := t.TempDir()
	list := func(argv []string) string { data, _ := json.Marshal(argv); return string(data) }
	writeYML := func(name, health, lbExtra string) {
		t.Helper()
		yml := fmt.Sprintf(`state_dir: %q
services:
  app:
    command: %s
    blue: {port: %d}
    green: {port: %d}
    health: {%s}
    stop_grace: 2s
    lb:
      driver: haproxy
      haproxy:
        socket: %q
        map_file: %q
%s`, filepath.Join(dir, "state"),
			list([]string{bgdBin, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"}),
			blue, green, health, h.sock, h.mapFile, lbExtra)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeYML("bluegreen.yml", "timeout: 10s", "")
	statePath := filepath.Join(dir, "state", "bg_state.json")
	stopAll(t, statePath)
	run := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		start := time.Now()
		out, errOut, code := bgd(t, dir, []string{"NO_COLOR=1"}, args...)
		t.Logf("bgd %s: exit %d in %s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
		if code != wantCode {
			t.Fatalf("bgd %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, out, errOut)
		}
		return out, errOut
	}
	expect := func(step, color, release string) {
		t.Helper()
		h.waitUp(t, config.Color(color))
		for range 3 {
			resp, err := http.Post(h.url(), "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatalf("after %s: %v", step, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Header.Get("X-Slot") != color || !strings.Contains(string(body), "release="+release) {
				t.Fatalf("after %s: HAProxy answered %d from %q: %q; want %s release %s",
					step, resp.StatusCode, resp.Header.Get("X-Slot"), body, color, release)
			}
		}
	}
	active := func() string {
		t.Helper()
		var st struct {
			Active string `json:"active_version"`
		}
		data, _ := os.ReadFile(statePath)
		json.Unmarshal(data, &st)
		return st.Active
	}

	run(0, "start", "blue")
	expect("start blue", "blue", "")
	run(0, "deploy", "--release", "v2")
	expect("deploy", "green", "v2")
	run(0, "switch", "blue")
	expect("switch blue", "blue", "")
	run(0, "rollback")
	expect("rollback", "green", "v2")
	if data, _ := os.ReadFile(h.mapFile); string(data) != "app app_green\napp@preview app_blue\n" {
		t.Errorf("map file %q after rollback", data)
	}
	rendered, _ := run(0, "render")
	if !strings.Contains(rendered, "use_backend %[str(app),map("+h.mapFile+")]") || !strings.Contains(rendered, "option idle-close-on-response") {
		t.Errorf("bgd render:\n%s", rendered)
	}
	if status, _ := run(0, "status"); !strings.Contains(status, "green") {
		t.Errorf("status does not name green:\n%s", status)
	}

	// The time of a whole `bgd switch` through HAProxy, confirmed by get map.
	var took []time.Duration
	for i := range 10 {
		col := []string{"blue", "green"}[i%2]
		start := time.Now()
		run(0, "switch", col)
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("bgd switch through HAProxy, whole process: median %s, max %s (10 runs)", took[5], took[9])
	expect("10 switches", "green", "v2")

	// Faults: exit 1 (2 for config), state and routing unchanged.
	fault := func(name string, code int, says string, args ...string) {
		t.Helper()
		_, errOut := run(code, args...)
		t.Logf("%s: %s", name, strings.TrimSpace(errOut))
		if !strings.Contains(errOut, says) {
			t.Errorf("%s: stderr does not say %q:\n%s", name, says, errOut)
		}
		if a := active(); a != "green" {
			t.Errorf("%s: active_version is %q, want green", name, a)
		}
		if v := h.mapValue(t); v != "app_green" {
			t.Errorf("%s: HAProxy's entry is %q", name, v)
		}
		expect(name, "green", "v2")
	}
	missing := filepath.Join(dir, "gone.sock")
	writeYML("missing-socket.yml", "timeout: 10s", "")
	os.WriteFile(filepath.Join(dir, "missing-socket.yml"), bytes.Replace(mustRead(t, filepath.Join(dir, "missing-socket.yml")), []byte(h.sock), []byte(missing), 1), 0o644)
	fault("socket missing", 1, missing, "-c", "missing-socket.yml", "switch", "blue")

	other := filepath.Join(dir, "other.map")
	os.WriteFile(other, []byte("app app_green\n"), 0o644)
	writeYML("unloaded-map.yml", "timeout: 10s", "")
	os.WriteFile(filepath.Join(dir, "unloaded-map.yml"), bytes.Replace(mustRead(t, filepath.Join(dir, "unloaded-map.yml")), []byte(h.mapFile), []byte(other), 1), 0o644)
	fault("map file not loaded", 1, "has not loaded "+other, "-c", "unloaded-map.yml", "switch", "blue")

	writeYML("missing-backend.yml", "timeout: 10s", "        backends: {blue: app_blue_v9, green: app_green}\n")
	fault("backend missing", 1, `backend "app_blue_v9"`, "-c", "missing-backend.yml", "switch", "blue")

	writeYML("bad-backend.yml", "timeout: 10s", "        backends: {blue: \"app blue\", green: app_green}\n")
	fault("backend name with a space", 2, "lb.haproxy.backends.blue", "-c", "bad-backend.yml", "switch", "blue")

	writeYML("relative-map.yml", "timeout: 10s", "")
	os.WriteFile(filepath.Join(dir, "relative-map.yml"), bytes.Replace(mustRead(t, filepath.Join(dir, "relative-map.yml")), []byte(h.mapFile), []byte("bgd.map"), 1), 0o644)
	fault("relative map file", 2, `lb.haproxy.map_file "bgd.map": give an absolute path`, "-c", "relative-map.yml", "switch", "blue")

	// No server UP: blue stops; a forced switch reaches the driver, which
	// waits health.timeout for HAProxy's checks and refuses.
	run(0, "stop", "blue")
	h.waitDown(t, "blue") // HAProxy's checks lag a stop too (fall × inter)
	writeYML("short-timeout.yml", "timeout: 1s", "")
	fault("no server up", 1, `no server of backend "app_blue" is UP`, "-c", "short-timeout.yml", "switch", "--force", "blue")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
