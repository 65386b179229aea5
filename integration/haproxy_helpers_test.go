package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

// haFastCheck makes HAProxy's own checks quick enough for tests.
const haFastCheck = "inter 100ms fastinter 50ms downinter 100ms rise 1 fall 2"

// testHAProxy is a real HAProxy in master-worker mode (-W -S), in the
// foreground, on loopback high ports. Its configuration is a small base
// (global, defaults) plus the snippet bgd renders, loaded as a second -f;
// socket, master socket, pid file, map file and log live under one temp dir.
type testHAProxy struct {
	bin       string
	dir       string
	base      string // base.cfg
	snippet   string // snippet.cfg, from Balancer.Render
	sock      string // the admin (stats) socket
	master    string // the master CLI socket
	pidFile   string
	mapFile   string
	logPath   string
	port      int // the frontend
	bluePort  int
	greenPort int
	hcfg      config.HAProxy // what a driver of this HAProxy is configured with

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// haSetup says how to build the test HAProxy.
type haSetup struct {
	// mapInit is the map file's first content. Default "app app_blue\n".
	mapInit *string
	// frontendExtra is appended to the rendered snippet's frontend section
	// (the snippet ends with the backends, so it goes in before them);
	// "{{map}}" in it stands for the map file's path.
	frontendExtra string
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
	h := &testHAProxy{
		bin: bin, dir: dir,
		base: filepath.Join(dir, "base.cfg"), snippet: filepath.Join(dir, "snippet.cfg"),
		sock: filepath.Join(dir, "admin.sock"), master: filepath.Join(dir, "master.sock"),
		pidFile: filepath.Join(dir, "haproxy.pid"), mapFile: filepath.Join(dir, "bgd.map"),
		logPath: filepath.Join(dir, "haproxy.log"),
		port:    freePort(t), bluePort: bluePort, greenPort: greenPort,
	}
	h.hcfg = config.HAProxy{Socket: h.sock, MapFile: h.mapFile,
		Backends: map[string]string{"blue": "app_blue", "green": "app_green"}}
	mapInit := "app app_blue\n"
	if s.mapInit != nil {
		mapInit = *s.mapInit
	}
	if err := os.WriteFile(h.mapFile, []byte(mapInit), 0o644); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf(`global
    master-worker
    pidfile %s

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
`, h.pidFile)
	if err := os.WriteFile(h.base, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	renderer, err := haproxy.New("app", h.hcfg, haproxy.Options{Bind: fmt.Sprintf("127.0.0.1:%d", h.port), Check: haFastCheck})
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
	if err := os.WriteFile(h.snippet, snippet, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", h.base, "-f", h.snippet).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the rendered snippet: %v\n%s\n%s", err, out, snippet)
	}
	h.start(t)
	t.Cleanup(func() {
		h.stop(t)
		if t.Failed() {
			data, _ := os.ReadFile(h.logPath)
			t.Logf("haproxy output:\n%s", data)
		}
	})
	return h
}

// start runs the master in the foreground and waits for the admin socket.
func (h *testHAProxy) start(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.bin, "-W", "-S", h.master, "-f", h.base, "-f", h.snippet)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.cmd, h.log = cmd, logf
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := admin.New(h.sock).ShowBackends(context.Background()); err == nil {
			return
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(h.logPath)
			t.Fatalf("haproxy's admin socket never answered; its output:\n%s", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends the master (SIGTERM: it stops its worker) and waits for it.
func (h *testHAProxy) stop(t *testing.T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
	h.log.Close()
	h.cmd = nil
}

// restart stops HAProxy completely and starts it again from its files.
func (h *testHAProxy) restart(t *testing.T) {
	t.Helper()
	h.stop(t)
	h.start(t)
}

// workers returns the worker pids the master CLI lists (`show proc`).
func (h *testHAProxy) workers(t *testing.T) []string {
	t.Helper()
	// The master opens its CLI a moment after the worker's socket answers,
	// and re-executes itself on a reload: retry a refused connection.
	var ans string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ans, err = admin.New(h.master).Exec(context.Background(), "show proc"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var pids []string
	for _, l := range strings.Split(ans, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] == "worker" {
			pids = append(pids, f[0])
		}
	}
	return pids
}

// reload sends SIGUSR2 to the master and waits until a new worker serves
// the admin socket.
func (h *testHAProxy) reload(t *testing.T) {
	t.Helper()
	before := strings.Join(h.workers(t), " ")
	h.mu.Lock()
	h.cmd.Process.Signal(syscall.SIGUSR2)
	h.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, pid := range h.workers(t) {
			if !strings.Contains(" "+before+" ", " "+pid+" ") {
				if _, err := admin.New(h.sock).ShowBackends(context.Background()); err == nil {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new worker 5s after SIGUSR2 (workers before: %s)", before)
		}
		time.Sleep(10 * time.Millisecond)
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
func (h *testHAProxy) waitUp(t *testing.T, colors ...string) {
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
func (h *testHAProxy) waitDown(t *testing.T, color string) {
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
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(h.url())
	if err != nil {
		t.Fatalf("GET through HAProxy: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return "", resp.StatusCode
	}
	return resp.Header.Get("X-Slot"), 200
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
	other := config.Other(active)
	return lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: active, Host: "127.0.0.1", Port: ports[active]},
		Standby:    lb.Upstream{Color: other, Host: "127.0.0.1", Port: ports[other]},
		HealthPath: "/health",
	}
}

// haLoad sends POST requests through HAProxy from clients of one kind
// until stopped, counting answers by colour and every failure.
type haLoad struct {
	name      string
	keepAlive bool

	total, failed, blue, green, reused atomic.Int64
	firstErr                           atomic.Value // string
	stopc                              chan struct{}
	wg                                 sync.WaitGroup
}

// startHALoad runs n clients. New-connection clients disable keep-alive;
// keep-alive clients reuse one connection each and send POST with a body,
// which Go's transport never retries silently on a reused connection
// (only idempotent requests are replayed), so every failure is seen.
func startHALoad(url, name string, keepAlive bool, n int) *haLoad {
	l := &haLoad{name: name, keepAlive: keepAlive, stopc: make(chan struct{})}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
			body := []byte(`{"order": 42}`)
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				var reused bool
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
					http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				l.total.Add(1)
				resp, err := c.Do(req)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				slot := resp.Header.Get("X-Slot")
				switch {
				case err != nil:
					l.fail("read body: " + err.Error())
				case resp.StatusCode != 200:
					l.fail(fmt.Sprintf("status %d: %s", resp.StatusCode, data))
				case !strings.HasPrefix(string(data), "demo app: color="+slot):
					l.fail(fmt.Sprintf("body %q for X-Slot %q", data, slot))
				case slot == "blue":
					l.blue.Add(1)
				case slot == "green":
					l.green.Add(1)
				default:
					l.fail("no X-Slot")
				}
				if reused {
					l.reused.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *haLoad) fail(msg string) {
	l.failed.Add(1)
	l.firstErr.CompareAndSwap(nil, msg)
}

func (l *haLoad) stop() {
	close(l.stopc)
	l.wg.Wait()
}

func (l *haLoad) String() string {
	first, _ := l.firstErr.Load().(string)
	s := fmt.Sprintf("%s: %d/%d failed, blue %d, green %d, on a reused connection %d",
		l.name, l.failed.Load(), l.total.Load(), l.blue.Load(), l.green.Load(), l.reused.Load())
	if first != "" {
		s += "; first failure: " + first
	}
	return s
}

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
		Backends: map[string]string{"blue": "app_blue", "green": "app_green"}}, haproxy.Options{UpTimeout: time.Second})
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
