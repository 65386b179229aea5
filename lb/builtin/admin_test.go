package builtin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// appWithAdminPaths is a slot whose app has its own /metrics, /monitoring
// and /_bgd/route, each answering its colour and path.
func appWithAdminPaths(t *testing.T, color string) int {
	return backend(t, color, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s %s", color, r.URL.Path)
	})
}

// unixGet GETs path from the admin unix socket, with AdminClient.
func unixGet(t *testing.T, sock, path string) (int, string) {
	t.Helper()
	c, base := AdminClient("unix:" + sock)
	resp, err := c.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, sock, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestAdminSocketLeavesEveryPathToTheApp: with admin_listen a unix socket,
// /metrics, /monitoring and /_bgd/route on the service port are the app's;
// the socket (mode 0600) serves the proxy's, the Balancer reaches it, and
// the socket is gone when the proxy stops.
func TestAdminSocketLeavesEveryPathToTheApp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.admin.sock")
	blue, green := appWithAdminPaths(t, "blue"), appWithAdminPaths(t, "green")
	ctx, cancel := context.WithCancel(context.Background())
	var p *Proxy
	var b *Balancer
	func() {
		// startProxy stops the proxy at cleanup; this test stops it itself
		// to see the socket go, so it runs its own.
		store := &state.Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
		if err := store.Save(state.New(blue, green)); err != nil {
			t.Fatal(err)
		}
		p = &Proxy{Service: "app", Listen: freeAddr(t), AdminListen: "unix:" + sock, StatePath: store.Path,
			BluePort: blue, GreenPort: green, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		b = &Balancer{Listen: p.Listen, Admin: p.AdminListen, StatePath: store.Path}
	}()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(cancel)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Route(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the proxy does not answer on its admin socket: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	for _, path := range []string{"/metrics", "/monitoring", RoutePath, "/_bgd/anything"} {
		if code, body := get(t, p.Listen, path); code != 200 || body != "app blue "+path {
			t.Errorf("GET %s on the service port: %d %q, want the app's answer %q", path, code, body, "app blue "+path)
		}
	}
	if code, m := unixGet(t, sock, "/metrics"); code != 200 || !strings.Contains(m, `bgd_proxy_requests_total{code="200",service="app",slot="blue"} 4`) {
		t.Errorf("/metrics on the admin socket: %d, does not count the 4 requests the app answered:\n%s", code, m)
	}
	if code, page := unixGet(t, sock, "/monitoring"); code != 200 || !strings.Contains(page, "Active slot: <b>blue</b>") {
		t.Errorf("/monitoring on the admin socket: %d %q", code, page)
	}
	if code, _ := unixGet(t, sock, "/_bgd/nothing"); code != http.StatusNotFound {
		t.Errorf("an unknown admin path on the socket: %d, want 404", code)
	}
	ri, err := b.Route(ctx)
	if err != nil || ri.Admin != "unix:"+sock || ri.Active != config.Blue {
		t.Errorf("Route: %+v, %v; want blue, admin unix:%s", ri, err, sock)
	}
	o, err := b.Observe(ctx, lb.Upstream{Color: config.Blue})
	if err != nil || o.Requests != 4 {
		t.Errorf("Observe(blue) through the socket: %+v, %v; want 4 requests", o, err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("admin socket mode %s, want a socket of mode 0600", fi.Mode())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the admin socket is left after the proxy stopped: %v", err)
	}
}

// TestAdminLoopbackPort: admin_listen a loopback port of its own; the
// admin endpoints there still refuse non-loopback clients, and the
// service port forwards everything.
func TestAdminLoopbackPort(t *testing.T) {
	admin := freeAddr(t)
	p, store, b := startProxy(t, appWithAdminPaths(t, "blue"), appWithAdminPaths(t, "green"), func(p *Proxy) { p.AdminListen = admin })
	flip(t, store, b, config.Green)
	if _, body := get(t, p.Listen, "/metrics"); body != "app green /metrics" {
		t.Errorf("/metrics on the service port: %q, want the green app's", body)
	}
	if code, m := get(t, admin, "/metrics"); code != 200 || !strings.Contains(m, `bgd_proxy_active_slot{service="app",slot="green"} 1`) {
		t.Errorf("/metrics on the admin port: %d\n%s", code, m)
	}
	if code, body := get(t, admin, RoutePath); code != 200 || !strings.Contains(body, `"active":"green"`) || !strings.Contains(body, `"admin":"`+admin+`"`) {
		t.Errorf("%s on the admin port: %d %s", RoutePath, code, body)
	}
	if code, _ := get(t, admin, "/"); code != 200 {
		t.Errorf("/ on the admin port: %d, want the index", code)
	}
	h := adminHandler{p: p, loopbackOnly: true}
	for _, remote := range []string{"192.0.2.10:5555", "[2001:db8::1]:1", "garbage"} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "only loopback clients") {
			t.Errorf("/metrics on the admin port from %s: %d %q, want 403", remote, rec.Code, rec.Body.String())
		}
	}
}

// TestAdminSharedWithListen: admin_listen equal to listen (the embedded
// default) keeps the admin paths on the service port, every /_bgd/ path
// included; other paths reach the app.
func TestAdminSharedWithListen(t *testing.T) {
	p, _, _ := startProxy(t, appWithAdminPaths(t, "blue"), appWithAdminPaths(t, "green"), func(p *Proxy) { p.AdminListen = p.Listen })
	if _, m := get(t, p.Listen, "/metrics"); !strings.Contains(m, "bgd_proxy_active_slot") {
		t.Errorf("/metrics on a shared listener is not the proxy's:\n%s", m)
	}
	if code, _ := get(t, p.Listen, "/_bgd/nothing"); code != http.StatusNotFound {
		t.Errorf("/_bgd/nothing on a shared listener: %d, want the proxy's 404", code)
	}
	if _, body := get(t, p.Listen, "/metricsx"); body != "app blue /metricsx" {
		t.Errorf("/metricsx: %q, want the app's", body)
	}
}

// TestAdminSocketStaleOrTaken: a socket file left by a proxy that was
// killed is replaced; a live one (a second proxy on the same socket) and a
// path that is not a socket are refused, naming what to do.
func TestAdminSocketStaleOrTaken(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.admin.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	startProxy(t, blue, green, func(p *Proxy) { p.AdminListen = "unix:" + sock })

	run := func(admin string) error {
		listen := freeAddr(t)
		p := &Proxy{Service: "app", Listen: listen, AdminListen: admin, StatePath: filepath.Join(dir, "st.json"),
			BluePort: blue, GreenPort: green}
		err := p.Run(context.Background())
		if c, derr := net.Dial("tcp", listen); derr == nil {
			c.Close()
			t.Errorf("admin_listen %s refused, but the service port %s is left open", admin, listen)
		}
		return err
	}
	err = run(sock)
	if err == nil || !strings.Contains(err.Error(), "another process serves it") || !strings.Contains(err.Error(), "lb.builtin.admin_listen") {
		t.Errorf("a second proxy on a live admin socket: %v, want a refusal naming lb.builtin.admin_listen", err)
	}
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run("unix:" + file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("an admin socket path that is a regular file: %v, want a refusal", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the regular file was removed: %v", err)
	}
	if err := run("unix:" + filepath.Join(dir, "no", "such", "dir", "a.sock")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("an admin socket in a missing directory: %v, want a refusal naming the directory", err)
	}
}

// TestAdminSocketLongPath: a state directory deep enough that its socket
// path exceeds what a unix socket address holds still gets its socket.
func TestAdminSocketLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < maxSocketPath+20 {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "app.admin.sock")
	p, _, b := startProxy(t, backend(t, "blue", nil), backend(t, "green", nil), func(p *Proxy) { p.AdminListen = "unix:" + sock })
	if ri, err := b.Route(context.Background()); err != nil || ri.Admin != p.AdminListen {
		t.Fatalf("Route through a %d-byte socket path: %+v, %v", len(sock), ri, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("the long socket path: %v, %v; want a socket of mode 0600", fi, err)
	}
}

// TestBalancerWithoutProxyNamesTheAdminAddress: nothing on the admin socket
// (and no older proxy on the port) is ErrUnreachable, naming both.
func TestBalancerWithoutProxyNamesTheAdminAddress(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.admin.sock")
	b := &Balancer{Listen: freeAddr(t), Admin: "unix:" + sock}
	_, err := b.Route(context.Background())
	if !errors.Is(err, lb.ErrUnreachable) || !strings.Contains(err.Error(), "no builtin proxy answers on unix:"+sock) || !strings.Contains(err.Error(), b.Listen) {
		t.Errorf("Route with no proxy: %v", err)
	}
	// Something else on the service port: not a proxy, and none is started.
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	held := &Balancer{Listen: other.Listener.Addr().String(), Admin: b.Admin, Spawn: func() (int, error) {
		t.Error("Ensure started a proxy while something else holds the service port")
		return 0, errors.New("no")
	}}
	if _, err := held.Ensure(context.Background()); !errors.Is(err, errNotProxy) || !strings.Contains(err.Error(), held.Listen) {
		t.Errorf("Ensure with the service port held by another server: %v, want not a bgd proxy, naming the port", err)
	}
	// A proxy that shares its port is not mistaken for an older one.
	p, _, _ := startProxy(t, backend(t, "blue", nil), backend(t, "green", nil), func(p *Proxy) { p.AdminListen = p.Listen })
	b.Listen = p.Listen
	if _, err := b.Route(context.Background()); errors.Is(err, errOldProxy) || !errors.Is(err, lb.ErrUnreachable) {
		t.Errorf("Route to a missing socket beside a current proxy: %v, want unreachable, not an older proxy", err)
	}
}

// TestAdminProbeOnTheServicePort: when the configured admin address does
// not answer, the CLI asks the service port where the proxy's admin is:
// the proxy answers that probe itself (loopback clients only), so a
// proxy started with another admin_listen is named, not taken for none.
func TestAdminProbeOnTheServicePort(t *testing.T) {
	dir := t.TempDir()
	p, _, _ := startProxy(t, appWithAdminPaths(t, "blue"), appWithAdminPaths(t, "green"), func(p *Proxy) { p.AdminListen = "unix:" + filepath.Join(dir, "a.sock") })
	b := &Balancer{Listen: p.Listen, Admin: "unix:" + filepath.Join(dir, "b.sock"), Spawn: func() (int, error) {
		t.Error("Ensure started a proxy beside the one on the port")
		return 0, errors.New("no")
	}}
	_, err := b.Ensure(context.Background())
	if !errors.Is(err, lb.ErrUnreachable) || !errors.Is(err, errAdminElsewhere) ||
		!strings.Contains(err.Error(), "on "+p.AdminListen+", not on "+b.Admin) || !strings.Contains(err.Error(), "restart it") {
		t.Errorf("Ensure with another admin_listen than the running proxy's: %v", err)
	}
	// The probe from another host is the app's, like every request.
	req := httptest.NewRequest(http.MethodGet, RoutePath, nil)
	req.RemoteAddr = "192.0.2.10:4000"
	req.Header.Set(AdminProbeHeader, "1")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if rec.Body.String() != "app blue "+RoutePath {
		t.Errorf("the admin probe from 192.0.2.10: %d %q, want the app's answer", rec.Code, rec.Body.String())
	}
}

// BenchmarkRoute: what the CLI pays to ask the proxy (a flip's
// confirmation polls it), on a loopback admin port and on the admin unix
// socket, over a kept-alive connection.
func BenchmarkRoute(b *testing.B) {
	blue, green := backend(b, "blue", nil), backend(b, "green", nil)
	for _, tc := range []struct {
		name  string
		admin func() string
	}{
		{"tcp", func() string { return freeAddr(b) }},
		{"unix", func() string { return "unix:" + filepath.Join(b.TempDir(), "a.sock") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, _, bal := startProxy(b, blue, green, func(p *Proxy) { p.AdminListen = tc.admin() })
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bal.Route(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
