package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/haproxy"
)

// pauseDrivers are the drivers that hold requests.
var pauseDrivers = []string{"builtin"}

// maintenanceDrivers are the drivers that answer maintenance.
var maintenanceDrivers = []string{"builtin", "nginx", "haproxy"}

// sendHeld sends n requests on new connections through url in the
// background; each arrives on the channel when answered.
func sendHeld(url string, n int) <-chan answer {
	out := make(chan answer, n)
	for range n {
		go func() { out <- <-slowRequest(url, 0) }()
	}
	return out
}

// collect waits for n answers and reports the failed ones, the colours
// that answered and the shortest and longest time a request took.
func collect(t *testing.T, what string, got <-chan answer, n int) (slots map[string]int, shortest, longest time.Duration) {
	t.Helper()
	slots = map[string]int{}
	shortest = time.Hour
	failed := 0
	for range n {
		a := <-got
		if a.err != nil || a.status != http.StatusOK {
			failed++
			t.Errorf("%s: a request ended with status %d, %v", what, a.status, a.err)
			continue
		}
		slots[a.slot]++
		shortest, longest = min(shortest, a.took), max(longest, a.took)
	}
	t.Logf("%s: %d requests, %d failed, answered by %v; each took %s to %s", what, n, failed, slots, shortest.Round(time.Millisecond), longest.Round(time.Millisecond))
	return slots, shortest, longest
}

// TestPauseThroughEachLoadBalancer: per driver that can pause, with real
// slots: while paused no request is answered; a switch made meanwhile is
// confirmed, and bgd resume releases every held request to the new colour,
// 0 failed. A pause left alone is released by its timeout.
func TestPauseThroughEachLoadBalancer(t *testing.T) {
	for _, driver := range pauseDrivers {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			svc := testService(t, blue, green, lbYAML, "    pause_timeout: 20s\n")
			svc.must("start", "blue", "--release", "v1")
			svc.must("deploy", "--release", "v2", "--no-switch")

			paused := time.Now()
			out := svc.must("pause")
			if !strings.Contains(out, "new requests are held until `bgd resume`") {
				t.Errorf("pause said %q", out)
			}
			const n = 20
			held := sendHeld(url, n)
			time.Sleep(500 * time.Millisecond)
			if len(held) != 0 {
				t.Fatalf("%d of %d requests were answered while paused", len(held), n)
			}
			if st := svc.must("status"); !strings.Contains(st, "Paused since") {
				t.Errorf("status while paused:\n%s", st)
			}
			svc.must("switch", "green")
			if len(held) != 0 {
				t.Fatalf("%d of %d requests were answered by the switch while paused", len(held), n)
			}
			resumed := time.Now()
			out = svc.must("resume")
			if !strings.Contains(out, "held requests go to green") {
				t.Errorf("resume said %q", out)
			}
			slots, shortest, _ := collect(t, driver+" pause, switch, resume", held, n)
			if slots["green"] != n {
				t.Errorf("held requests answered by %v, want all %d by green (the routing at the resume)", slots, n)
			}
			t.Logf("%s: paused %s before the resume; the shortest-held request waited %s", driver,
				resumed.Sub(paused).Round(time.Millisecond), shortest.Round(time.Millisecond))
			if a, err := testAnswer(url); err != nil || a != "green" {
				t.Errorf("after resume: %q %v, want green", a, err)
			}
			st := svc.must("status")
			if strings.Contains(st, "Paused") || !strings.Contains(st, "pause") || !strings.Contains(st, "resume") {
				t.Errorf("status after resume (history with pause and resume, not paused):\n%s", st)
			}

			// The timeout releases them by itself.
			svc.must("pause", "--timeout", "1500ms")
			paused = time.Now()
			held = sendHeld(url, 5)
			_, shortest, longest := collect(t, driver+" pause --timeout 1500ms", held, 5)
			t.Logf("%s: released by the timeout %s after the pause (requests held %s to %s)", driver,
				time.Since(paused).Round(time.Millisecond), shortest.Round(time.Millisecond), longest.Round(time.Millisecond))
			if st := svc.must("status"); !strings.Contains(st, "Pause timed out") {
				t.Errorf("status after the timeout:\n%s", st)
			}
			if out := svc.must("resume"); !strings.Contains(out, "already timed out") {
				t.Errorf("resume after the timeout said %q", out)
			}
		})
	}
}

// testAnswer is the colour that answers one GET of url.
func testAnswer(url string) (string, error) {
	a := <-slowRequest(url, 0)
	if a.err != nil || a.status != http.StatusOK {
		return "", fmt.Errorf("status %d, %v", a.status, a.err)
	}
	return a.slot, nil
}

// getMaintenance GETs url and checks a maintenance answer: 503,
// Retry-After 60, the content type and the body.
func getMaintenance(t *testing.T, what, url, body, ctype string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "60" ||
		string(got) != body || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
		t.Errorf("%s, GET %s: %d, Retry-After %q, Content-Type %q, body %q; want 503, 60, %s, %q",
			what, url, resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), got, ctype, body)
	}
}

// writePage writes an HTML page into a temporary directory.
func writePage(t *testing.T, html string) string {
	t.Helper()
	page := filepath.Join(t.TempDir(), "maintenance.html")
	if err := os.WriteFile(page, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	return page
}

// TestMaintenanceThroughEachLoadBalancer: per driver, with real slots and
// maintenance_page: maintenance on answers every path 503 with Retry-After
// and the page; --page another page is answered by the builtin proxy and
// nginx, and refused by HAProxy (exit 2: it answers the page it loaded),
// which stays in maintenance; maintenance off routes to blue again.
func TestMaintenanceThroughEachLoadBalancer(t *testing.T) {
	const html, other = "<!doctype html><h1>Back soon</h1>\n", "<!doctype html><h1>Other page</h1>\n"
	for _, driver := range maintenanceDrivers {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			page, otherPage := writePage(t, html), writePage(t, other)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			if driver == "haproxy" {
				lbYAML, url = haproxyLB(t, blue, green, haSetup{maintenancePage: page})
			}
			svc := testService(t, blue, green, lbYAML, fmt.Sprintf("    maintenance_page: %q\n", page))
			svc.must("start", "blue", "--release", "v1")

			svc.must("maintenance", "on")
			for _, path := range []string{"", "health", "any/path?x=1"} {
				getMaintenance(t, driver+" maintenance on", url+path, html, "text/html")
			}
			if st := svc.must("status"); !strings.Contains(st, "Maintenance: every request is answered 503 with "+page) {
				t.Errorf("status in maintenance:\n%s", st)
			}
			out, errOut, code := svc.run("maintenance", "on", "--page", otherPage)
			if driver == "haproxy" {
				if code != 2 || !strings.Contains(errOut, "the haproxy driver does not support maintenance") {
					t.Errorf("haproxy maintenance on --page another page: exit %d\n%s%s", code, out, errOut)
				}
				t.Logf("haproxy refuses another page: exit %d: %s", code, strings.TrimSpace(errOut))
				getMaintenance(t, "haproxy after the refused --page", url, html, "text/html")
			} else {
				if code != 0 {
					t.Fatalf("%s maintenance on --page: exit %d\n%s%s", driver, code, out, errOut)
				}
				getMaintenance(t, driver+" maintenance on --page", url, other, "text/html")
			}
			svc.must("maintenance", "off")
			if a, err := testAnswer(url); err != nil || a != "blue" {
				t.Errorf("%s after maintenance off: %q %v, want blue", driver, a, err)
			}
		})
	}
}

// TestMaintenanceDefaultText: without a page, each driver answers its own
// short text (text/plain), and routes again after off.
func TestMaintenanceDefaultText(t *testing.T) {
	for _, driver := range maintenanceDrivers {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			svc := testService(t, blue, green, lbYAML, "")
			svc.must("start", "blue", "--release", "v1")
			svc.must("maintenance", "on")
			getMaintenance(t, driver+" maintenance on", url+"x", "503 Service Unavailable: down for maintenance, try again later\n", "text/plain")
			svc.must("maintenance", "off")
			if a, err := testAnswer(url); err != nil || a != "blue" {
				t.Errorf("%s after maintenance off: %q %v, want blue", driver, a, err)
			}
		})
	}
}

// TestHoldsRefusedWithExit2: a driver that cannot pause (nginx, HAProxy)
// refuses with exit 2 and a message naming the driver; the
// routing is untouched and the state records no pause.
func TestHoldsRefusedWithExit2(t *testing.T) {
	refusals := []struct{ driver, feature string }{{"nginx", "pause"}, {"haproxy", "pause"}}
	for _, r := range refusals {
		t.Run(r.driver+"/"+r.feature, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, r.driver, blue, green, false)
			svc := testService(t, blue, green, lbYAML, "")
			svc.must("start", "blue", "--release", "v1")
			args := []string{"pause"}
			if r.feature == "maintenance" {
				args = []string{"maintenance", "on"}
			}
			out, errOut, code := svc.run(args...)
			if code != 2 || !strings.Contains(errOut, "the "+r.driver+" driver does not support "+r.feature) {
				t.Errorf("bgd %v on %s: exit %d\n%s%s", args, r.driver, code, out, errOut)
			}
			t.Logf("bgd %v on %s: exit %d: %s", args, r.driver, code, strings.TrimSpace(errOut))
			if a, err := testAnswer(url); err != nil || a != "blue" {
				t.Errorf("after the refusal: %q %v, want blue routed", a, err)
			}
			if st := svc.must("status"); strings.Contains(st, "Paused") || strings.Contains(st, "Maintenance:") {
				t.Errorf("status after the refusal:\n%s", st)
			}
		})
	}
}

// TestHAProxyMaintenanceSurvivesReload: the maintenance entry is in the map
// file too, so a reload of HAProxy keeps answering 503, and maintenance off
// (which a reload also keeps) routes again.
func TestHAProxyMaintenanceSurvivesReload(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	startDemoApp(t, blue, "blue", "v1")
	startDemoApp(t, green, "green", "v2")
	page := writePage(t, "<h1>reload-proof</h1>\n")
	h := newHAProxy(t, blue, green, haSetup{maintenancePage: page})
	h.waitUp(t, "blue", "green")
	b, err := haproxy.New("app", h.hcfg, haproxy.Options{UpTimeout: 5 * time.Second, MaintenancePage: page})
	if err != nil {
		t.Fatal(err)
	}
	r := haRoute("blue", blue, green)
	r.Maintenance, r.MaintenancePage = true, "<h1>reload-proof</h1>\n"
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	getMaintenance(t, "haproxy maintenance on", h.url(), r.MaintenancePage, "text/html")
	h.reload(t)
	getMaintenance(t, "haproxy maintenance on, after a reload", h.url(), r.MaintenancePage, "text/html")
	r.Maintenance, r.MaintenancePage = false, ""
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	h.assertRoutesTo(t, "blue")
	h.reload(t)
	h.waitUp(t, "blue")
	h.assertRoutesTo(t, "blue")
}
