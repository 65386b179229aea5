package integration

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// countSplit sends n GETs to url from 8 keep-alive clients and counts who
// answered.
func countSplit(t *testing.T, url string, n int) testsupport.SlotCount {
	t.Helper()
	return testsupport.CountSlots(url, n, 8)
}

// checkShare fails the test when color's share of c is not within two
// points of want percent, or when a request failed.
func checkShare(t *testing.T, what string, c testsupport.SlotCount, color string, want int) {
	t.Helper()
	got := c.Share(color)
	t.Logf("%s: %s answered %d of %d requests (%.2f%%, weight %d%%), %d failed", what, color, c.Slots[color], c.Requests, got, want, c.Failures)
	if math.Abs(got-float64(want)) > 2 || c.Failures > 0 {
		t.Errorf("%s: %s got %.2f%% of %d requests (%d failed), want %d%% ± 2 and none failed", what, color, got, c.Requests, c.Failures, want)
	}
}

// canaryLB is a driver's `lb:` block and the service's URL through it.
func canaryLB(t *testing.T, driver string, blue, green int, sticky bool) (lbYAML, url string) {
	switch driver {
	case "haproxy":
		return haproxyLB(t, blue, green, haSetup{sticky: sticky})
	case "nginx":
		return nginxLB(t)
	}
	return builtinLB(t)
}

// TestCanaryThroughEachLoadBalancer: per driver, with real slots:
// deploy --canary 10 sends 10% (± 2 points over 10 000 requests) to the
// new release; under load, canary 50 and promote fail no request; the
// next canary is aborted and leaves all traffic on the live colour.
func TestCanaryThroughEachLoadBalancer(t *testing.T) {
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			run := serviceRunner(t, blue, green, lbYAML, "")
			run("start", "blue", "--release", "v1")

			out := run("deploy", "--release", "v2", "--canary", "10", "--json")
			var res struct {
				Active string `json:"active_version"`
				Canary *struct {
					Color  string `json:"color"`
					Weight int    `json:"weight"`
				} `json:"canary"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || res.Active != "blue" || res.Canary == nil ||
				res.Canary.Color != "green" || res.Canary.Weight != 10 {
				t.Fatalf("deploy --canary 10 --json = %s (%v)", out, err)
			}
			checkShare(t, driver+" canary 10", countSplit(t, url, 10000), "green", 10)
			if st := run("status"); !strings.Contains(st, "Canary: GREEN gets 10% of new requests") {
				t.Errorf("status during the canary:\n%s", st)
			}

			load := startNginxLoad(url, 2, 2)
			time.Sleep(200 * time.Millisecond)
			run("canary", "50")
			time.Sleep(300 * time.Millisecond)
			half := countSplit(t, url, 10000)
			run("promote")
			time.Sleep(300 * time.Millisecond)
			newConn, keepAlive := load.stop()
			checkShare(t, driver+" canary 50", half, "green", 50)
			t.Logf("%s: during canary 50 and promote: new connections %s; keep-alive %s", driver, newConn, keepAlive)
			if newConn.Failures > 0 || newConn.Requests == 0 {
				t.Errorf("new-connection clients during canary 50 and promote: %s, want requests and 0 failed", newConn)
			}
			if driver != "nginx" && (keepAlive.Failures > 0 || keepAlive.Requests == 0) {
				t.Errorf("keep-alive clients during canary 50 and promote: %s, want requests and 0 failed", keepAlive)
			}
			if a, err := testsupport.AnsweredBy(url); err != nil || a != "green" {
				t.Errorf("after promote: answered by %q (%v), want green", a, err)
			}

			run("deploy", "--release", "v3", "--canary", "20")
			// HAProxy's weighted round robin reaches the new weights within the
			// first few hundred requests after they change (its tree keeps
			// positions from the old ones): measured over 10 000, as the goal says.
			checkShare(t, driver+" second canary 20", countSplit(t, url, 10000), "blue", 20)
			out = run("abort")
			if !strings.Contains(out, "canary blue (release v3) aborted at 20%: all new requests go to green; blue stopped") {
				t.Errorf("abort said %q", out)
			}
			if c := countSplit(t, url, 500); c.Slots["green"] != 500 {
				t.Errorf("after abort: %v of 500 requests, want all from green", c.Slots)
			}
			if st := run("status"); strings.Contains(st, "Canary:") || !strings.Contains(st, "Active Version: GREEN") {
				t.Errorf("status after abort:\n%s", st)
			}
		})
	}
}

// TestStickyCanary: with canary.sticky, a client is told its side by a
// cookie on its first answer and keeps it for 200 requests, while clients
// without the cookie are still split by the weight.
func TestStickyCanary(t *testing.T) {
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, true)
			run := serviceRunner(t, blue, green, lbYAML, "    canary: {sticky: true}\n")
			run("start", "blue", "--release", "v1")
			run("deploy", "--release", "v2", "--canary", "50")

			sides := map[string]int{}
			for i := range 20 {
				client := &http.Client{Timeout: 5 * time.Second}
				resp, err := client.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				slot := resp.Header.Get("X-Slot")
				var cookie *http.Cookie
				for _, c := range resp.Cookies() {
					if c.Name == "bgd_app" {
						cookie = c
					}
				}
				if cookie == nil || cookie.Value != slot {
					t.Fatalf("client %d: answered by %q with cookies %v; want Set-Cookie bgd_app=%s", i, slot, resp.Header.Values("Set-Cookie"), slot)
				}
				sides[slot]++
				if i >= 4 {
					continue // five clients are followed for 200 requests
				}
				for j := range 200 {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.AddCookie(&http.Cookie{Name: "bgd_app", Value: slot})
					resp, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if got := resp.Header.Get("X-Slot"); got != slot {
						t.Fatalf("client %d with bgd_app=%s: request %d answered by %q", i, slot, j, got)
					}
				}
			}
			t.Logf("%s: 20 new clients went %v", driver, sides)
			if sides["blue"] == 0 || sides["green"] == 0 {
				t.Errorf("20 new clients at 50%%: %v, want both sides", sides)
			}
			// After promote the cookie no longer matters.
			run("promote")
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.AddCookie(&http.Cookie{Name: "bgd_app", Value: "blue"})
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Slot"); got != "green" || len(resp.Header.Values("Set-Cookie")) > 0 {
				t.Errorf("after promote, a client with bgd_app=blue: answered by %q, Set-Cookie %v; want green, no cookie", got, resp.Header.Values("Set-Cookie"))
			}
		})
	}
}
