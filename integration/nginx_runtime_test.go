package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/nginx"
)

// luaModules are the load_module lines of nginx's Lua module (Debian's
// libnginx-mod-http-lua, with the NDK it needs), for an nginx.conf's main
// context.
func luaModules(t testing.TB) string {
	t.Helper()
	var lines []string
	for _, m := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
		path := filepath.Join(filepath.Dir(config.DefaultLuaModule), m)
		if _, err := os.Stat(path); err != nil {
			skipOrFail(t, fmt.Sprintf("nginx's Lua module is not installed (%s): apt-get install libnginx-mod-http-lua", path))
		}
		lines = append(lines, "load_module "+path+";")
	}
	return strings.Join(lines, "\n")
}

// skipOrFail skips loudly, or fails under CI, where every part must be there.
func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip("SKIP (loud): " + why)
}

// runtimeCfg is n's lb.nginx section in mode runtime.
func runtimeCfg(n *testNginx) config.Nginx {
	c := n.cfg()
	c.Mode = config.NginxRuntime
	c.LuaModule = config.DefaultLuaModule
	return c
}

// flipsUnderLoad flips b flips times (generations from gen+1) under
// keep-alive and new-connection load through n, and returns the flip
// latencies and both loads' counts.
func flipsUnderLoad(t *testing.T, n *testNginx, b *nginx.Balancer, ports map[string]int, gen uint64, flips int) ([]time.Duration, nginxLoadCounts) {
	t.Helper()
	ctx := context.Background()
	l := startNginxLoad(n.url(), 4, 4)
	time.Sleep(200 * time.Millisecond)
	var took []time.Duration
	for i := 1; i <= flips; i++ {
		g := gen + uint64(i)
		col := config.Colors[g%2].String()
		start := time.Now()
		if err := b.Flip(ctx, nginxRoute(col, ports, g)); err != nil {
			l.stop()
			t.Fatalf("flip to %s (generation %d): %v\nerror log:\n%s", col, g, err, n.errorLog())
		}
		took = append(took, time.Since(start))
		if got := nginxGet(t, n.url()); got.Slot != col || got.Generation != strconv.FormatUint(g, 10) {
			l.stop()
			t.Fatalf("right after the flip to %s (generation %d) returned, a new connection got %q under generation %q", col, g, got.Slot, got.Generation)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nc, ka := l.stop()
	slices.Sort(took)
	return took, nginxLoadCounts{nc, ka}
}

type nginxLoadCounts struct{ newConn, keepAlive testsupport.LoadCount }

// TestNginxRuntimeFlipsUnderLoad flips 20 times through a real nginx with
// the Lua module in mode runtime, under load from 4 keep-alive clients
// (POST, never retried) and 4 new-connection clients: not one request may
// fail. The same 20 flips in mode reload, on another nginx, are the
// contrast (printed: reloads close idle keep-alive connections).
func TestNginxRuntimeFlipsUnderLoad(t *testing.T) {
	mods := luaModules(t)
	const flips = 20
	n, ports := nginxPair(t, nginxSetup{mainExtra: mods})
	b := newNginxBalancer(t, runtimeCfg(n), nginx.Options{})
	ctx := context.Background()
	start := time.Now()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatalf("first flip: %v\nerror log:\n%s", err, n.errorLog())
	}
	t.Logf("runtime: first flip (file written, nginx reloaded once): %s", time.Since(start).Round(time.Millisecond))
	reloads := n.reloads()
	took, counts := flipsUnderLoad(t, n, b, ports, 1, flips)
	if r := n.reloads(); r != reloads {
		t.Errorf("mode runtime reloaded nginx %d times during %d flips", r-reloads, flips)
	}
	t.Logf("runtime: %d flips, latency median %s, max %s", flips, took[len(took)/2], took[len(took)-1])
	t.Logf("runtime: new-connection clients: %s", counts.newConn)
	t.Logf("runtime: keep-alive clients (POST): %s", counts.keepAlive)
	nc, ka := counts.newConn, counts.keepAlive
	if nc.Failures != 0 || ka.Failures != 0 {
		t.Errorf("mode runtime: %d new-connection and %d keep-alive requests failed during %d flips; want 0", nc.Failures, ka.Failures, flips)
	}
	if ka.Slots["blue"] == 0 || ka.Slots["green"] == 0 || nc.Slots["blue"] == 0 || nc.Slots["green"] == 0 {
		t.Errorf("traffic did not reach both slots: %s; %s", nc, ka)
	}

	// The contrast: mode reload, same load, same flips.
	n2, ports2 := nginxPair(t, nginxSetup{})
	b2 := newNginxBalancer(t, n2.cfg(), nginx.Options{})
	if err := b2.Flip(ctx, nginxRoute("blue", ports2, 1)); err != nil {
		t.Fatal(err)
	}
	took2, counts2 := flipsUnderLoad(t, n2, b2, ports2, 1, flips)
	t.Logf("reload: %d flips, latency median %s, max %s", flips, took2[len(took2)/2], took2[len(took2)-1])
	t.Logf("reload: keep-alive clients (POST): %s", counts2.keepAlive)
	t.Logf("failed keep-alive requests over %d flips: runtime %d, reload %d; flip median: runtime %s, reload %s",
		flips, ka.Failures, counts2.keepAlive.Failures, took[len(took)/2], took2[len(took2)/2])
}

// runtimeAnswers sends count GETs on new connections and checks each one
// came from color under generation gen.
func runtimeAnswers(t *testing.T, n *testNginx, step, color string, gen uint64, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		got := nginxGet(t, n.url())
		if got.Status != http.StatusOK || got.Slot != color || got.Generation != strconv.FormatUint(gen, 10) {
			t.Fatalf("after %s: answer %d: status %d from %q under generation %q; want %s, generation %d\nerror log:\n%s",
				step, i+1, got.Status, got.Slot, got.Generation, color, gen, n.errorLog())
		}
	}
}

// TestNginxRuntimeKeepsRouteAcrossReloadAndRestart: the route set at
// runtime survives `nginx -s reload` (the shared dict is kept) and a
// restart of nginx (the Lua code reads bgd's route file), and flips go on
// without a reload afterwards.
func TestNginxRuntimeKeepsRouteAcrossReloadAndRestart(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{mainExtra: luaModules(t)})
	b := newNginxBalancer(t, runtimeCfg(n), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("green", ports, 2)); err != nil {
		t.Fatalf("%v\nerror log:\n%s", err, n.errorLog())
	}
	if err := b.Flip(ctx, nginxRoute("blue", ports, 3)); err != nil {
		t.Fatal(err)
	}
	runtimeAnswers(t, n, "the flip to blue", "blue", 3, 10)
	route, err := os.ReadFile(b.RouteFile())
	if err != nil || string(route) != "generation=3\nactive=blue\nblue=100\ngreen=0\n" {
		t.Fatalf("route file %s: %q (%v)", b.RouteFile(), route, err)
	}

	reloads := n.reloads()
	if out, err := exec.Command(n.Command("-s", "reload")[0], n.Command("-s", "reload")[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reload: %v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.reloads() == reloads && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the old workers stop accepting
	runtimeAnswers(t, n, "nginx -s reload", "blue", 3, 20)

	n.Stop()
	if _, err := nginxGetErr(n.url()); err == nil {
		t.Fatal("nginx still answers after it was stopped")
	}
	n.start(t)
	runtimeAnswers(t, n, "a restart of nginx", "blue", 3, 20)
	if c, err := b.Active(ctx); err != nil || c != config.Blue {
		t.Fatalf("Active after the restart: %q, %v", c, err)
	}

	reloads = n.reloads()
	if err := b.Flip(ctx, nginxRoute("green", ports, 4)); err != nil {
		t.Fatal(err)
	}
	runtimeAnswers(t, n, "a flip after the restart", "green", 4, 10)
	if r := n.reloads(); r != reloads {
		t.Fatalf("a flip after the restart reloaded nginx (%d reloads)", r-reloads)
	}
}

func nginxGetErr(url string) (testsupport.Answer, error) { return testsupport.Get(url) }

// TestNginxRuntimeCanary: a 10% split in mode runtime is exact over any
// 100 consecutive requests (one sequence in the shared dict for all the
// workers), the headers name the stable colour and the weights, a
// loopback preview request goes to the standby, and a promote sends all
// to the canary.
func TestNginxRuntimeCanary(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{mainExtra: luaModules(t)})
	b := newNginxBalancer(t, runtimeCfg(n), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatalf("%v\nerror log:\n%s", err, n.errorLog())
	}
	r := nginxRoute("blue", ports, 2)
	r.Active.Weight, r.Standby.Weight = 90, 10
	if err := b.Flip(ctx, r); err != nil {
		t.Fatal(err)
	}
	var seq []string
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 500; i++ {
		resp, err := client.Get(n.url())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Bgd-Active") != "blue" || resp.Header.Get("X-Bgd-Weights") != "blue=90,green=10" ||
			resp.Header.Get("X-Bgd-Slot") != resp.Header.Get("X-Slot") || resp.Header.Get("X-Bgd-Generation") != "2" {
			t.Fatalf("answer %d: %d %v", i, resp.StatusCode, resp.Header)
		}
		seq = append(seq, resp.Header.Get("X-Slot"))
	}
	for i := 0; i+100 <= len(seq); i++ {
		if g := countOf(seq[i:i+100], "green"); g != 10 {
			t.Fatalf("requests %d-%d: %d from the canary, want exactly 10", i+1, i+100, g)
		}
	}
	t.Logf("10%% split: %d of %d requests from the canary, exactly 10 in every 100 consecutive", countOf(seq, "green"), len(seq))
	if c, err := b.Active(ctx); err != nil || c != config.Blue {
		t.Fatalf("Active during the split: %q, %v", c, err)
	}
	req, _ := http.NewRequest(http.MethodGet, n.url(), nil)
	req.Header.Set(lb.PreviewHeader, "1")
	for i := 0; i < 20; i++ {
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if s := resp.Header.Get("X-Slot"); s != "green" || resp.Header.Get(lb.SlotHeader) != "green" {
			t.Fatalf("a loopback preview request went to %q", s)
		}
	}
	if err := b.Flip(ctx, nginxRoute("green", ports, 3)); err != nil {
		t.Fatal(err)
	}
	runtimeAnswers(t, n, "the promote", "green", 3, 50)
}

func countOf(xs []string, x string) int {
	c := 0
	for _, v := range xs {
		if v == x {
			c++
		}
	}
	return c
}

// TestNginxRuntimeInFlight: in mode runtime no reload ends nginx's old
// workers, so InFlight (nginx's connections to the slot) must not count
// idle kept connections for long: a slow request to blue is in flight
// after a flip to green, and once it is answered blue's count drops to 0
// within the upstream's keepalive_timeout (1s).
func TestNginxRuntimeInFlight(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{mainExtra: luaModules(t)})
	b := newNginxBalancer(t, runtimeCfg(n), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatalf("%v\nerror log:\n%s", err, n.errorLog())
	}
	done := make(chan testsupport.Answer, 1)
	go func() {
		a, _ := testsupport.Get(n.url() + "?delay=1500ms")
		done <- a
	}()
	time.Sleep(300 * time.Millisecond)
	if err := b.Flip(ctx, nginxRoute("green", ports, 2)); err != nil {
		t.Fatal(err)
	}
	blue := lb.Upstream{Color: config.Blue, Host: "127.0.0.1", Port: ports["blue"]}
	if c, err := b.InFlight(ctx, blue); err != nil || c < 1 {
		t.Fatalf("InFlight(blue) with a slow request: %d, %v; want at least 1", c, err)
	}
	a := <-done
	if a.Status != 200 || a.Slot != "blue" {
		t.Fatalf("the slow request: %d from %q", a.Status, a.Slot)
	}
	answered := time.Now()
	for {
		c, err := b.InFlight(ctx, blue)
		if err != nil {
			t.Fatal(err)
		}
		if c == 0 {
			break
		}
		if time.Since(answered) > 3*time.Second {
			t.Fatalf("InFlight(blue) still %d, 3s after its last request was answered", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("blue's connections all closed %s after its last request was answered", time.Since(answered).Round(time.Millisecond))
}

// TestNginxRuntimeWithoutLuaModule: mode runtime is refused at the
// driver's New (exit 2 from the CLI) when the module file is missing or
// does not load into this nginx; an nginx.conf that does not load_module
// it makes the first flip fail with nginx's refusal and the hint, the
// previous file back.
func TestNginxRuntimeWithoutLuaModule(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{}) // no load_module lines
	cfg := runtimeCfg(n)

	missing := cfg
	missing.LuaModule = filepath.Join(t.TempDir(), "ngx_http_lua_module.so")
	_, err := nginx.New("app", missing, nginx.Options{})
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "libnginx-mod-http-lua") {
		t.Fatalf("New with a missing module: %v", err)
	}
	t.Logf("missing module: %v", err)

	bogus := cfg
	bogus.LuaModule = filepath.Join(t.TempDir(), "ngx_http_lua_module.so")
	os.WriteFile(bogus.LuaModule, []byte("not a module"), 0o644)
	_, err = nginx.New("app", bogus, nginx.Options{})
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "cannot load") {
		t.Fatalf("New with a module nginx cannot load: %v", err)
	}
	t.Logf("bogus module: %v", err)

	if _, err := os.Stat(config.DefaultLuaModule); err != nil {
		skipOrFail(t, "nginx's Lua module is not installed: apt-get install libnginx-mod-http-lua")
	}
	b := newNginxBalancer(t, cfg, nginx.Options{})
	err = b.Flip(context.Background(), nginxRoute("blue", ports, 1))
	if !errors.Is(err, nginx.ErrRejected) || !strings.Contains(err.Error(), "does not load its Lua module") {
		t.Fatalf("a flip on an nginx that does not load the module: %v", err)
	}
	if _, serr := os.Stat(cfg.File); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("the refused file is left in place: %v", serr)
	}
	t.Logf("nginx without load_module: %v", err)

	// The CLI: exit 2 and the message, before anything runs.
	dir := t.TempDir()
	list := func(argv []string) string { data, _ := json.Marshal(argv); return string(data) }
	yml := fmt.Sprintf(`state_dir: %q
services:
  app:
    command: %s
    blue: {port: %d}
    green: {port: %d}
    lb:
      driver: nginx
      nginx:
        file: %q
        listen: %q
        test: %s
        reload: %s
        mode: runtime
        lua_module: %q
`, filepath.Join(dir, "state"), list([]string{bgdBin, "demo-app", "--port", "{{.Port}}"}), freePort(t), freePort(t),
		cfg.File, cfg.Listen, list(cfg.Test), list(cfg.Reload), missing.LuaModule)
	if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"render"}, {"switch", "blue"}} {
		out, errOut, code := bgd(t, dir, []string{"NO_COLOR=1"}, args...)
		if code != 2 || !strings.Contains(errOut, "lb.nginx.mode runtime needs nginx's Lua module") {
			t.Fatalf("bgd %v without the module: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
		}
		t.Logf("bgd %v: exit %d: %s", args, code, strings.TrimSpace(errOut))
	}
}
