package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

// haFastCheck makes HAProxy's own checks quick enough for tests.
const haFastCheck = "inter 100ms fastinter 50ms downinter 100ms rise 1 fall 2"

// testHAProxy is a real HAProxy in master-worker mode (see
// testsupport.HAProxy), on loopback high ports: the base plus the snippet
// bgd renders for service "app"; socket, master socket, pid file, map file
// and log live under one temp dir.
type testHAProxy struct {
	*testsupport.HAProxy
	dir       string
	snippet   string // snippet.cfg, from Balancer.Render
	sock      string // the admin (stats) socket
	master    string // the master CLI socket
	mapFile   string
	port      int // the frontend
	bluePort  int
	greenPort int
	hcfg      config.HAProxy // what a driver of this HAProxy is configured with
}

// haSetup says how to build the test HAProxy.
type haSetup struct {
	// mapInit is the map file's first content. Default "app app_blue\n".
	mapInit *string
	// frontendExtra is appended to the rendered snippet's frontend section
	// (the snippet ends with the backends, so it goes in before them);
	// "{{map}}" in it stands for the map file's path.
	frontendExtra string
	// sticky renders the split backend with the canary's cookie
	// (canary.sticky: true).
	sticky bool
	// maintenancePage is the service's maintenance_page, which the
	// snippet's maintenance rule answers.
	maintenancePage string
	// edit, when set, changes the rendered snippet last, before HAProxy
	// loads it.
	edit func(t *testing.T, snippet []byte) []byte
}

// newHAProxy renders the snippet for service "app" with slots on bluePort
// and greenPort and starts HAProxy until the test ends.
func newHAProxy(t *testing.T, bluePort, greenPort int, s haSetup) *testHAProxy {
	t.Helper()
	bin := requireBinary(t, "haproxy")
	// Unix socket paths must fit in 108 bytes: t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "bgd-ha-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &testHAProxy{dir: dir, snippet: filepath.Join(dir, "snippet.cfg"),
		sock: filepath.Join(dir, "admin.sock"), master: filepath.Join(dir, "master.sock"),
		mapFile: filepath.Join(dir, "bgd.map"),
		port:    freePort(t), bluePort: bluePort, greenPort: greenPort,
	}
	h.hcfg = config.HAProxy{Socket: h.sock, MapFile: h.mapFile,
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}
	mapInit := "app app_blue\n"
	if s.mapInit != nil {
		mapInit = *s.mapInit
	}
	if err := os.WriteFile(h.mapFile, []byte(mapInit), 0o644); err != nil {
		t.Fatal(err)
	}
	renderer, err := haproxy.New("app", h.hcfg, haproxy.Options{Bind: fmt.Sprintf("127.0.0.1:%d", h.port), Check: haFastCheck, Sticky: s.sticky,
		MaintenancePage: s.maintenancePage})
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := renderer.Render(haRoute("blue", bluePort, greenPort))
	if err != nil {
		t.Fatal(err)
	}
	if s.frontendExtra != "" {
		extra := strings.ReplaceAll(s.frontendExtra, "{{map}}", h.mapFile)
		snippet = bytes.Replace(snippet, []byte("\n# blue"), []byte("    "+extra+"\n\n# blue"), 1)
	}
	if s.edit != nil {
		snippet = s.edit(t, snippet)
	}
	if err := os.WriteFile(h.snippet, snippet, 0o644); err != nil {
		t.Fatal(err)
	}
	h.HAProxy, err = testsupport.StartHAProxy(bin, dir, testsupport.HAProxyOptions{
		Files: []string{h.snippet}, Sockets: []string{h.sock}, MasterWorker: true})
	if err != nil {
		t.Fatalf("%v\n%s", err, snippet)
	}
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", h.Output())
		}
	})
	return h
}

// restart stops HAProxy completely and starts it again from its files.
func (h *testHAProxy) restart(t *testing.T) {
	t.Helper()
	if err := h.Restart(); err != nil {
		t.Fatal(err)
	}
}

// reload sends SIGUSR2 to the master and waits until a new worker serves
// the admin socket.
func (h *testHAProxy) reload(t *testing.T) {
	t.Helper()
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
}

// balancer is a driver of this HAProxy with fast polling.
func (h *testHAProxy) balancer(t *testing.T, upTimeout time.Duration) *haproxy.Balancer {
	t.Helper()
	b, err := haproxy.New("app", h.hcfg, haproxy.Options{UpTimeout: upTimeout, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitUp waits until HAProxy's checks see the colour's server UP.
func (h *testHAProxy) waitUp(t *testing.T, colors ...config.Color) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range colors {
		for {
			rows, err := admin.New(h.sock).ShowStat(context.Background(), h.hcfg.Backends[c])
			if err == nil && len(rows) == 1 && rows[0].Up() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("HAProxy never saw %s UP: %+v %v", c, rows, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitDown waits until HAProxy's checks see the colour's server DOWN.
func (h *testHAProxy) waitDown(t *testing.T, color config.Color) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rows, err := admin.New(h.sock).ShowStat(context.Background(), h.hcfg.Backends[color])
		if err == nil && len(rows) == 1 && strings.HasPrefix(rows[0].Status, "DOWN") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy never saw %s DOWN: %+v %v", color, rows, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mapValue is the runtime map entry of "app" ("" when absent).
func (h *testHAProxy) mapValue(t *testing.T) string {
	t.Helper()
	m, err := admin.New(h.sock).GetMap(context.Background(), h.mapFile, "app")
	if err != nil {
		t.Fatal(err)
	}
	return m.Value
}

func (h *testHAProxy) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", h.port) }

// slot asks HAProxy's frontend on a new connection which colour answers
// ("" and the status for a non-200 answer).
func (h *testHAProxy) slot(t *testing.T) (string, int) {
	t.Helper()
	a, err := testsupport.Get(h.url())
	if err != nil {
		t.Fatalf("GET through HAProxy: %v", err)
	}
	if a.Status != 200 {
		return "", a.Status
	}
	return a.Slot, 200
}

// assertRoutesTo checks several new requests all reach the colour.
func (h *testHAProxy) assertRoutesTo(t *testing.T, color string) {
	t.Helper()
	for range 5 {
		if got, code := h.slot(t); got != color {
			t.Fatalf("HAProxy routed to %q (status %d), want %s", got, code, color)
		}
	}
}

func haRoute(active string, bluePort, greenPort int) lb.Route {
	ports := map[string]int{"blue": bluePort, "green": greenPort}
	other := config.Color(active).Other().String()
	return lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: config.Color(active), Host: "127.0.0.1", Port: ports[active]},
		Standby:    lb.Upstream{Color: config.Color(other), Host: "127.0.0.1", Port: ports[other]},
		HealthPath: "/health",
	}
}

// haLoad is POST requests through HAProxy from n clients of one kind
// (testsupport.Load) until stopped; its counts are in c after stop.
type haLoad struct {
	name string
	l    *testsupport.Load
	c    testsupport.LoadCount
}

func startHALoad(url, name string, keepAlive bool, n int) *haLoad {
	return &haLoad{name: name, l: testsupport.StartLoad(url, testsupport.LoadOptions{Clients: n, KeepAlive: keepAlive, Post: true})}
}

func (l *haLoad) stop() { l.c = l.l.Stop() }

func (l *haLoad) String() string { return l.name + ": " + l.c.String() }

// The permission-denied fault needs a process that is not root (root
// ignores file modes). When BGD_HA_FLIP_AS is set, this test binary is such
// a child: it flips through the driver and prints the outcome, before
// TestMain builds anything.
func init() {
	spec := os.Getenv("BGD_HA_FLIP_AS")
	if spec == "" {
		return
	}
	sock, mapFile, _ := strings.Cut(spec, "|")
	b, err := haproxy.New("app", config.HAProxy{Socket: sock, MapFile: mapFile,
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}, haproxy.Options{UpTimeout: time.Second})
	if err == nil {
		err = b.Flip(context.Background(), haRoute("green", 1, 2))
	}
	fmt.Printf("uid=%d unreachable=%v permission=%v\nerror: %v\n", os.Geteuid(),
		errors.Is(err, lb.ErrUnreachable), errors.Is(err, fs.ErrPermission), err)
	os.Exit(0)
}

// flipAsNobody runs a Flip from a copy of this test binary as uid/gid 65534.
func flipAsNobody(t *testing.T, sock, mapFile string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bgd-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "integration.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BGD_HA_FLIP_AS="+sock+"|"+mapFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flip as nobody: %v\n%s", err, out)
	}
	return string(out)
}
