package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/nginx"
	"github.com/bgd-dev/bgd/templates"
)

// nginxPair starts a real nginx and the two demo-app slots of service app.
func nginxPair(t *testing.T, s nginxSetup) (*testNginx, map[string]int) {
	t.Helper()
	n := newNginx(t, s)
	ports := map[string]int{"blue": freePort(t), "green": freePort(t)}
	startDemoApp(t, ports["blue"], "blue", "v1")
	startDemoApp(t, ports["green"], "green", "v2")
	return n, ports
}

func newNginxBalancer(t *testing.T, cfg config.Nginx, o nginx.Options) *nginx.Balancer {
	t.Helper()
	b, err := nginx.New("app", cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNginxFlip: the first flip creates the file, each flip is confirmed by
// nginx itself, and the very next request on a new connection goes to the
// new slot; Active reads the colour back from nginx; Render is the file.
func TestNginxFlip(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{})
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	for gen, col := range []string{"blue", "green", "blue"} {
		r := nginxRoute(col, ports, uint64(gen+1))
		start := time.Now()
		if err := b.Flip(ctx, r); err != nil {
			t.Fatalf("flip to %s: %v\nerror log:\n%s", col, err, n.errorLog())
		}
		t.Logf("flip to %s confirmed in %s", col, time.Since(start).Round(time.Millisecond))
		got := nginxGet(t, n.url())
		if got.Slot != col || got.Generation != strconv.Itoa(gen+1) {
			t.Fatalf("after flip to %s (generation %d): answer from %q, generation %q", col, gen+1, got.Slot, got.Generation)
		}
		if !strings.Contains(got.Body, "color="+col) {
			t.Fatalf("body %q does not name %s", got.Body, col)
		}
		active, err := b.Active(ctx)
		if err != nil || active != config.Color(col) {
			t.Fatalf("Active = %q, %v; want %s", active, err, col)
		}
		want, err := b.Render(r)
		if err != nil {
			t.Fatal(err)
		}
		if on, _ := os.ReadFile(n.file); !bytes.Equal(on, want) {
			t.Fatalf("the file on disk is not what Render returns:\n%s\n---\n%s", on, want)
		}
	}
	// The same flip again is idempotent.
	if err := b.Flip(ctx, nginxRoute("blue", ports, 3)); err != nil {
		t.Fatalf("repeated flip: %v", err)
	}
}

// nginxUserTemplate writes the default template with extra lines added inside
// its server block and returns its path.
func nginxUserTemplate(t *testing.T, serverExtra string) string {
	t.Helper()
	text := strings.Replace(templates.Nginx, "    listen {{.Listen}};\n", "    listen {{.Listen}};\n    "+serverExtra+"\n", 1)
	if text == templates.Nginx {
		t.Fatal("the default template has no `listen {{.Listen}};` line to add to")
	}
	p := filepath.Join(t.TempDir(), "user.conf.tmpl")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// nginxFlipped starts nginx and both slots, and flips to blue (generation 1).
func nginxFlipped(t *testing.T) (*testNginx, map[string]int, []byte) {
	t.Helper()
	n, ports := nginxPair(t, nginxSetup{})
	if err := newNginxBalancer(t, n.cfg(), nginx.Options{}).Flip(context.Background(), nginxRoute("blue", ports, 1)); err != nil {
		t.Fatalf("first flip: %v\nerror log:\n%s", err, n.errorLog())
	}
	before, err := os.ReadFile(n.file)
	if err != nil {
		t.Fatal(err)
	}
	return n, ports, before
}

// assertUnchanged: the file is byte for byte what it was, and nginx still
// sends new connections to blue under generation 1.
func assertNginxUnchanged(t *testing.T, n *testNginx, before []byte) {
	t.Helper()
	after, err := os.ReadFile(n.file)
	if err != nil || !bytes.Equal(after, before) {
		t.Fatalf("%s was not restored byte for byte (%v):\n%s", n.file, err, after)
	}
	for i := 0; i < 5; i++ {
		if got := nginxGet(t, n.url()); got.Slot != "blue" || got.Generation != "1" {
			t.Fatalf("traffic moved: answer from %q under generation %q", got.Slot, got.Generation)
		}
	}
}

// reloads counts the reloads the master has logged.
func (n *testNginx) reloads() int {
	return strings.Count(n.errorLog(), "reconfiguring")
}

// TestNginxRejectedTemplate: a user template whose output nginx -t refuses:
// the error carries nginx's own message, the previous file is restored byte
// for byte, nothing is reloaded, traffic stays where it was.
func TestNginxRejectedTemplate(t *testing.T) {
	t.Parallel()
	n, ports, before := nginxFlipped(t)
	cfg := n.cfg()
	cfg.Template = nginxUserTemplate(t, "bogus_directive on;")
	b := newNginxBalancer(t, cfg, nginx.Options{})
	reloads := n.reloads()
	err := b.Flip(context.Background(), nginxRoute("green", ports, 2))
	t.Logf("error: %v", err)
	if !errors.Is(err, nginx.ErrRejected) || !strings.Contains(err.Error(), `unknown directive "bogus_directive"`) {
		t.Fatalf("Flip = %v; want nginx.ErrRejected with nginx's message", err)
	}
	if got := n.reloads(); got != reloads {
		t.Fatalf("nginx was reloaded %d times after a rejected file", got-reloads)
	}
	assertNginxUnchanged(t, n, before)
}

// TestNginxTemplateDoesNotParse: a template that is not valid text/template
// is a config error from New; nothing is written, nginx is untouched.
func TestNginxTemplateDoesNotParse(t *testing.T) {
	t.Parallel()
	n, _, before := nginxFlipped(t)
	cfg := n.cfg()
	cfg.Template = nginxUserTemplate(t, "add_header X-Broken {{.Generation;")
	fi, _ := os.Stat(n.file)
	_, err := nginx.New("app", cfg, nginx.Options{})
	t.Logf("error: %v", err)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "does not parse") || !strings.Contains(err.Error(), cfg.Template) {
		t.Fatalf("New = %v; want config.ErrInvalid naming the template", err)
	}
	if fi2, _ := os.Stat(n.file); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the file was rewritten")
	}
	assertNginxUnchanged(t, n, before)
}

// TestNginxNotRunning: no master (never started, or gone with a stale pid
// file): the error says so with the reload command's output, wraps
// lb.ErrUnreachable, and the file is as it was.
func TestNginxNotRunning(t *testing.T) {
	t.Parallel()
	t.Run("never started", func(t *testing.T) {
		n := newNginx(t, nginxSetup{noStart: true})
		ports := map[string]int{"blue": freePort(t), "green": freePort(t)}
		b := newNginxBalancer(t, n.cfg(), nginx.Options{})
		err := b.Flip(context.Background(), nginxRoute("blue", ports, 1))
		t.Logf("error: %v", err)
		if !errors.Is(err, lb.ErrUnreachable) || !strings.Contains(err.Error(), n.PidFile) {
			t.Fatalf("Flip = %v; want lb.ErrUnreachable naming %s", err, n.PidFile)
		}
		if _, err := os.Stat(n.file); err == nil {
			t.Fatalf("%s was left behind", n.file)
		}
		if _, err := b.Active(context.Background()); !errors.Is(err, lb.ErrUnreachable) {
			t.Fatalf("Active = %v; want lb.ErrUnreachable", err)
		}
	})
	t.Run("master gone", func(t *testing.T) {
		n, ports, before := nginxFlipped(t)
		n.kill(t)
		err := newNginxBalancer(t, n.cfg(), nginx.Options{}).Flip(context.Background(), nginxRoute("green", ports, 2))
		t.Logf("error: %v", err)
		if !errors.Is(err, lb.ErrUnreachable) || !strings.Contains(err.Error(), "No such process") {
			t.Fatalf("Flip = %v; want lb.ErrUnreachable with the reload's output", err)
		}
		if after, _ := os.ReadFile(n.file); !bytes.Equal(after, before) {
			t.Fatalf("file not restored:\n%s", after)
		}
	})
}

// TestNginxReloadKeepsOldConfig: a file nginx -t accepts but the master
// cannot apply (a listen port already in use): the reload exits 0, nginx
// keeps its old configuration, the generation probe notices, the previous
// file is restored and reloaded, and the error says so.
func TestNginxReloadKeepsOldConfig(t *testing.T) {
	t.Parallel()
	n, ports, before := nginxFlipped(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	cfg := n.cfg()
	cfg.Template = nginxUserTemplate(t, "listen "+busy.Addr().String()+";")
	b := newNginxBalancer(t, cfg, nginx.Options{VerifyTimeout: time.Second})
	reloads := n.reloads()
	start := time.Now()
	err = b.Flip(context.Background(), nginxRoute("green", ports, 2))
	t.Logf("error after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, lb.ErrNotConfirmed) || !strings.Contains(err.Error(), "kept its previous configuration") {
		t.Fatalf("Flip = %v; want lb.ErrNotConfirmed", err)
	}
	if !strings.Contains(n.errorLog(), "Address already in use") {
		t.Fatalf("nginx did not log the bind failure this test is about:\n%s", n.errorLog())
	}
	if got := n.reloads() - reloads; got != 2 {
		t.Fatalf("%d reloads; want 2 (the flip and the restore)", got)
	}
	assertNginxUnchanged(t, n, before)
	if col, err := b.Active(context.Background()); err != nil || col != "blue" {
		t.Fatalf("Active = %q, %v; want blue", col, err)
	}
}

// TestNginxAcceptsGoldenFiles: every golden file of lb/nginx is a valid
// nginx configuration, as nginx itself says.
func TestNginxAcceptsGoldenFiles(t *testing.T) {
	t.Parallel()
	goldens, _ := filepath.Glob("../lb/nginx/testdata/*.golden")
	if len(goldens) == 0 {
		t.Fatal("no golden files found")
	}
	for _, g := range goldens {
		n := newNginx(t, nginxSetup{noStart: true})
		data, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(n.file, data, 0o644)
		cfg := n.cfg()
		if out, err := exec.Command(cfg.Test[0], cfg.Test[1:]...).CombinedOutput(); err != nil {
			t.Errorf("nginx -t rejects %s: %v\n%s", g, err, out)
		}
	}
}

// TestNginxLoad flips 20 times under load through a real nginx. Clients that
// open a new connection per request must see zero failures. Keep-alive
// clients POST (never retried by Go's transport), so every request an nginx
// reload breaks is counted; the count is printed, not asserted to be zero:
// nginx 1.22 closes idle keep-alive connections on every reload.
//
// To measure other settings, set BGD_NGINX_LOAD_MAIN (directives for nginx's
// main context, e.g. "worker_shutdown_timeout 1s;") and BGD_NGINX_LOAD_SERVER
// (directives added to the default template's server block, e.g.
// "keepalive_timeout 0;").
func TestNginxLoad(t *testing.T) {
	// Not parallel: the numbers should not depend on the other tests.
	const flips, newConnClients, keepAliveClients = 20, 4, 4
	serverExtra := os.Getenv("BGD_NGINX_LOAD_SERVER")
	n, ports := nginxPair(t, nginxSetup{mainExtra: os.Getenv("BGD_NGINX_LOAD_MAIN")})
	cfg := n.cfg()
	if serverExtra != "" {
		cfg.Template = nginxUserTemplate(t, serverExtra)
	}
	b := newNginxBalancer(t, cfg, nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatal(err)
	}
	l := startNginxLoad(n.url(), newConnClients, keepAliveClients)
	time.Sleep(200 * time.Millisecond)
	var took []time.Duration
	stale := 0
	for i := 2; i <= flips+1; i++ {
		col := config.Colors[i%2].String()
		start := time.Now()
		if err := b.Flip(ctx, nginxRoute(col, ports, uint64(i))); err != nil {
			l.stop()
			t.Fatalf("flip %d to %s: %v", i, col, err)
		}
		took = append(took, time.Since(start))
		// Once Flip returns, new connections go to the new slot. An old
		// worker of a busy nginx may still take one for a moment (the old
		// slot answers it: nothing fails); count those, and fail if it lasts.
		for k := 0; k < 3; k++ {
			if got := nginxGet(t, n.url()); got.Slot != col || got.Generation != strconv.Itoa(i) {
				stale++
				t.Logf("%s after flip %d to %s returned: answer from %q under generation %q",
					time.Since(start)-took[len(took)-1], i, col, got.Slot, got.Generation)
			}
		}
		if got := nginxGet(t, n.url()); time.Since(start)-took[len(took)-1] > 500*time.Millisecond && got.Generation != strconv.Itoa(i) {
			l.stop()
			t.Fatalf("more than 500ms after flip %d to %s returned, nginx still answers under generation %q", i, col, got.Generation)
		}
		time.Sleep(100 * time.Millisecond) // traffic between flips
	}
	nc, ka := l.stop()
	slices.Sort(took)
	t.Logf("settings: main %q, server %q", os.Getenv("BGD_NGINX_LOAD_MAIN"), serverExtra)
	t.Logf("flip latency over %d flips under load: median %s, max %s", flips,
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	t.Logf("new connections answered by the old generation right after Flip returned: %d of %d", stale, 3*flips)
	t.Logf("new-connection clients (%d): %s", newConnClients, nc)
	t.Logf("keep-alive clients (%d, POST): %s", keepAliveClients, ka)
	if nc.Failures != 0 {
		t.Errorf("%d requests on new connections failed during flips", nc.Failures)
	}
	if nc.Slots["blue"] == 0 || nc.Slots["green"] == 0 || ka.Slots["blue"] == 0 || ka.Slots["green"] == 0 {
		t.Errorf("traffic did not reach both slots: %v, %v", nc.Slots, ka.Slots)
	}
	// A reload breaks at most the idle connections it closes: one per
	// keep-alive client per flip. Anything else is a real failure.
	if ka.Failures != ka.ReusedFailures {
		t.Errorf("%d keep-alive requests failed on fresh connections", ka.Failures-ka.ReusedFailures)
	}
	if ka.Failures > keepAliveClients*flips {
		t.Errorf("%d keep-alive failures: more than one per client per flip", ka.Failures)
	}
}

// TestNginxCLI drives a real nginx with the bgd CLI, slots being real
// demo-app processes: start blue, deploy a release to green, switch back to
// blue, roll back to green; traffic through nginx follows each step, and
// `bgd render` prints exactly the file nginx runs.
func TestNginxCLI(t *testing.T) {
	t.Parallel()
	n := newNginx(t, nginxSetup{})
	blue, green := freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := n.cfg()
	list := func(argv []string) string { data, _ := json.Marshal(argv); return string(data) }
	yml := fmt.Sprintf(`state_dir: %q
services:
  app:
    command: %s
    blue: {port: %d}
    green: {port: %d}
    stop_grace: 2s
    lb:
      driver: nginx
      nginx:
        file: %q
        listen: %q
        test: %s
        reload: %s
        verify_url: %q
`, filepath.Join(dir, "state"),
		list([]string{bgdBin, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"}),
		blue, green, cfg.File, cfg.Listen, list(cfg.Test), list(cfg.Reload), cfg.VerifyURL)
	if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(dir, "state", "bg_state.json")
	stopAll(t, statePath)
	run := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, errOut, code := bgd(t, dir, []string{"NO_COLOR=1"}, args...)
		t.Logf("bgd %s: exit %d in %s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
		if code != 0 {
			t.Fatalf("bgd %v: exit %d\nstdout:\n%s\nstderr:\n%s\nnginx error log:\n%s", args, code, out, errOut, n.errorLog())
		}
		return out
	}
	expect := func(step, color, release string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			got := nginxGet(t, n.url())
			if got.Slot != color || !strings.Contains(got.Body, "release="+release) {
				t.Fatalf("after %s: nginx sent a request to %q: %q; want %s release %s", step, got.Slot, got.Body, color, release)
			}
		}
	}

	run("start", "blue")
	expect("start blue", "blue", "")
	run("deploy", "--release", "v2")
	expect("deploy", "green", "v2")
	run("switch", "blue")
	expect("switch blue", "blue", "")
	run("rollback")
	expect("rollback", "green", "v2")

	rendered := run("render")
	onDisk, err := os.ReadFile(cfg.File)
	if err != nil {
		t.Fatal(err)
	}
	if rendered != string(onDisk) {
		t.Fatalf("bgd render prints:\n%s\nnginx runs:\n%s", rendered, onDisk)
	}
	if status := run("status"); !strings.Contains(status, "green") {
		t.Fatalf("status does not name green:\n%s", status)
	}

	// The time of a whole `bgd switch` through nginx, confirmed by nginx.
	var took []time.Duration
	for i := 0; i < 10; i++ {
		col := config.Colors[i%2].String()
		start := time.Now()
		run("switch", col)
		took = append(took, time.Since(start))
		expect("switch "+col, col, map[string]string{"blue": "", "green": "v2"}[col])
	}
	slices.Sort(took)
	t.Logf("bgd switch through nginx, whole CLI process, 10 switches: median %s, max %s",
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// docsBlock returns the fenced block that follows `<!-- example: name -->`
// in docs/nginx.md, so the documented example is the tested one.
func docsBlock(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("../docs/nginx.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "<!-- example: "+name+" -->")
	if !ok {
		t.Fatalf("docs/nginx.md has no example %q", name)
	}
	_, rest, _ = strings.Cut(rest, "```nginx\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("docs/nginx.md: example %q has no fenced block", name)
	}
	return block
}

// TestNginxDocsExample: the documented way to keep your own server block
// (bgd renders only the upstream and a loopback verify server) works on a
// real nginx: the site follows each flip.
func TestNginxDocsExample(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{})
	sitePort := freePort(t)
	site := strings.Replace(docsBlock(t, "site"), "listen 80;", "listen 127.0.0.1:"+strconv.Itoa(sitePort)+";", 1)
	if err := os.WriteFile(filepath.Join(filepath.Dir(n.file), "shop.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := filepath.Join(t.TempDir(), "app-upstream.conf.tmpl")
	if err := os.WriteFile(tmpl, []byte(docsBlock(t, "upstream-template")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := n.cfg() // listen is the loopback verify server, verify_url points at it
	cfg.Template = tmpl
	b := newNginxBalancer(t, cfg, nginx.Options{})
	for gen, col := range []string{"blue", "green", "blue"} {
		if err := b.Flip(context.Background(), nginxRoute(col, ports, uint64(gen+1))); err != nil {
			t.Fatalf("flip to %s: %v\nerror log:\n%s", col, err, n.errorLog())
		}
		if got := nginxGet(t, fmt.Sprintf("http://127.0.0.1:%d/", sitePort)); got.Slot != col {
			t.Fatalf("after flip to %s the site answered from %q: %q", col, got.Slot, got.Body)
		}
		if active, err := b.Active(context.Background()); err != nil || active != config.Color(col) {
			t.Fatalf("Active = %q, %v; want %s", active, err, col)
		}
	}
}
