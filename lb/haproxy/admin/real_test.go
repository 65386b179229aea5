package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// startHAProxy runs a real HAProxy in master-worker mode with an admin
// socket, two checked backends on httptest servers and one map, all under a
// temp dir; it is stopped when the test ends.
func startHAProxy(t *testing.T) (sock, mapFile string) {
	t.Helper()
	bin := testsupport.RequireBinary(t, "haproxy")
	dir := shortDir(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	t.Cleanup(down.Close)
	sock, mapFile = filepath.Join(dir, "admin.sock"), filepath.Join(dir, "bgd.map")
	if err := os.WriteFile(mapFile, []byte("# bgd\napp app_blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := fmt.Sprintf(`global
    stats socket %[1]s mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:%[2]d
    use_backend %%[str(app),map(%[3]s)]
backend app_blue
    option httpchk GET /health
    server blue %[4]s check inter 100ms rise 1 fall 2
backend app_green
    option httpchk GET /health
    server green %[5]s check inter 100ms rise 1 fall 2
`, sock, port, mapFile, strings.TrimPrefix(up.URL, "http://"), strings.TrimPrefix(down.URL, "http://"))
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := testsupport.StartHAProxy(bin, dir, testsupport.HAProxyOptions{Files: []string{cfgPath}, Sockets: []string{sock}, MasterWorker: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy output:\n%s", h.Output())
		}
		h.Stop()
	})
	return sock, mapFile
}

// TestRealHAProxy runs every typed helper against HAProxy itself.
func TestRealHAProxy(t *testing.T) {
	sock, mapFile := startHAProxy(t)
	c, ctx := New(sock), context.Background()

	backends, err := c.ShowBackends(ctx)
	if err != nil || !slices.Contains(backends, "app_blue") || !slices.Contains(backends, "app_green") {
		t.Fatalf("ShowBackends: %q, %v", backends, err)
	}

	// HAProxy's own checks: blue answers 200, green 503.
	deadline := time.Now().Add(5 * time.Second)
	for {
		blue, err1 := c.ShowStat(ctx, "app_blue")
		green, err2 := c.ShowStat(ctx, "app_green")
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if len(blue) == 1 && blue[0].Up() && len(green) == 1 && strings.HasPrefix(green[0].Status, "DOWN") {
			if green[0].CheckStatus != "L7STS" {
				t.Errorf("green check status %q, want L7STS", green[0].CheckStatus)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checks never settled: blue %+v green %+v", blue, green)
		}
		time.Sleep(50 * time.Millisecond)
	}
	all, err := c.ShowStat(ctx, "")
	if err != nil || len(all) != 5 { // fe, 2 backends, 2 servers
		t.Errorf("ShowStat all: %d rows, %v", len(all), err)
	}
	maps, err := c.ShowMaps(ctx)
	if err != nil || len(maps) != 1 || maps[0].File != mapFile {
		t.Errorf("ShowMaps: %+v, %v", maps, err)
	}
	m, err := c.GetMap(ctx, mapFile, "app")
	if err != nil || m != (MapLookup{Found: true, Key: "app", Value: "app_blue"}) {
		t.Errorf("GetMap: %+v, %v", m, err)
	}
	if err := c.SetMap(ctx, mapFile, "app", "app_green"); err != nil {
		t.Fatal(err)
	}
	if m, _ := c.GetMap(ctx, mapFile, "app"); m.Value != "app_green" {
		t.Errorf("after SetMap: %+v", m)
	}
	if err := c.SetMap(ctx, mapFile, "other", "x"); !errors.Is(err, ErrEntryNotFound) {
		t.Errorf("SetMap of a missing key: %v, want ErrEntryNotFound", err)
	}
	if m, _ := c.GetMap(ctx, mapFile, "other"); m.Found {
		t.Errorf("missing key found: %+v", m)
	}
	if err := c.AddMap(ctx, mapFile, "other", "app_blue"); err != nil {
		t.Fatal(err)
	}
	if m, err := c.GetMap(ctx, mapFile, "other"); err != nil || !m.Found || m.Value != "app_blue" {
		t.Errorf("after AddMap: %+v, %v", m, err)
	}
	if err := c.DelMap(ctx, mapFile, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetMap(ctx, mapFile+".nope", "app"); !errors.Is(err, ErrUnknownMap) {
		t.Errorf("GetMap of a map HAProxy did not load: %v, want ErrUnknownMap", err)
	}
	if err := c.SetMap(ctx, mapFile+".nope", "app", "x"); !errors.Is(err, ErrUnknownMap) {
		t.Errorf("SetMap of a map HAProxy did not load: %v, want ErrUnknownMap", err)
	}
	if _, err := c.Exec(ctx, "show nothing-at-all"); err != nil {
		t.Errorf("Exec of an unknown command: %v (the answer is data to Exec)", err)
	}
	if err := c.Do(ctx, "show nothing-at-all"); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("Do of an unknown command: %v, want ErrUnknownCommand", err)
	}
}

// TestRealHAProxyWeights: set weight and get weight against HAProxy itself,
// with its own error texts for what it refuses.
func TestRealHAProxyWeights(t *testing.T) {
	sock, _ := startHAProxy(t)
	c, ctx := New(sock), context.Background()
	w, err := c.GetWeight(ctx, "app_blue", "blue")
	if err != nil || w != (Weight{Current: 1, Initial: 1}) {
		t.Fatalf("GetWeight before: %+v, %v; want 1 (initial 1)", w, err)
	}
	for _, n := range []int{90, 0, MaxWeight} {
		if err := c.SetWeight(ctx, "app_blue", "blue", n); err != nil {
			t.Fatalf("SetWeight %d: %v", n, err)
		}
		if w, err := c.GetWeight(ctx, "app_blue", "blue"); err != nil || w != (Weight{Current: n, Initial: 1}) {
			t.Errorf("GetWeight after SetWeight %d: %+v, %v", n, w, err)
		}
	}
	var ce *CommandError
	if err := c.SetWeight(ctx, "app_blue", "nope", 5); !errors.As(err, &ce) || ce.Answer != "No such server." {
		t.Errorf("SetWeight of a missing server: %v", err)
	}
	if _, err := c.GetWeight(ctx, "nope", "blue"); !errors.As(err, &ce) || ce.Answer != "No such backend." {
		t.Errorf("GetWeight of a missing backend: %v", err)
	}
	// What the client refuses, HAProxy refuses too.
	if err := c.Do(ctx, "set weight app_blue/blue 257"); !errors.As(err, &ce) || !strings.Contains(ce.Answer, "between 0 and 256") {
		t.Errorf("set weight 257 straight to HAProxy: %v", err)
	}
}
