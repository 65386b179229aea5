package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/demoapp"
	"github.com/bgd-dev/bgd/internal/testsupport"
)

// shadowYAML: the demo app of release "slow" takes 2 s for each answer but
// /health's.
var shadowYAML = `    env: {DEMO_LATENCY: '{{if eq .Release "slow"}}2s{{else}}0s{{end}}'}` + "\n"

// demoCounts asks the demo app on port how many requests it got.
func demoCounts(t *testing.T, port int) demoapp.Counts {
	t.Helper()
	// No keep-alive: a connection left to the slot would count as in flight
	// in nginx's drain before its stop.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, demoapp.CountsPath))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var counts demoapp.Counts
	if err := json.NewDecoder(resp.Body).Decode(&counts); err != nil {
		t.Fatal(err)
	}
	return counts
}

// waitShadow waits (at most 10 s) until the demo app on port has got want
// copies, and returns its counts.
func waitShadow(t *testing.T, port int, want uint64) demoapp.Counts {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := demoCounts(t, port)
		if c.Shadow >= want || time.Now().After(deadline) {
			time.Sleep(100 * time.Millisecond) // late extra copies would show now
			return demoCounts(t, port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clientRun is what n sequential requests saw.
type clientRun struct {
	n, failed int
	slots     map[string]int
	p50, p99  time.Duration
	bodyBytes int
}

func (c clientRun) String() string {
	return fmt.Sprintf("%d requests, %d failed, by slot %v, p50 %s, p99 %s", c.n, c.failed, c.slots,
		c.p50.Round(10*time.Microsecond), c.p99.Round(10*time.Microsecond))
}

// clients sends n requests one after the other through url, on one
// keep-alive connection or each on a new one; every 4th is a POST with a
// body of 1000 bytes.
func clients(url string, n int, keepAlive bool) clientRun {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	r := clientRun{n: n, slots: map[string]int{}}
	var took []time.Duration
	for i := range n {
		start := time.Now()
		var resp *http.Response
		var err error
		if i%4 == 3 {
			resp, err = client.Post(fmt.Sprintf("%sposted/%d", url, i), "text/plain", strings.NewReader(strings.Repeat("b", 1000)))
			r.bodyBytes += 1000
		} else {
			resp, err = client.Get(fmt.Sprintf("%sgot/%d", url, i))
		}
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		took = append(took, time.Since(start))
		if err != nil || resp.StatusCode != http.StatusOK {
			r.failed++
			continue
		}
		r.slots[resp.Header.Get("X-Slot")]++
	}
	slices.Sort(took)
	r.p50, r.p99 = took[len(took)/2], took[(len(took)*99+99)/100-1]
	return r
}

// TestShadowTraffic: per driver that can copy requests, with real slots:
// with shadow on, N client requests (GETs and POSTs with bodies) make N
// copies at the standby, bodies included, while the clients see only the
// active slot's answers; a flip keeps the copies going to the new standby;
// a dead standby costs the clients nothing; a standby that takes 2 s per
// answer does not slow clients on new connections (the builtin proxy not
// on keep-alive ones either; nginx's keep-alive clients are measured and
// logged: nginx reads a connection's next request once the copy of the
// previous one is answered). status and history tell on and off.
func TestShadowTraffic(t *testing.T) {
	for _, driver := range []string{"builtin", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			s := testService(t, blue, green, lbYAML, shadowYAML)
			s.must("start", "blue", "--release", "v1")
			s.must("start", "green", "--release", "v2")

			const n = 200
			base, baseKA := clients(url, n, false), clients(url, n, true)
			t.Logf("%s without shadow: new connections: %s; keep-alive: %s", driver, base, baseKA)

			out := s.must("shadow", "on")
			if !strings.Contains(out, "shadow traffic on: a copy of each request to blue goes to green (release v2)") {
				t.Errorf("shadow on said %q", out)
			}
			before := demoCounts(t, green)
			got := clients(url, n, true)
			after := waitShadow(t, green, before.Shadow+n)
			t.Logf("%s with shadow to a fast standby: %s; green got %d copies (%d body bytes)", driver, got, after.Shadow-before.Shadow, after.BodyBytes-before.BodyBytes)
			if got.failed > 0 || got.slots["blue"] != n {
				t.Errorf("clients with shadow on: %s, want all %d answered by blue", got, n)
			}
			if c := after.Shadow - before.Shadow; c != n || after.Requests-before.Requests != n {
				t.Errorf("green got %d copies (%d requests) for %d client requests, want %d", c, after.Requests-before.Requests, n, n)
			}
			if b := after.BodyBytes - before.BodyBytes; b != uint64(got.bodyBytes) {
				t.Errorf("green got %d body bytes, the clients sent %d", b, got.bodyBytes)
			}
			st := s.must("status")
			if !strings.Contains(st, "Shadow: a copy of each request goes to green") {
				t.Errorf("status with shadow on:\n%s", st)
			}
			if driver == "builtin" && !strings.Contains(st, fmt.Sprintf("same %d,", n)) {
				t.Errorf("status of the builtin proxy does not count %d same answers:\n%s", n, st)
			}

			// A flip keeps the shadow: the copies go to the new standby.
			s.must("switch", "green")
			beforeBlue := demoCounts(t, blue)
			flipped := clients(url, 40, true)
			afterBlue := waitShadow(t, blue, beforeBlue.Shadow+40)
			if flipped.slots["green"] != 40 || afterBlue.Shadow-beforeBlue.Shadow != 40 {
				t.Errorf("after switch green: clients %s, blue got %d copies; want 40 from green and 40 copies", flipped, afterBlue.Shadow-beforeBlue.Shadow)
			}
			s.must("switch", "blue")

			// A dead standby: no client fails.
			// Copies flowing up to the stop: the drain before it must not
			// wait on the load balancer's connections for copies.
			beforeStop := demoCounts(t, green)
			clients(url, 20, true)
			waitShadow(t, green, beforeStop.Shadow+20)
			stopped := time.Now()
			out = s.must("stop", "green")
			t.Logf("%s: bgd stop green with shadow on: %s (%s)", driver, strings.TrimSpace(out), time.Since(stopped).Round(time.Millisecond))
			if strings.Contains(out, "timed out") {
				t.Errorf("the drain of the standby waited on the copies: %s", out)
			}
			dead, deadKA := clients(url, n, false), clients(url, n, true)
			t.Logf("%s with shadow to a stopped standby: new connections: %s; keep-alive: %s", driver, dead, deadKA)
			if dead.failed+deadKA.failed > 0 || dead.slots["blue"]+deadKA.slots["blue"] != 2*n {
				t.Errorf("with the standby stopped: %s; %s; want 0 failed, all from blue", dead, deadKA)
			}

			// A slow standby (2 s per answer).
			s.must("start", "green", "--release", "slow")
			kaN := n
			if driver == "nginx" {
				kaN = 10 // each waits for the copy of the one before
			}
			slow, slowKA := clients(url, n, false), clients(url, kaN, true)
			t.Logf("%s client p99 without shadow: new connections %s, keep-alive %s; with shadow to a 2s standby: new connections %s, keep-alive %s",
				driver, base.p99, baseKA.p99, slow.p99, slowKA.p99)
			t.Logf("%s with shadow to a 2s standby: new connections: %s; keep-alive: %s", driver, slow, slowKA)
			if slow.failed+slowKA.failed > 0 {
				t.Errorf("with a slow standby: %s; %s; want 0 failed", slow, slowKA)
			}
			if slow.p99 >= time.Second {
				t.Errorf("with a standby taking 2s, new-connection clients' p99 is %s: they waited for the copies", slow.p99)
			}
			if driver == "builtin" && slowKA.p99 >= time.Second {
				t.Errorf("with a standby taking 2s, keep-alive clients' p99 is %s through the builtin proxy: they waited for the copies", slowKA.p99)
			}
			if driver == "builtin" {
				st := s.must("status")
				t.Logf("status:\n%s", st)
				if !strings.Contains(st, "dropped ") || !strings.Contains(st, "error ") {
					t.Errorf("status does not count the copies:\n%s", st)
				}
			}

			out = s.must("shadow", "off")
			if !strings.Contains(out, "shadow traffic off: green gets no more copies") {
				t.Errorf("shadow off said %q", out)
			}
			before = demoCounts(t, green)
			clients(url, 20, false)
			time.Sleep(200 * time.Millisecond)
			if c := demoCounts(t, green); c.Requests != before.Requests {
				t.Errorf("after shadow off green got %d more requests", c.Requests-before.Requests)
			}
			// A client's own X-Bgd-Shadow never reaches a slot.
			blueBefore := demoCounts(t, blue)
			for range 5 {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("X-Bgd-Shadow", "1")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			if c := demoCounts(t, blue); c.Requests-blueBefore.Requests != 5 || c.Shadow != blueBefore.Shadow {
				t.Errorf("5 client requests marked X-Bgd-Shadow: blue got %d requests, %d of them marked", c.Requests-blueBefore.Requests, c.Shadow-blueBefore.Shadow)
			}
			if st := s.must("status"); strings.Contains(st, "Shadow:") {
				t.Errorf("status after shadow off:\n%s", st)
			}
			var hist struct {
				History []struct{ Action, Status, Reason string } `json:"deployment_history"`
			}
			if err := json.Unmarshal([]byte(s.must("--json", "history")), &hist); err != nil {
				t.Fatal(err)
			}
			var shadows []string
			for _, e := range hist.History {
				if e.Action == "shadow" {
					shadows = append(shadows, e.Reason+" "+e.Status)
				}
			}
			if !slices.Equal(shadows, []string{"on success", "off success"}) {
				t.Errorf("history of shadow: %v, want on then off, both success", shadows)
			}
		})
	}
}

// TestShadowRefusals: shadow on is refused (exit 2) by HAProxy, which
// cannot copy requests, and (exit 1) when the standby is not running,
// both without changing the routing or the state.
func TestShadowRefusals(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	lbYAML, url := canaryLB(t, "haproxy", blue, green, false)
	s := testService(t, blue, green, lbYAML, "")
	s.must("start", "blue", "--release", "v1")
	s.must("start", "green", "--release", "v2")
	_, errOut, code := s.run("shadow", "on")
	t.Logf("haproxy: bgd shadow on: exit %d: %s", code, strings.TrimSpace(errOut))
	if code != 2 || !strings.Contains(errOut, "shadow traffic") || !strings.Contains(errOut, "haproxy") {
		t.Errorf("shadow on with HAProxy: exit %d: %s; want exit 2 naming the driver and shadow traffic", code, errOut)
	}
	if c := testsupport.CountSlots(url, 100, 2); c.Slots["blue"] != 100 {
		t.Errorf("after the refusal: %v of 100 requests, want all from blue", c.Slots)
	}
	if st := s.must("--json", "status"); strings.Contains(st, `"shadow"`) {
		t.Errorf("status after the refusal records shadow: %s", st)
	}

	// The builtin proxy refuses a stopped standby.
	blue2, green2 := freePort(t), freePort(t)
	lbYAML, _ = canaryLB(t, "builtin", blue2, green2, false)
	s = testService(t, blue2, green2, lbYAML, "")
	s.must("start", "blue", "--release", "v1")
	_, errOut, code = s.run("shadow", "on")
	if code != 1 || !strings.Contains(errOut, "bgd start green") {
		t.Errorf("shadow on with the standby stopped: exit %d: %s; want exit 1 telling to start green", code, errOut)
	}
	if st := s.must("--json", "status"); strings.Contains(st, `"shadow"`) {
		t.Errorf("status after the refusal records shadow: %s", st)
	}
}
