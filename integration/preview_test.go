package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// smokeYAML: the demo app answers every path but /health 500 for release
// "bad" only, so that it passes its health checks and fails the smoke
// check; the health line of testService gets the smoke paths (withSmoke).
var smokeYAML = fmt.Sprintf("    env: {DEMO_ERROR_RATE: %q}\n", onlyForRelease("1", "0"))

// withSmoke adds health.smoke to the service's bluegreen.yml.
func withSmoke(t *testing.T, s *service, paths string) {
	t.Helper()
	file := filepath.Join(s.dir, "bluegreen.yml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const line = "    health: {timeout: 10s}\n"
	if !bytes.Contains(data, []byte(line)) {
		t.Fatalf("bluegreen.yml has no line %q:\n%s", line, data)
	}
	data = bytes.Replace(data, []byte(line), []byte("    health: {timeout: 10s, smoke: "+paths+"}\n"), 1)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// previewLB is a driver's `lb:` block with what the preview route needs
// (HAProxy's listen), the service's URL through it, and for HAProxy the
// test instance.
func previewLB(t *testing.T, driver string, blue, green int) (lbYAML, url string, h *testHAProxy) {
	switch driver {
	case "haproxy":
		h = newHAProxy(t, blue, green, haSetup{})
		return fmt.Sprintf("      driver: haproxy\n      haproxy: {socket: %q, map_file: %q, listen: \"127.0.0.1:%d\"}\n", h.sock, h.mapFile, h.port), h.url(), h
	case "nginx":
		lbYAML, url = nginxLB(t)
		return lbYAML, url, nil
	}
	lbYAML, url = builtinLB(t)
	return lbYAML, url, nil
}

// previewGet GETs url with X-Bgd-Preview: 1 on a new connection from
// local (nil: the kernel's choice, loopback) and names who answered: the
// demo app's X-Slot and the load balancer's X-Bgd-Slot.
func previewGet(t *testing.T, url string, local net.IP, preview bool) (status int, slot, lbSlot string) {
	t.Helper()
	d := &net.Dialer{Timeout: 3 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: d.DialContext}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if preview {
		req.Header.Set("X-Bgd-Preview", "1")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (preview %v, from %v): %v", url, preview, local, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Slot"), resp.Header.Get("X-Bgd-Slot")
}

// otherLocalIP is an address of this host that is not loopback (a client
// from it is not trusted with the preview route), nil when there is none.
func otherLocalIP() net.IP {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

// TestPreviewThroughEachLoadBalancer: per driver, with real slots: after
// deploy --no-switch, a loopback request with X-Bgd-Preview: 1 is answered
// by the standby through the real load balancer, any other by the active
// slot, and the header from a non-loopback client changes nothing. With
// health.smoke, a switch to the good release passes its smoke check; the
// deploy of a release whose smoke path answers 500 is refused before the
// flip (exit 1, naming the path and the status) while clients of the
// active slot see no failure; the next good release deploys.
func TestPreviewThroughEachLoadBalancer(t *testing.T) {
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url, h := previewLB(t, driver, blue, green)
			s := testService(t, blue, green, lbYAML, smokeYAML)
			withSmoke(t, s, `["/", "/api/ping"]`)
			s.must("start", "blue", "--release", "v1")
			s.must("deploy", "--release", "v2", "--no-switch")
			if h != nil {
				h.waitUp(t, "green") // HAProxy's own checks, as a flip waits for them
			}

			for i := range 20 {
				if code, slot, lbSlot := previewGet(t, url, nil, true); code != 200 || slot != "green" || lbSlot != "green" {
					t.Fatalf("preview request %d: %d from %q (X-Bgd-Slot %q), want 200 from green", i, code, slot, lbSlot)
				}
				if code, slot, lbSlot := previewGet(t, url, nil, false); code != 200 || slot != "blue" || lbSlot != "blue" {
					t.Fatalf("plain request %d: %d from %q (X-Bgd-Slot %q), want 200 from blue", i, code, slot, lbSlot)
				}
			}
			if ip := otherLocalIP(); ip != nil {
				if code, slot, _ := previewGet(t, url, ip, true); code != 200 || slot != "blue" {
					t.Errorf("preview header from %s (not loopback): %d from %q, want 200 from blue", ip, code, slot)
				}
			} else {
				t.Logf("no non-loopback address on this host: the header from a remote client is not tried")
			}

			began := time.Now()
			s.must("switch", "green")
			t.Logf("%s: switch to green with its smoke check took %s", driver, time.Since(began).Round(time.Millisecond))
			if a, err := testsupport.AnsweredBy(url); err != nil || a != "green" {
				t.Fatalf("after switch: answered by %q (%v), want green", a, err)
			}
			if code, slot, _ := previewGet(t, url, nil, true); code != 200 || slot != "blue" {
				t.Errorf("preview after the switch: %d from %q, want blue (the new standby)", code, slot)
			}

			load := testsupport.StartLoad(url, testsupport.LoadOptions{Clients: 4, KeepAlive: true, Pause: time.Millisecond})
			time.Sleep(200 * time.Millisecond)
			began = time.Now()
			out, errOut, code := s.run("deploy", "--release", "bad")
			took := time.Since(began)
			time.Sleep(200 * time.Millisecond)
			c := load.Stop()
			t.Logf("%s: deploy of the bad release refused after %s (exit %d): %s; load on the active slot: %s",
				driver, took.Round(time.Millisecond), code, strings.TrimSpace(errOut), c)
			if code != 1 || !strings.Contains(errOut, "smoke check of blue (release bad) failed: GET / answered 500 Internal Server Error") ||
				!strings.Contains(errOut, "traffic stays on green") {
				t.Fatalf("deploy of a bad release: exit %d\nstdout %s\nstderr %s", code, out, errOut)
			}
			if c.Failures > 0 || c.Requests == 0 || c.Slots["blue"] > 0 {
				t.Errorf("clients of the active slot during the refused deploy: %s; want requests, 0 failed, none from blue", c)
			}
			if a, err := testsupport.AnsweredBy(url); err != nil || a != "green" {
				t.Errorf("after the refused deploy: answered by %q (%v), want green", a, err)
			}
			if hc := healthCode(blue); hc != 0 {
				t.Errorf("blue answers /health %d after the refused deploy: the new slot must be stopped", hc)
			}
			if st := s.must("history"); !strings.Contains(st, "GET / answered 500") {
				t.Errorf("history does not record the smoke failure:\n%s", st)
			}

			s.must("deploy", "--release", "v3")
			if a, err := testsupport.AnsweredBy(url); err != nil || a != "blue" {
				t.Errorf("after deploying v3: answered by %q (%v), want blue", a, err)
			}
		})
	}
}

// TestSmokeFailsWithoutThePreviewRule: an HAProxy whose frontend lacks the
// preview rule routes X-Bgd-Preview like any request, to the active slot:
// the smoke check must not pass by testing that slot. The deploy is
// refused, naming the missing rule, and traffic stays on blue.
func TestSmokeFailsWithoutThePreviewRule(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	lbYAML, url, h := previewLB(t, "haproxy", blue, green)
	snippet, err := os.ReadFile(h.snippet)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.SplitAfter(string(snippet), "\n") {
		if !strings.Contains(l, "app@preview),map(") {
			kept = append(kept, l)
		}
	}
	if len(kept) == len(strings.SplitAfter(string(snippet), "\n")) {
		t.Fatalf("the rendered snippet has no preview rule to remove:\n%s", snippet)
	}
	if err := os.WriteFile(h.snippet, []byte(strings.Join(kept, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	h.reload(t)
	s := testService(t, blue, green, lbYAML, "")
	withSmoke(t, s, `["/"]`)
	s.must("start", "blue", "--release", "v1")
	out, errOut, code := s.run("deploy", "--release", "v2")
	t.Logf("deploy through HAProxy without the preview rule: exit %d: %s", code, strings.TrimSpace(errOut))
	if code != 1 || !strings.Contains(errOut, "was answered by blue, not by green: the load balancer's configuration lacks bgd's preview rule") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if a, err := testsupport.AnsweredBy(url); err != nil || a != "blue" {
		t.Errorf("after the refused deploy: answered by %q (%v), want blue", a, err)
	}
}

// TestSmokeRefusedWithAnNginxTemplateWithoutPreview: a user template
// without the preview route cannot be smoke-checked: the deploy is refused
// before it starts anything (exit 2), and traffic stays on blue.
func TestSmokeRefusedWithAnNginxTemplateWithoutPreview(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	n := newNginx(t, nginxSetup{})
	c := n.cfg()
	tmpl := filepath.Join(t.TempDir(), "own.conf.tmpl")
	own := `upstream {{.Upstream}} { server {{.Active.Addr}}; }
server {
    listen {{.Listen}};
    location / {
        proxy_pass http://{{.Upstream}};
        add_header {{.GenerationHeader}} {{.Generation}} always;
        add_header {{.SlotHeader}} {{.Active.Color}} always;
    }
}
`
	if err := os.WriteFile(tmpl, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	list := func(argv []string) string { return `["` + strings.Join(argv, `", "`) + `"]` }
	lbYAML := fmt.Sprintf("      driver: nginx\n      nginx: {file: %q, listen: %q, test: %s, reload: %s, verify_url: %q, template: %q}\n",
		c.File, c.Listen, list(c.Test), list(c.Reload), c.VerifyURL, tmpl)
	s := testService(t, blue, green, lbYAML, "")
	withSmoke(t, s, `["/"]`)
	s.must("start", "blue", "--release", "v1")
	out, errOut, code := s.run("deploy", "--release", "v2")
	t.Logf("deploy through an nginx template without the preview route: exit %d: %s", code, strings.TrimSpace(errOut))
	if code != 2 || !strings.Contains(errOut, "own.conf.tmpl never reads $http_x_bgd_preview") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if hc := healthCode(green); hc != 0 {
		t.Errorf("green answers /health %d: the refused deploy started it", hc)
	}
	if a, err := testsupport.AnsweredBy(n.url()); err != nil || a != "blue" {
		t.Errorf("after the refused deploy: answered by %q (%v), want blue", a, err)
	}
}
