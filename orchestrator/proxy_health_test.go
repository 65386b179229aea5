package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// proxyArg makes this test binary a real builtin proxy process, as the CLI's
// `bgd proxy` is: "<binary> bgd-test-proxy LISTEN STATE BLUEPORT GREENPORT".
// It runs in init, before TestMain, so the test flags are never parsed.
const proxyArg = "bgd-test-proxy"

func init() {
	if len(os.Args) != 6 || os.Args[1] != proxyArg {
		return
	}
	blue, _ := strconv.Atoi(os.Args[4])
	green, _ := strconv.Atoi(os.Args[5])
	p := &builtin.Proxy{Service: "app", Listen: os.Args[2], StatePath: os.Args[3], BluePort: blue, GreenPort: green}
	ctx, stop := signalContext()
	defer stop()
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// proxyRig is the embedded default on free ports with a real proxy process.
type proxyRig struct {
	t     *testing.T
	o     *orchestrator.Orchestrator
	store *state.Store
	svc   *config.Service
	dir   string
	mu    sync.Mutex
	procs []slots.Identity // every proxy process started, for the clean-up
}

// newProxyRig returns an orchestrator whose SpawnProxy starts a detached
// proxy process, as the CLI's does.
func newProxyRig(t *testing.T) *proxyRig {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{"BLUE_PORT": freePort(), "GREEN_PORT": freePort(), "BG_PROXY_PORT": freePort(),
		"BG_STATE_FILE": filepath.Join(dir, "bg_state.json")}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	r := &proxyRig{t: t, svc: cfg.Services["app"], dir: dir}
	r.svc.StopGrace = config.Duration(2 * time.Second)
	r.o, err = orchestrator.New(cfg, "app", orchestrator.Options{SpawnProxy: r.spawn})
	if err != nil {
		t.Fatal(err)
	}
	r.store = &state.Store{Path: r.o.StatePath()}
	t.Cleanup(func() {
		for _, c := range config.Colors {
			for _, id := range slots.FindMarked(slots.SlotMarker(r.o.StatePath(), "app", c.String())) {
				slots.Stop(context.Background(), id, time.Second)
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, id := range r.procs {
			slots.Stop(context.Background(), id, time.Second)
		}
	})
	return r
}

// spawn starts a detached proxy process and returns its pid.
func (r *proxyRig) spawn() (int, error) {
	abs, err := filepath.Abs(r.o.StatePath())
	if err != nil {
		return 0, err
	}
	p, err := slots.StartProcess(slots.Spec{
		Argv: []string{os.Args[0], proxyArg, r.svc.LB.Builtin.Listen, abs,
			strconv.Itoa(r.svc.Blue.Port), strconv.Itoa(r.svc.Green.Port)},
		LogPath: filepath.Join(r.dir, "proxy.log"),
		Marker:  slots.ProxyMarker(abs, "app"),
	})
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.procs = append(r.procs, p.Identity)
	r.mu.Unlock()
	return p.PID, nil
}

// kill SIGKILLs the proxy pid and waits until nothing answers on its port.
func (r *proxyRig) kill(pid int) {
	r.t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.t.Fatalf("kill proxy %d: %v", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for slots.Alive(pid) || r.answers() {
		if time.Now().After(deadline) {
			r.t.Fatalf("proxy %d still alive or answering 5s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answers reports whether anything accepts connections on the proxy port.
func (r *proxyRig) answers() bool {
	c, err := net.DialTimeout("tcp", r.svc.LB.Builtin.Listen, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// get requests / through the proxy and returns the body.
func (r *proxyRig) get() string {
	r.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + r.svc.LB.Builtin.Listen + "/")
	if err != nil {
		r.t.Fatalf("GET through the proxy: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (r *proxyRig) state() *state.State {
	r.t.Helper()
	st, err := r.store.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// A proxy bgd started that dies is an outage: the sweep fails (exit 1 in
// the CLI), says so, starts a new proxy and records its pid; the next sweep
// is healthy and traffic flows again.
func TestHealthSweepRestartsADeadProxyThatBgdStarted(t *testing.T) {
	r := newProxyRig(t)
	ctx := context.Background()
	if _, err := r.o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	first := r.state().ProxyPID
	if first == 0 || !slots.Alive(first) {
		t.Fatalf("start blue recorded proxy_pid %d, want a live proxy", first)
	}
	if sw, err := r.o.HealthSweep(ctx); err != nil || sw.Proxy == nil || !sw.Proxy.Running || sw.Proxy.PID != first || !sw.Proxy.Managed {
		t.Fatalf("sweep with a live proxy: err=%v proxy=%+v", err, sw.Proxy)
	}

	r.kill(first)
	st, err := r.o.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Proxy == nil || st.Proxy.Running || st.Proxy.PID != first || !strings.Contains(st.Proxy.Error, "has exited") || st.LBError == "" {
		t.Fatalf("status with a dead proxy: proxy=%+v lb_error=%q", st.Proxy, st.LBError)
	}

	sw, err := r.o.HealthSweep(ctx)
	if !errors.Is(err, orchestrator.ErrNotHealthy) || !errors.Is(err, orchestrator.ErrFailed) {
		t.Fatalf("sweep with a dead proxy = %v, want ErrNotHealthy and ErrFailed (exit 1)", err)
	}
	if !strings.Contains(err.Error(), "the builtin proxy for app is not running: ") || !strings.Contains(err.Error(), "restarted it (pid ") {
		t.Fatalf("sweep error does not say what happened: %v", err)
	}
	second := sw.Proxy.Restarted
	if second == 0 || second == first || !slots.Alive(second) {
		t.Fatalf("sweep restarted pid %d (the dead one was %d)", second, first)
	}
	if got := r.state(); got.ProxyPID != second {
		t.Fatalf("state proxy_pid = %d, want the new proxy %d", got.ProxyPID, second)
	} else if last := got.History[len(got.History)-1]; last.Action != "proxy-restart" || last.Status != state.StatusSuccess {
		t.Fatalf("last history entry = %+v, want a successful proxy-restart", last)
	}
	if body := r.get(); !strings.Contains(body, "color=blue") {
		t.Fatalf("through the restarted proxy: %q, want blue", body)
	}

	sw, err = r.o.HealthSweep(ctx)
	if err != nil || !sw.Proxy.Running || sw.Proxy.PID != second || sw.Proxy.Restarted != 0 {
		t.Fatalf("sweep after the restart: err=%v proxy=%+v", err, sw.Proxy)
	}
	if st, err := r.o.Status(ctx); err != nil || !st.Proxy.Running || st.Proxy.PID != second || st.LBActive != "blue" {
		t.Fatalf("status after the restart: err=%v proxy=%+v lb_active=%q", err, st.Proxy, st.LBActive)
	}
}

// A proxy bgd did not start (systemd runs `bgd proxy`: no proxy_pid was
// recorded) is reported, never restarted by a sweep.
func TestHealthSweepOnlyReportsAProxyItDidNotStart(t *testing.T) {
	r := newProxyRig(t)
	ctx := context.Background()
	unit, err := r.spawn() // as systemd would
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !r.answers() {
		if time.Now().After(deadline) {
			t.Fatal("the proxy never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := r.o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if pid := r.state().ProxyPID; pid != 0 {
		t.Fatalf("bgd recorded proxy_pid %d for a proxy it did not start", pid)
	}
	r.kill(unit)

	sw, err := r.o.HealthSweep(ctx)
	if !errors.Is(err, orchestrator.ErrNotHealthy) || !strings.Contains(err.Error(), "the builtin proxy for app is not running: ") ||
		!strings.Contains(err.Error(), "systemd") {
		t.Fatalf("sweep with a dead systemd proxy = %v", err)
	}
	if sw.Proxy == nil || sw.Proxy.Running || sw.Proxy.Managed || sw.Proxy.Restarted != 0 {
		t.Fatalf("sweep proxy = %+v, want not running, not managed, not restarted", sw.Proxy)
	}
	time.Sleep(100 * time.Millisecond)
	if r.answers() || r.state().ProxyPID != 0 {
		t.Fatalf("the sweep started a proxy (answers=%v proxy_pid=%d)", r.answers(), r.state().ProxyPID)
	}
	if st, err := r.o.Status(ctx); err != nil || st.Proxy == nil || st.Proxy.Running || st.Proxy.Managed {
		t.Fatalf("status: err=%v proxy=%+v", err, st.Proxy)
	}
}

// A restart that cannot work (something else took the port) fails the sweep
// saying why, is recorded once however often the timer sweeps, and the
// first sweep after the port is free again restarts the proxy.
func TestHealthSweepProxyRestartBlockedByAForeignListener(t *testing.T) {
	r := newProxyRig(t)
	ctx := context.Background()
	if _, err := r.o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	first := r.state().ProxyPID
	r.kill(first)
	ln, err := net.Listen("tcp", r.svc.LB.Builtin.Listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)
	defer srv.Close()

	failedRestarts := func() int {
		n := 0
		for _, e := range r.state().History {
			if e.Action == "proxy-restart" && e.Status == state.StatusFailed {
				n++
			}
		}
		return n
	}
	for i := 0; i < 2; i++ {
		sw, err := r.o.HealthSweep(ctx)
		if !errors.Is(err, orchestrator.ErrNotHealthy) || !strings.Contains(err.Error(), "the builtin proxy for app is not running: ") ||
			!strings.Contains(err.Error(), "restarting it failed") || !strings.Contains(err.Error(), "not a bgd proxy") {
			t.Fatalf("sweep %d with the port taken = %v", i+1, err)
		}
		if sw.Proxy.Restarted != 0 || r.state().ProxyPID != first {
			t.Fatalf("sweep %d: restarted %d, proxy_pid %d (want unchanged %d)", i+1, sw.Proxy.Restarted, r.state().ProxyPID, first)
		}
		if n := failedRestarts(); n != 1 {
			t.Fatalf("after sweep %d: %d failed proxy-restart entries in the history, want 1", i+1, n)
		}
	}

	srv.Close()
	sw, err := r.o.HealthSweep(ctx)
	if !errors.Is(err, orchestrator.ErrNotHealthy) || sw.Proxy.Restarted == 0 || r.state().ProxyPID != sw.Proxy.Restarted {
		t.Fatalf("sweep after the port was freed: err=%v proxy=%+v proxy_pid=%d", err, sw.Proxy, r.state().ProxyPID)
	}
	if body := r.get(); !strings.Contains(body, "color=blue") {
		t.Fatalf("through the restarted proxy: %q, want blue", body)
	}
	if _, err := r.o.HealthSweep(ctx); err != nil {
		t.Fatalf("sweep after the restart: %v", err)
	}
}
