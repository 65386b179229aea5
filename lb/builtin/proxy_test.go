package builtin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// backend is a slot stand-in on 127.0.0.1 that names its colour.
func backend(t testing.TB, color string, h http.HandlerFunc) int {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, color) }
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProxy runs a Proxy following a fresh state file until the test ends.
func startProxy(t testing.TB, bluePort, greenPort int, opts ...func(*Proxy)) (*Proxy, *state.Store, *Balancer) {
	t.Helper()
	store := &state.Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	st := state.New(bluePort, greenPort)
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Service: "app", Listen: freeAddr(t), StatePath: store.Path, BluePort: bluePort, GreenPort: greenPort,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	b := &Balancer{Listen: p.Listen, Admin: p.AdminListen}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Route(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p, store, b
}

// flip writes the state the orchestrator would and waits for the proxy.
func flip(t *testing.T, store *state.Store, b *Balancer, color config.Color) {
	t.Helper()
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.ActiveVersion = color
	st.Generation++
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	other := config.Blue
	if color == "blue" {
		other = "green"
	}
	r := lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: color, Host: lb.LocalHost, Port: st.Slot(color).Port},
		Standby:    lb.Upstream{Color: other, Host: lb.LocalHost, Port: st.Slot(other).Port},
		Generation: st.Generation,
	}
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestProxyFollowsStateFile(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	if _, body := get(t, p.Listen, "/"); body != "blue" {
		t.Fatalf("fresh state should route to blue, got %q", body)
	}
	for _, color := range []string{"green", "blue", "green"} {
		flip(t, store, b, config.Color(color))
		if _, body := get(t, p.Listen, "/"); body != color {
			t.Fatalf("after flip to %s the proxy answered %q", color, body)
		}
		if got, _ := b.Active(context.Background()); got != config.Color(color) {
			t.Fatalf("Active = %q, want %s", got, color)
		}
	}
}

// A request that started on blue finishes on blue after the flip; new
// requests go to green.
func TestProxyInFlightRequestFinishesWhereItStarted(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		fmt.Fprint(w, "blue")
	})
	green := backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + p.Listen + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(body)
	}()
	<-started
	flip(t, store, b, "green")
	if _, body := get(t, p.Listen, "/"); body != "green" {
		t.Fatalf("new request after flip answered %q, want green", body)
	}
	close(release)
	if got := <-slow; got != "blue" {
		t.Fatalf("in-flight request answered %q, want blue", got)
	}
}

// The proxy counts the requests it forwards per colour: a request that
// started on blue counts for blue after the flip, until it is answered.
func TestProxyCountsInFlightPerColour(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		fmt.Fprint(w, "blue")
	})
	green := backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	ctx := context.Background()
	inFlight := func(c config.Color) int {
		t.Helper()
		n, err := b.InFlight(ctx, lb.Upstream{Color: c})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := inFlight(config.Blue); n != 0 {
		t.Fatalf("idle proxy: blue in flight = %d, want 0", n)
	}
	codes := make(chan int, 3)
	for range 3 {
		go func() {
			resp, err := http.Get("http://" + p.Listen + "/slow")
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range 3 {
		<-started
	}
	flip(t, store, b, "green")
	if _, body := get(t, p.Listen, "/"); body != "green" {
		t.Fatalf("after the flip the proxy answered %q, want green", body)
	}
	if n, g := inFlight(config.Blue), inFlight(config.Green); n != 3 || g != 0 {
		t.Fatalf("3 requests held on blue: in flight blue=%d green=%d, want 3 and 0", n, g)
	}
	if _, m := get(t, p.Listen, "/metrics"); !strings.Contains(m, `bgd_proxy_in_flight_requests{service="app",slot="blue"} 3`) ||
		!strings.Contains(m, `bgd_proxy_in_flight_requests{service="app",slot="green"} 0`) {
		t.Errorf("/metrics does not show 3 in flight to blue, 0 to green:\n%s", m)
	}
	close(release)
	for range 3 {
		if c := <-codes; c != http.StatusOK {
			t.Fatalf("held request answered %d, want 200", c)
		}
	}
	// The counter drops once the handler returns, just after the client
	// has the whole answer.
	deadline := time.Now().Add(2 * time.Second)
	for inFlight(config.Blue) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("blue in flight = %d after every request was answered, want 0", inFlight(config.Blue))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A corrupt state file leaves the routing as it was.
func TestProxyKeepsRoutingOnCorruptState(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	flip(t, store, b, "green")
	if err := fsx.WriteFileAtomic(store.Path, []byte(`{"active_version": "blu`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.reload(); err == nil {
		t.Fatal("reload of a corrupt state should fail")
	}
	if _, body := get(t, p.Listen, "/"); body != "green" {
		t.Fatalf("corrupt state changed routing: %q", body)
	}
}

func TestProxyAdminPathsAreLoopbackOnly(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	p, _, _ := startProxy(t, blue, green)
	get(t, p.Listen, "/") // one request, so the counters have a series
	for _, tc := range []struct {
		path, remote string
		wantCode     int
		wantBody     string
	}{
		{"/metrics", "127.0.0.1:5555", 200, `bgd_proxy_requests_total{code="200",service="app",slot="blue"} 1`},
		{"/metrics", "[::1]:5555", 200, "bgd_proxy_active_slot"},
		{"/monitoring", "127.0.0.1:5555", 200, "Active slot: <b>blue</b>"},
		{RoutePath, "127.0.0.1:5555", 200, `"active":"blue"`},
		{"/metrics", "192.0.2.10:5555", 403, "only loopback clients"},
		{"/monitoring", "192.0.2.10:5555", 403, "only loopback clients"},
		{RoutePath, "[2001:db8::1]:5555", 403, "only loopback clients"},
		{"/metrics", "127.8.9.10:1", 200, "bgd_proxy_active_slot"},
		{"/metrics", "[::ffff:10.1.2.3]:5555", 403, "only loopback clients"},
		{"/metrics", "garbage", 403, "only loopback clients"},
		{"/metrics", "", 403, "only loopback clients"},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/")+"_from_"+tc.remote, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("%s from %s: %d %q, want %d containing %q", tc.path, tc.remote, rec.Code, rec.Body.String(), tc.wantCode, tc.wantBody)
			}
		})
	}
}

// The proxy forwards /health to the active slot (the seed's runbook curls
// :5004/health), and marks which slot answered.
func TestProxyForwardsHealthToActiveSlot(t *testing.T) {
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"ok": true, "color": "blue"}`) })
	p, _, _ := startProxy(t, blue, backend(t, "green", nil))
	resp, err := http.Get("http://" + p.Listen + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"color": "blue"`) || resp.Header.Get("X-Bgd-Slot") != "blue" {
		t.Fatalf("/health: %d %q slot=%q", resp.StatusCode, body, resp.Header.Get("X-Bgd-Slot"))
	}
}

func TestProxyAnswers502WhenSlotIsDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p, _, _ := startProxy(t, deadPort, backend(t, "green", nil))
	if code, _ := get(t, p.Listen, "/"); code != http.StatusBadGateway {
		t.Fatalf("down slot: status %d, want 502", code)
	}
}

func TestBalancerFlipFailsWhenProxyNeverServesTheGeneration(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	_, _, b := startProxy(t, blue, green)
	b.ConfirmTimeout = 50 * time.Millisecond
	// The state file was not changed, so the proxy stays on generation 0.
	r := lb.SampleRoute("app")
	r.Active, r.Standby = r.Standby, r.Active
	r.Generation = 7
	err := b.Flip(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "still serves blue") {
		t.Fatalf("Flip = %v, want not confirmed", err)
	}
}

func TestBalancerNamesAForeignProcessOnTheProxyPort(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	b := &Balancer{Listen: srv.Listener.Addr().String(), Spawn: func() (int, error) {
		t.Fatal("must not spawn a proxy over a foreign listener")
		return 0, nil
	}}
	_, err := b.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a bgd proxy") || !strings.Contains(err.Error(), "pid "+strconv.Itoa(pidSelf())) {
		t.Fatalf("Ensure = %v, want 'not a bgd proxy' naming pid %d", err, pidSelf())
	}
}

func pidSelf() int { return os.Getpid() }

// A state file that disappears (rm, or moved aside) does not move traffic.
func TestProxyKeepsRoutingWhenStateFileDisappears(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	flip(t, store, b, "green")
	if err := os.Remove(store.Path); err != nil {
		t.Fatal(err)
	}
	if err := p.reload(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("reload after rm = %v, want an error saying the file is missing", err)
	}
	if _, body := get(t, p.Listen, "/"); body != "green" {
		t.Fatalf("removing the state file moved traffic: %q", body)
	}
}

// A bgd proxy that follows another state file (another service or another
// work dir on the same port) is named and refused, never adopted.
func TestBalancerRefusesAProxyOfAnotherStateFile(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	p, _, _ := startProxy(t, blue, green)
	other := filepath.Join(t.TempDir(), "other.json")
	b := &Balancer{Listen: p.Listen, StatePath: other, Spawn: func() (int, error) {
		t.Fatal("must not spawn a second proxy on a taken port")
		return 0, nil
	}}
	_, err := b.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "follows "+p.StatePath) || !strings.Contains(err.Error(), "not "+other) {
		t.Fatalf("Ensure = %v, want a refusal naming both state files", err)
	}
}

// TestReadyMeansServing: once Ready is called, the first request is answered
// (no retry), which is what a Type=notify unit promises to what follows it.
func TestReadyMeansServing(t *testing.T) {
	store := &state.Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	if err := store.Save(state.New(1, 2)); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	calls := 0
	p := &Proxy{Service: "app", Listen: freeAddr(t), StatePath: store.Path, BluePort: 1, GreenPort: 2,
		Ready: func() { calls++; close(ready) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("proxy ended before it was ready: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Ready was never called")
	}
	b := &Balancer{Listen: p.Listen}
	if r, err := b.Route(ctx); err != nil || r.Active != config.Blue {
		t.Fatalf("the first request after Ready: %+v, %v; want it answered (blue)", r, err)
	}
	if calls != 1 {
		t.Fatalf("Ready called %d times, want once", calls)
	}
}
