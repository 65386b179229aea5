package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

var (
	metricsAppOnce sync.Once
	metricsAppBin  string
	metricsAppErr  error
)

// metricsApp builds testdata/metricsapp (a slot app with its own /metrics,
// /monitoring and /_bgd/route) once per run.
func metricsApp(t *testing.T) string {
	t.Helper()
	metricsAppOnce.Do(func() {
		metricsAppBin = filepath.Join(filepath.Dir(bgdBin), "metricsapp")
		out, err := exec.Command("go", "build", "-o", metricsAppBin, "./testdata/metricsapp").CombinedOutput()
		if err != nil {
			metricsAppErr = fmt.Errorf("building testdata/metricsapp: %v\n%s", err, out)
		}
	})
	if metricsAppErr != nil {
		t.Fatal(metricsAppErr)
	}
	return metricsAppBin
}

// adminConfig writes a bluegreen.yml for service "app" of command behind
// the builtin proxy on 127.0.0.1:proxyPort, with admin_listen when set.
func adminConfig(t *testing.T, dir, command string, proxyPort, bluePort, greenPort int, admin string) string {
	t.Helper()
	adminLine := ""
	if admin != "" {
		adminLine = fmt.Sprintf(", admin_listen: %q", admin)
	}
	cfg := fmt.Sprintf(`state_dir: .local_context
services:
  app:
    command: [%q]
    blue: {port: %d}
    green: {port: %d}
    health: {timeout: 10s}
    stop_grace: 2s
    drain_timeout: 2s
    lb:
      driver: builtin
      builtin: {listen: "127.0.0.1:%d"%s}
`, command, bluePort, greenPort, proxyPort, adminLine)
	path := filepath.Join(dir, "bluegreen.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type answer2 struct {
	code int
	slot string
	body string
}

// fetch GETs url with client on a fresh connection.
func fetch(t *testing.T, client *http.Client, url string) answer2 {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return answer2{resp.StatusCode, resp.Header.Get("X-Bgd-Slot"), string(body)}
}

var tcpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// socketClient reaches an HTTP server on the unix socket path (any URL's
// host). A test's directory is too deep for a unix socket address (108
// bytes), so it dials the socket through its open directory.
func socketClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dir, err := os.Open(filepath.Dir(path))
			if err != nil {
				return nil, err
			}
			defer dir.Close()
			var d net.Dialer
			return d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)))
		}}}
}

// TestBuiltinAdminListenLeavesAppPathsToTheApp: a real `bgd proxy` (started
// by bgd start) in front of a real slot whose app serves its own /metrics,
// /monitoring and /_bgd/route. On the service port they are the app's; the
// proxy's own are on admin_listen: by default a unix socket of mode 0600
// beside the state file, or a loopback port. bgd status, deploy's flip
// and the proxy's confirmation go through the admin address.
func TestBuiltinAdminListenLeavesAppPathsToTheApp(t *testing.T) {
	app := metricsApp(t)
	env := []string{"NO_COLOR=1"}
	for _, tc := range []struct {
		name  string
		admin func(dir string) string // admin_listen; "" leaves it out
	}{
		{"default unix socket", func(string) string { return "" }},
		{"loopback port", func(string) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			proxyPort, bluePort, greenPort := freePort(t), freePort(t), freePort(t)
			admin := tc.admin(dir)
			cfg := adminConfig(t, dir, app, proxyPort, bluePort, greenPort, admin)
			statePath := filepath.Join(dir, ".local_context", "bg_state.json")
			stopAll(t, statePath)
			mustBgd(t, dir, env, "--config", cfg, "start", "blue")

			adminClient, adminBase := tcpClient, "http://"+admin
			sock := filepath.Join(dir, ".local_context", "app.admin.sock")
			if admin == "" {
				fi, err := os.Stat(sock)
				if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
					t.Fatalf("the default admin socket %s: %v, %v; want a socket of mode 0600", sock, fi, err)
				}
				adminClient, adminBase = socketClient(sock), "http://admin"
			} else if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("admin_listen %s, yet a socket %s exists: %v", admin, sock, err)
			}

			svc := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
			for _, path := range []string{"/metrics", "/monitoring", "/_bgd/route"} {
				a := fetch(t, tcpClient, svc+path)
				if a.code != 200 || a.slot != "blue" || (path == "/metrics" && !strings.Contains(a.body, `metricsapp_requests_total{color="blue"}`)) ||
					(path != "/metrics" && a.body != "metricsapp blue "+path+"\n") {
					t.Errorf("GET %s on the service port: %d from slot %q: %q; want the blue app's own answer", path, a.code, a.slot, a.body)
				}
			}
			m := fetch(t, adminClient, adminBase+"/metrics")
			if m.code != 200 || !strings.Contains(m.body, `bgd_proxy_requests_total{code="200",service="app",slot="blue"} 3`) {
				t.Errorf("/metrics on the admin address: %d; want the proxy's count of the 3 requests:\n%s", m.code, m.body)
			}
			if mon := fetch(t, adminClient, adminBase+"/monitoring"); mon.code != 200 || !strings.Contains(mon.body, "<html") {
				t.Errorf("/monitoring on the admin address: %d %.200q", mon.code, mon.body)
			}
			var ri struct{ Active, Admin string }
			if r := fetch(t, adminClient, adminBase+"/_bgd/route"); r.code != 200 || json.Unmarshal([]byte(r.body), &ri) != nil || ri.Active != "blue" || ri.Admin == "" {
				t.Errorf("/_bgd/route on the admin address: %d %q", r.code, r.body)
			}

			var st struct {
				Proxy struct {
					Running bool
					Admin   string
				}
			}
			if out := mustBgd(t, dir, env, "--config", cfg, "--json", "status"); json.Unmarshal([]byte(out), &st) != nil || !st.Proxy.Running || st.Proxy.Admin == "" {
				t.Errorf("bgd status --json: the proxy is not running with an admin address:\n%s", out)
			}
			if out := mustBgd(t, dir, env, "--config", cfg, "status"); !strings.Contains(out, ", admin endpoints on "+st.Proxy.Admin) {
				t.Errorf("bgd status does not name the admin address %s:\n%s", st.Proxy.Admin, out)
			}
			mustBgd(t, dir, env, "--config", cfg, "deploy", "--release", "r2")
			if a := fetch(t, tcpClient, svc+"/metrics"); a.slot != "green" || !strings.Contains(a.body, `metricsapp_requests_total{color="green"}`) {
				t.Errorf("after deploy, /metrics on the service port: slot %q %q; want the green app's", a.slot, a.body)
			}
			if m := fetch(t, adminClient, adminBase+"/metrics"); !strings.Contains(m.body, `bgd_proxy_active_slot{service="app",slot="green"} 1`) {
				t.Errorf("after deploy, the proxy's /metrics does not show green active:\n%s", m.body)
			}
		})
	}
}

// TestBuiltinEmbeddedDefaultKeepsAdminOnItsPort: with no config file (the
// seed's runbook; BG_PROXY_PORT gives this test its own port), the proxy's
// /metrics and /monitoring answer on the service port as they always did,
// and no admin socket is made.
func TestBuiltinEmbeddedDefaultKeepsAdminOnItsPort(t *testing.T) {
	dir := t.TempDir()
	env, proxyPort, _, _ := seedEnv(t)
	env = append(env, "BG_CONFIG=")
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	mustBgd(t, dir, env, "start", "blue")
	svc := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	if m := fetch(t, tcpClient, svc+"/metrics"); m.code != 200 || !strings.Contains(m.body, `bgd_proxy_active_slot{service="app",slot="blue"} 1`) {
		t.Errorf(":%d/metrics: %d, not the proxy's series:\n%.500s", proxyPort, m.code, m.body)
	}
	if mon := fetch(t, tcpClient, svc+"/monitoring"); mon.code != 200 || mon.slot != "" || !strings.Contains(mon.body, "<html") {
		t.Errorf(":%d/monitoring: %d (slot %q) %.200q, want the proxy's page", proxyPort, mon.code, mon.slot, mon.body)
	}
	if a := fetch(t, tcpClient, svc+"/"); a.slot != "blue" || !strings.Contains(a.body, "color=blue") {
		t.Errorf(":%d/: slot %q %q, want the blue demo app", proxyPort, a.slot, a.body)
	}
	if socks, _ := filepath.Glob(filepath.Join(dir, ".local_context", "*.sock")); len(socks) > 0 {
		t.Errorf("the embedded default made admin sockets %v", socks)
	}
}

// oldBgd builds the bgd of the commit before admin_listen came (the parent
// of the commit that added lb/builtin/admin.go), from this repository's
// own history.
func oldBgd(t *testing.T) string {
	t.Helper()
	git := requireBinary(t, "git")
	logCmd := exec.Command(git, "log", "--diff-filter=A", "--format=%H", "--", "lb/builtin/admin.go")
	logCmd.Dir = ".." // the repository's root: git archive takes the tree of its working directory
	log, err := logCmd.Output()
	commits := strings.Fields(string(log))
	if err != nil || len(commits) == 0 {
		t.Skipf("no git history of lb/builtin/admin.go to build an older bgd from (%v)", err)
	}
	archiveCmd := exec.Command(git, "archive", "--format=tar", commits[len(commits)-1]+"^")
	archiveCmd.Dir = ".."
	archive, err := archiveCmd.Output()
	if err != nil {
		t.Fatalf("git archive of the commit before admin_listen: %v", err)
	}
	src := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(src, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(path), 0o755)
			data, _ := io.ReadAll(tr)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	bin := filepath.Join(t.TempDir(), "bgd-old")
	build := exec.Command("go", "build", "-o", bin, "./cmd/bgd")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the older bgd: %v\n%s", err, out)
	}
	return bin
}

// TestBuiltinOlderProxyIsNamed: a `bgd proxy` of the bgd before
// admin_listen (a real build of that commit) holds the service port and
// serves its admin endpoints there. This bgd, which asks the admin socket,
// says so and to restart it: in bgd status, and in bgd start, which does
// not start a second proxy beside it.
func TestBuiltinOlderProxyIsNamed(t *testing.T) {
	old := oldBgd(t)
	dir := t.TempDir()
	proxyPort, bluePort, greenPort := freePort(t), freePort(t), freePort(t)
	cfg := adminConfig(t, dir, metricsApp(t), proxyPort, bluePort, greenPort, "")
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	proxy := exec.Command(old, "--config", cfg, "proxy")
	proxy.Dir = dir
	var log bytes.Buffer
	proxy.Stdout, proxy.Stderr = &log, &log
	older, err := testsupport.Start("older bgd proxy", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { older.Stop(syscall.SIGTERM, 5*time.Second) })
	waitListening(t, proxyPort, 5*time.Second)
	if r := fetch(t, tcpClient, fmt.Sprintf("http://127.0.0.1:%d/_bgd/route", proxyPort)); r.code != 200 || strings.Contains(r.body, `"admin"`) {
		t.Fatalf("the older proxy does not serve /_bgd/route on its port as expected: %d %q\n%s", r.code, r.body, log.String())
	}
	pid := strconv.Itoa(proxy.Process.Pid)

	out, errOut, _ := bgd(t, dir, []string{"NO_COLOR=1"}, "--config", cfg, "--json", "status")
	var st struct {
		Proxy struct {
			Running bool
			Error   string
		}
	}
	json.Unmarshal([]byte(out), &st)
	if st.Proxy.Running || !strings.Contains(st.Proxy.Error, "older than lb.builtin.admin_listen") ||
		!strings.Contains(st.Proxy.Error, "pid "+pid) || !strings.Contains(st.Proxy.Error, "restart it") {
		t.Errorf("bgd status with an older proxy on the port: proxy %+v\nstdout %s\nstderr %s", st.Proxy, out, errOut)
	}
	out, errOut, code := bgd(t, dir, []string{"NO_COLOR=1"}, "--config", cfg, "start", "blue")
	if code == 0 || !strings.Contains(errOut, "older than lb.builtin.admin_listen") || !strings.Contains(errOut, "restart it") {
		t.Errorf("bgd start with an older proxy on the port: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if older.Exited() {
		t.Errorf("the older proxy exited: %s", log.String())
	}
}
