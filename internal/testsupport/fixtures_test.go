package testsupport

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/freeport"
)

// Ports of this package's own tests: 32000-32767, below the ephemeral
// range and apart from the ranges internal/freeport gives other packages
// whose tests run at the same time.
func testPort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Pick(32000, 32768)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// slot is a stand-in demo app: it answers as `bgd demo-app` does.
func slot(t *testing.T, color string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Slot", color)
		fmt.Fprintf(w, "demo app: color=%s release=test\n", color)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// TestHAProxy starts HAProxy in master-worker mode from a file of the
// caller's own (a second global section with the admin socket, as
// lb/haproxy/runtime's tests need), reloads it and restarts it.
func TestHAProxy(t *testing.T) {
	bin := RequireBinary(t, "haproxy")
	dir, err := os.MkdirTemp("", "bgd-ts-") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, port := filepath.Join(dir, "admin.sock"), testPort(t)
	cfg := filepath.Join(dir, "app.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    stats socket %s mode 600 level admin
frontend fe
    bind 127.0.0.1:%d
    default_backend app_blue
backend app_blue
    server blue %s
`, sock, port, slot(t, "blue"))), 0o644)
	h, err := StartHAProxy(bin, dir, HAProxyOptions{Files: []string{cfg}, Sockets: []string{sock}, MasterWorker: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if by, err := AnsweredBy(url); by != "blue" || err != nil {
		t.Fatalf("through HAProxy: %q, %v", by, err)
	}
	if ans, err := HAProxyCommand(sock, "show backend"); err != nil || !strings.Contains(ans, "app_blue") {
		t.Fatalf("show backend: %q, %v", ans, err)
	}
	before, err := h.Workers()
	if err != nil || len(before) != 1 {
		t.Fatalf("workers: %q, %v", before, err)
	}
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	after, _ := h.Workers()
	if strings.Join(after, " ") == strings.Join(before, " ") {
		t.Errorf("no new worker after Reload: %q", after)
	}
	if err := h.Restart(); err != nil {
		t.Fatal(err)
	}
	if by, err := AnsweredBy(url); by != "blue" || err != nil {
		t.Fatalf("after Restart: %q, %v\n%s", by, err, h.Output())
	}
}

// TestHAProxyRejects: a configuration haproxy -c refuses starts nothing.
func TestHAProxyRejects(t *testing.T) {
	bin := RequireBinary(t, "haproxy")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.cfg")
	os.WriteFile(cfg, []byte("frontend fe\n    no-such-keyword\n"), 0o644)
	if h, err := StartHAProxy(bin, dir, HAProxyOptions{Files: []string{cfg}}); err == nil || !strings.Contains(err.Error(), "haproxy -c rejects") {
		if h != nil {
			h.Stop()
		}
		t.Fatalf("StartHAProxy of a bad file: %v", err)
	}
}

// TestNginxAndLoad serves a site file through a real nginx, loads it from
// both kinds of Go client and kills nginx.
func TestNginxAndLoad(t *testing.T) {
	bin := RequireBinary(t, "nginx")
	n, err := NewNginx(bin, t.TempDir(), NginxOptions{MainExtra: "worker_shutdown_timeout 1s;"})
	if err != nil {
		t.Fatal(err)
	}
	port := testPort(t)
	os.WriteFile(filepath.Join(n.Prefix, "conf.d", "site.conf"), []byte(fmt.Sprintf(
		"server {\n    listen 127.0.0.1:%d;\n    location / { proxy_pass http://%s; }\n}\n", port, slot(t, "green"))), 0o644)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	if err := WaitListening(port, 5*time.Second, n.Proc()); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	fresh := StartLoad(url, LoadOptions{Clients: 2, Pause: time.Millisecond})
	alive := StartLoad(url, LoadOptions{Clients: 2, KeepAlive: true})
	time.Sleep(300 * time.Millisecond)
	nc, ka := fresh.Stop(), alive.Stop()
	fresh.Stop() // a second Stop is harmless
	for name, c := range map[string]LoadCount{"new-connection": nc, "keep-alive": ka} {
		if c.Failures != 0 || c.Requests == 0 || c.Slots["green"] != c.Requests {
			t.Errorf("%s clients: %s", name, c)
		}
	}
	if nc.Reused != 0 || ka.Requests >= 4 && ka.Reused < ka.Requests/2 {
		t.Errorf("connection reuse: new-connection %d of %d, keep-alive %d of %d", nc.Reused, nc.Requests, ka.Reused, ka.Requests)
	}
	if out, err := execOut(n.Command("-t", "-q")...); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}
	n.Kill()
	if !n.Proc().Exited() {
		t.Error("the nginx master runs after Kill")
	}
	// Its workers got SIGKILL too; they may take a moment to go.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("nginx still listens 5s after Kill")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoadFailures: a server that is not the demo app fails every request.
func TestLoadFailures(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }))
	defer s.Close()
	l := StartLoad(s.URL, LoadOptions{Clients: 1, KeepAlive: true})
	time.Sleep(50 * time.Millisecond)
	c := l.Stop()
	if c.Requests == 0 || c.Failures != c.Requests || len(c.Samples) == 0 || !strings.Contains(c.Samples[0], "status 502") {
		t.Errorf("%s", c)
	}
	if _, err := AnsweredBy(s.URL); err == nil || !strings.Contains(err.Error(), "status 502") {
		t.Errorf("AnsweredBy: %v", err)
	}
}

func execOut(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}
