package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
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
