package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// dashboardYAML: the bad release answers 20% of requests 500 while it
// passes its health checks; analysis judges it every 500 ms once 100
// requests were answered, so it lives for a second or so before bgd rolls
// it back, long enough to be seen on the charts.
var dashboardYAML = "    analysis: {interval: 500ms, min_requests: 100, max_error_rate: 0.05}\n" +
	fmt.Sprintf("    env: {DEMO_ERROR_RATE: %q}\n", onlyForRelease("0.2", "0"))

// chromiumPath is headless Chromium (Debian's chromium). Without it the
// test skips loudly, and fails in CI (.ci/run installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p := testsupport.FindBinary(name); p != "" {
			return p
		}
	}
	return requireBinary(t, "chromium")
}

// browser is a headless Chromium for the test, stopped when it ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.userAgent`)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// startDashboard runs `bgd dashboard` on the service until the test ends
// and returns its URL.
func startDashboard(t *testing.T, s *service, interval string) string {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(bgdBin, "dashboard", "--listen", "127.0.0.1:"+strconv.Itoa(port), "--interval", interval)
	cmd.Dir, cmd.Env = s.dir, append(os.Environ(), "NO_COLOR=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		t.Logf("bgd dashboard said: %s", strings.TrimSpace(out.String()))
	})
	waitListening(t, port, 5*time.Second)
	return fmt.Sprintf("http://127.0.0.1:%d/", port)
}

// seenSeries is one series path of a chart as the browser has it.
type seenSeries struct {
	Chart, Slot, Series string
	Max                 float64
	Points              int // segments in its path
}

// seenMarker is one marker of a chart as the browser has it.
type seenMarker struct {
	Chart, Action, Status, Label string
}

// seenPage is what the test reads from the DOM.
type seenPage struct {
	Series  []seenSeries
	Markers []seenMarker
	Live    string
	Active  string
	Slots   []string
}

// readDOM is the script that reads seenPage in the browser.
const readDOM = `(() => {
  const series = [...document.querySelectorAll("svg.chart path.series")].map(p => ({
    Chart: p.closest("svg").id, Slot: p.dataset.slot, Series: p.dataset.series,
    Max: parseFloat(p.dataset.max || "0"), Points: (p.getAttribute("d").match(/[ML]/g) || []).length}));
  const markers = [...document.querySelectorAll("svg.chart g.marker")].map(g => ({
    Chart: g.closest("svg").id, Action: g.dataset.action, Status: g.dataset.status,
    Label: (g.querySelector("text") || {}).textContent || ""}));
  return {Series: series, Markers: markers, Live: document.getElementById("live").textContent,
    Active: (document.querySelector("#main b") || {}).textContent || "",
    Slots: [...document.querySelectorAll("#slots tr.slot")].map(r => r.dataset.slot + " " + r.dataset.weight + " " + r.dataset.healthy)};
})()`

// lookAt loads url in the browser, waits for a live update of the page (its
// script polls the server), and reads the charts.
func lookAt(t *testing.T, ctx context.Context, url string, png *[]byte) seenPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#chart-rate`)),
		// The page's script replaced its charts with the server's newer ones.
		chromedp.Poll[chromedp.Void](`document.getElementById("live").textContent.startsWith("live: updated ")`,
			chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		t.Fatalf("browser on %s: %v", url, err)
	}
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[seenPage](readDOM))
	if err != nil {
		t.Fatalf("browser on %s: read the DOM: %v", url, err)
	}
	if png != nil {
		if *png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
			t.Fatalf("browser on %s: screenshot: %v", url, err)
		}
	}
	return seen
}

// checkCharts asserts what a dashboard must show after the scenario: both
// slots' series on every chart, both of whose rates rose; markers for the
// deploys and the rollbacks (one of them bgd's own, auto_rolled_back); and
// green's error series risen for the bad release while blue's stayed low.
func checkCharts(t *testing.T, what string, seen seenPage) {
	t.Helper()
	get := func(chart, slot, series string) *seenSeries {
		for i, s := range seen.Series {
			if s.Chart == chart && s.Slot == slot && s.Series == series {
				return &seen.Series[i]
			}
		}
		return nil
	}
	for _, slot := range []string{"blue", "green"} {
		rate := get("chart-rate", slot, "rate")
		if rate == nil || rate.Points < 2 || rate.Max <= 0 {
			t.Errorf("%s: the request-rate chart has no %s series with traffic: %+v", what, slot, rate)
		}
		if get("chart-errors", slot, "errors") == nil {
			t.Errorf("%s: the error chart has no %s series", what, slot)
		}
		if get("chart-latency", slot, "p99") == nil && get("chart-latency", slot, "mean") == nil {
			t.Errorf("%s: the latency chart has no %s series", what, slot)
		}
	}
	if e := get("chart-errors", "green", "errors"); e == nil || e.Max < 5 {
		t.Errorf("%s: green's error series did not rise for the bad release (20%% of its answers 500): %+v", what, e)
	}
	if e := get("chart-errors", "blue", "errors"); e == nil || e.Max > 1 {
		t.Errorf("%s: blue's error series rose, but blue only ran good releases: %+v", what, e)
	}
	count := map[string]int{}
	for _, m := range seen.Markers {
		if m.Chart == "chart-rate" {
			count[m.Action+"/"+m.Status]++
		}
	}
	if count["deploy/success"] < 1 || count["rollback/rolled_back"] < 1 || count["rollback/auto_rolled_back"] < 1 {
		t.Errorf("%s: markers on the rate chart %v, want a deploy, a rollback and an automatic rollback", what, count)
	}
	if seen.Active != "blue" || len(seen.Slots) != 2 {
		t.Errorf("%s: the page says active %q, slots %q; want blue after the automatic rollback", what, seen.Active, seen.Slots)
	}
}

// TestDashboardInABrowser: per driver, with real slots under load, a
// deploy, a rollback and a bad release that bgd's analysis rolls back by
// itself; `bgd dashboard` (and, for the builtin driver, the proxy's own
// /monitoring) is loaded in headless Chromium, whose DOM must show both
// slots' series, the markers of the deploy and of both rollbacks, and
// green's error series risen for the bad release. The builtin page's
// screenshot goes to $DASHBOARD_SCREENSHOT when set (docs/dashboard.png).
func TestDashboardInABrowser(t *testing.T) {
	ctx := browser(t)
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			mon := ""
			if driver == "builtin" {
				// The proxy's own /monitoring is on its admin address: a
				// loopback port of its own, which a browser loads.
				admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
				lbYAML = strings.Replace(lbYAML, "builtin: {", fmt.Sprintf("builtin: {admin_listen: %q, ", admin), 1)
				mon = "http://" + admin + "/monitoring"
			}
			s := testService(t, blue, green, lbYAML, dashboardYAML)
			s.must("start", "blue", "--release", "v1")
			dash := startDashboard(t, s, "250ms")

			load := testsupport.StartLoad(url, testsupport.LoadOptions{Clients: 4, KeepAlive: true, Pause: 2 * time.Millisecond})
			step := func() { time.Sleep(1500 * time.Millisecond) }
			step()
			s.must("deploy", "--release", "v2")
			step()
			s.must("rollback")
			step()
			_, errOut, code := s.run("deploy", "--release", "bad", "--watch", "20s")
			if code != 1 || !strings.Contains(errOut, "rolled back to blue by itself") {
				t.Fatalf("deploy of the bad release: exit %d: %s", code, errOut)
			}
			step()
			c := load.Stop()
			// The load's failures are the bad release's 500s (and, through
			// nginx, keep-alive resets at its reloads: README "Zero
			// downtime, measured").
			t.Logf("%s: load %s; bad release: %s", driver, c, strings.TrimSpace(errOut))

			var png []byte
			var shot *[]byte
			if driver == "builtin" {
				shot = &png
			}
			began := time.Now()
			seen := lookAt(t, ctx, dash, shot)
			var labels []string
			for _, m := range seen.Markers {
				if m.Chart == "chart-rate" {
					labels = append(labels, m.Label)
				}
			}
			t.Logf("%s: bgd dashboard loaded and live-updated in Chromium in %s: %d series, markers %q",
				driver, time.Since(began).Round(time.Millisecond), len(seen.Series), labels)
			checkCharts(t, driver+": bgd dashboard", seen)
			checkPage(t, dash)
			checkDashboardMetrics(t, dash)

			if driver == "builtin" {
				seen := lookAt(t, ctx, mon, nil)
				checkCharts(t, "builtin proxy's /monitoring", seen)
				checkPage(t, mon)
				if len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
					t.Fatalf("screenshot: %d bytes, not a PNG of the page", len(png))
				}
				if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
					if err := os.WriteFile(out, png, 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("screenshot written to %s (%d bytes)", out, len(png))
				} else {
					os.WriteFile(filepath.Join(t.TempDir(), "dashboard.png"), png, 0o644)
				}
			}
		})
	}
}

// checkPage fetches the page as a client would: under 200 KB, no script or
// stylesheet from elsewhere, and its JSON form names both slots.
func checkPage(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("%s: %d bytes", url, len(body))
	if len(body) > 200<<10 {
		t.Errorf("%s is %d bytes, over 200 KB", url, len(body))
	}
	for _, bad := range []string{"<script src", "<link ", "https://", "@import"} {
		if bytes.Contains(body, []byte(bad)) {
			t.Errorf("%s loads something from elsewhere (%q)", url, bad)
		}
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	resp, err = http.Get(url + sep + "format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Slots []struct {
			Color string `json:"color"`
		} `json:"slots"`
		Points []json.RawMessage `json:"points"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v.Slots) != 2 || len(v.Points) < 2 {
		t.Errorf("%s?format=json: %d slots, %d points (%v)", url, len(v.Slots), len(v.Points), err)
	}
}

// checkDashboardMetrics: the dashboard's /metrics has both slots' request
// counts from the load balancer and bgd's deploy counters, in the
// Prometheus text format.
func checkDashboardMetrics(t *testing.T, dash string) {
	t.Helper()
	url := strings.TrimSuffix(dash, "/") + "/metrics"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	value := func(name string, labels map[string]string) float64 {
		f := families[name]
		if f == nil {
			return -1
		}
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
		}
		return -1
	}
	blue := value("bgd_slot_requests_total", map[string]string{"slot": "blue"})
	green := value("bgd_slot_requests_total", map[string]string{"slot": "green"})
	auto := value("bgd_deploys_total", map[string]string{"status": "auto_rolled_back"})
	t.Logf("%s: requests blue %v, green %v; auto-rolled-back deploys %v", url, blue, green, auto)
	if blue <= 0 || green <= 0 || auto != 1 {
		t.Errorf("%s: requests blue %v, green %v, auto_rolled_back deploys %v; want both slots counted and 1", url, blue, green, auto)
	}
}
