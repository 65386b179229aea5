package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
)

// testNginx is a real nginx master with its own prefix under t.TempDir()
// (see testsupport.Nginx), listening only on loopback high ports. It
// includes conf.d/*.conf, where the bgd-owned file goes.
type testNginx struct {
	*testsupport.Nginx
	file string // the file bgd owns: conf.d/bgd-app.conf
	port int    // the port bgd's default server listens on
}

// nginxSetup says how to write the main configuration.
type nginxSetup struct {
	// mainExtra is added to the main context (e.g. worker_shutdown_timeout 1s;).
	mainExtra string
	// httpExtra is added to the http context.
	httpExtra string
	// noStart writes the configuration but starts no master.
	noStart bool
}

// newNginx prepares (and unless s.noStart, starts) an nginx until the test ends.
func newNginx(t testing.TB, s nginxSetup) *testNginx {
	t.Helper()
	bin := requireBinary(t, "nginx")
	prefix := t.TempDir()
	ng, err := testsupport.NewNginx(bin, prefix, testsupport.NginxOptions{
		MainExtra: s.mainExtra, HTTPExtra: s.httpExtra, Output: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	n := &testNginx{Nginx: ng, file: filepath.Join(prefix, "conf.d", "bgd-app.conf"), port: freePort(t)}
	if !s.noStart {
		n.start(t)
	}
	return n
}

// start runs the master until the test ends.
func (n *testNginx) start(t testing.TB) {
	t.Helper()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
}

// kill stops the master at once (for "nginx is not running" tests).
func (n *testNginx) kill(t testing.TB) {
	t.Helper()
	n.Kill()
}

func (n *testNginx) errorLog() string { return n.ErrorLog() }

// cfg is the lb.nginx configuration that drives this nginx.
func (n *testNginx) cfg() config.Nginx {
	return config.Nginx{
		File:      n.file,
		Listen:    "127.0.0.1:" + strconv.Itoa(n.port),
		Test:      n.Command("-t", "-q"),
		Reload:    n.Command("-s", "reload"),
		VerifyURL: fmt.Sprintf("http://127.0.0.1:%d/", n.port),
	}
}

// url is the address clients use to reach the service through nginx.
func (n *testNginx) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", n.port) }

// nginxRoute is a Route to the given colour of a two-slot service.
func nginxRoute(active string, ports map[string]int, gen uint64) lb.Route {
	standby := config.Color(active).Other().String()
	return lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: config.Color(active), Host: "127.0.0.1", Port: ports[active]},
		Standby:    lb.Upstream{Color: config.Color(standby), Host: "127.0.0.1", Port: ports[standby]},
		HealthPath: "/health",
		Generation: gen,
	}
}

// nginxGet is one request through nginx on a new connection: the slot that
// answered and the generation header.
func nginxGet(t testing.TB, url string) testsupport.Answer {
	t.Helper()
	a, err := testsupport.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return a
}

// nginxLoad is traffic through nginx while flips happen: clients that open a
// new connection per request (GET), and keep-alive clients that POST a body
// on one reused connection each (testsupport.Load).
type nginxLoad struct{ newConn, keepAlive *testsupport.Load }

// startNginxLoad runs the clients until stop is called.
func startNginxLoad(url string, newConnClients, keepAliveClients int) *nginxLoad {
	return &nginxLoad{
		// New connections leave TIME_WAIT sockets; do not exhaust ports.
		newConn:   testsupport.StartLoad(url, testsupport.LoadOptions{Clients: newConnClients, Pause: time.Millisecond}),
		keepAlive: testsupport.StartLoad(url, testsupport.LoadOptions{Clients: keepAliveClients, KeepAlive: true}),
	}
}

// stop ends the load and returns the counts.
func (l *nginxLoad) stop() (newConn, keepAlive testsupport.LoadCount) {
	return l.newConn.Stop(), l.keepAlive.Stop()
}
