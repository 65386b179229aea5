package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// testNginx is a real nginx master with its own prefix: configuration, pid
// file, error log and temp paths all live under one t.TempDir(), and it
// listens only on loopback high ports. It includes conf.d/*.conf, where the
// bgd-owned file goes.
type testNginx struct {
	bin     string
	prefix  string
	conf    string // the main nginx.conf
	pidFile string
	errLog  string
	file    string // the file bgd owns: conf.d/bgd-app.conf
	port    int    // the port bgd's default server listens on
	cmd     *exec.Cmd
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
	n := &testNginx{
		bin:     bin,
		prefix:  prefix,
		conf:    filepath.Join(prefix, "nginx.conf"),
		pidFile: filepath.Join(prefix, "nginx.pid"),
		errLog:  filepath.Join(prefix, "error.log"),
		file:    filepath.Join(prefix, "conf.d", "bgd-app.conf"),
		port:    freePort(t),
	}
	for _, dir := range []string{filepath.Dir(n.file), filepath.Join(prefix, "tmp")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		// Workers would run as nobody, who cannot enter a 0700 TempDir.
		user = "user root;"
	}
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "    %s_temp_path %s;\n", kind, filepath.Join(prefix, "tmp", kind))
	}
	conf := fmt.Sprintf(`# nginx for one bgd integration test
%s
worker_processes 2;
error_log %s notice;
pid %s;
%s
events { worker_connections 1024; }
http {
    access_log off;
%s%s
    include %s/conf.d/*.conf;
}
`, user, n.errLog, n.pidFile, s.mainExtra, temps.String(), s.httpExtra, prefix)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if !s.noStart {
		n.start(t)
	}
	return n
}

// start runs the master in the foreground (daemon off) in its own process
// group, and waits for its pid file.
func (n *testNginx) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(n.bin, "-p", n.prefix, "-c", n.conf, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { n.stop(t, done) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if data, err := os.ReadFile(n.pidFile); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(cmd.Process.Pid) {
			return
		}
		select {
		case <-done:
			t.Fatalf("nginx exited at start; error log:\n%s", n.errorLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx wrote no pid file within 5s; error log:\n%s", n.errorLog())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop: SIGQUIT (graceful), then SIGKILL to the whole group after 5 s.
func (n *testNginx) stop(t testing.TB, done chan struct{}) {
	pid := n.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Logf("nginx did not stop within 5s of SIGQUIT; killing its process group")
		syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
	// Workers that outlived a killed master would hold our ports.
	syscall.Kill(-pid, syscall.SIGKILL)
}

// kill stops the master at once (for "nginx is not running" tests).
func (n *testNginx) kill(t testing.TB) {
	t.Helper()
	pid := n.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("nginx pid %d still alive 5s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *testNginx) errorLog() string {
	data, _ := os.ReadFile(n.errLog)
	return string(data)
}

// cfg is the lb.nginx configuration that drives this nginx.
func (n *testNginx) cfg() config.Nginx {
	base := []string{n.bin, "-p", n.prefix, "-c", n.conf}
	return config.Nginx{
		File:      n.file,
		Listen:    "127.0.0.1:" + strconv.Itoa(n.port),
		Test:      append(append([]string{}, base...), "-t", "-q"),
		Reload:    append(append([]string{}, base...), "-s", "reload"),
		VerifyURL: fmt.Sprintf("http://127.0.0.1:%d/", n.port),
	}
}

// url is the address clients use to reach the service through nginx.
func (n *testNginx) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", n.port) }

// nginxRoute is a Route to the given colour of a two-slot service.
func nginxRoute(active string, ports map[string]int, gen uint64) lb.Route {
	standby := config.Other(active)
	return lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: active, Host: "127.0.0.1", Port: ports[active]},
		Standby:    lb.Upstream{Color: standby, Host: "127.0.0.1", Port: ports[standby]},
		HealthPath: "/health",
		Generation: gen,
	}
}

// nginxAnswer is one request through nginx on a new connection: the slot that
// answered and the generation header.
type nginxAnswer struct {
	status     int
	slot       string // X-Slot, set by the demo app
	generation string // X-Bgd-Generation, set by nginx
	body       string
}

func nginxGet(t testing.TB, url string) nginxAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return nginxAnswer{status: resp.StatusCode, slot: resp.Header.Get("X-Slot"), generation: resp.Header.Get("X-Bgd-Generation"), body: b.String()}
}

// nginxLoad is traffic through nginx while flips happen: clients that open a new
// connection per request (GET), and keep-alive clients that POST a body on
// one reused connection each, so that Go's transport never retries a failed
// request silently (it only replays idempotent requests).
type nginxLoad struct {
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu        sync.Mutex
	newConn   nginxLoadCount
	keepAlive nginxLoadCount
}

type nginxLoadCount struct {
	requests, failures int
	reusedFailures     int      // failures on a connection that had served before
	samples            []string // the first few failures
	slots              map[string]int
}

func (c *nginxLoadCount) add(slot string, err error, reused bool) {
	c.requests++
	if c.slots == nil {
		c.slots = map[string]int{}
	}
	if err == nil {
		c.slots[slot]++
		return
	}
	c.failures++
	if reused {
		c.reusedFailures++
	}
	if len(c.samples) < 5 {
		c.samples = append(c.samples, err.Error())
	}
}

func (c nginxLoadCount) String() string {
	return fmt.Sprintf("%d requests, %d failed (%d on reused connections), by slot %v, first failures %q",
		c.requests, c.failures, c.reusedFailures, c.slots, c.samples)
}

// startNginxLoad runs the clients until stop is called.
func startNginxLoad(url string, newConnClients, keepAliveClients int) *nginxLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &nginxLoad{cancel: cancel}
	one := func(c *http.Client, method string, body []byte) (string, bool, error) {
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		rctx, rcancel := context.WithTimeout(httptrace.WithClientTrace(ctx, trace), 5*time.Second)
		defer rcancel()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(rctx, method, url, rd)
		if err != nil {
			return "", false, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", reused, err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return "", reused, err
		case resp.StatusCode != http.StatusOK || !bytes.HasPrefix(data, []byte("demo app:")):
			return "", reused, fmt.Errorf("status %d: %q", resp.StatusCode, data)
		}
		return resp.Header.Get("X-Slot"), reused, nil
	}
	client := func(keepAlive bool) {
		defer l.done.Done()
		tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		for ctx.Err() == nil {
			var (
				slot   string
				reused bool
				err    error
			)
			if keepAlive {
				slot, reused, err = one(c, http.MethodPost, []byte("ping"))
			} else {
				slot, reused, err = one(c, http.MethodGet, nil)
			}
			if ctx.Err() != nil {
				return // a request cut short by stop is not a failure
			}
			l.mu.Lock()
			if keepAlive {
				l.keepAlive.add(slot, err, reused)
			} else {
				l.newConn.add(slot, err, reused)
			}
			l.mu.Unlock()
			if !keepAlive {
				// New connections leave TIME_WAIT sockets; do not exhaust ports.
				time.Sleep(time.Millisecond)
			}
		}
	}
	for i := 0; i < newConnClients; i++ {
		l.done.Add(1)
		go client(false)
	}
	for i := 0; i < keepAliveClients; i++ {
		l.done.Add(1)
		go client(true)
	}
	return l
}

// stop ends the load and returns the counts.
func (l *nginxLoad) stop() (newConn, keepAlive nginxLoadCount) {
	l.cancel()
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.newConn, l.keepAlive
}
