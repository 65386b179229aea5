package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// drainRun is what one drain scenario saw.
type drainRun struct {
	drain struct {
		Slot     string        `json:"slot"`
		InFlight int           `json:"in_flight"`
		Waited   time.Duration `json:"waited_ns"`
		Drained  bool          `json:"drained"`
		TimedOut bool          `json:"timed_out"`
		Error    string        `json:"error"`
		Message  string        `json:"message"`
	}
	drained  bool // the stop's JSON has a drain
	message  string
	stopTook time.Duration
	// The slow request: its status (0 when it failed), the slot that
	// answered, its error, and when it ended relative to the stop's end
	// (negative: before).
	status   int
	slot     string
	reqErr   error
	reqTook  time.Duration
	endVsEnd time.Duration
}

// drainService writes a bluegreen.yml of service "app" whose slots run
// the demo app with --hard-stop (an app that drops in-flight requests on
// SIGTERM, so only a drain saves them), with drain_timeout, and returns a
// runner of bgd on it (serviceRunner).
func drainService(t *testing.T, blue, green int, lbYAML, drainTimeout string) func(args ...string) string {
	t.Helper()
	return serviceRunner(t, blue, green, lbYAML, "    drain_timeout: "+drainTimeout+"\n", "--hard-stop")
}

// serviceRunner writes a bluegreen.yml of service "app" (testService) and
// returns a runner of bgd on it that fails the test on a non-zero exit.
func serviceRunner(t *testing.T, blue, green int, lbYAML, extraYAML string, demoFlags ...string) func(args ...string) string {
	t.Helper()
	return testService(t, blue, green, lbYAML, extraYAML, demoFlags...).must
}

// service is a bluegreen.yml of one service "app" in its own directory.
type service struct {
	t   *testing.T
	dir string
}

// testService writes a bluegreen.yml of service "app" whose slots run the
// demo app (with demoFlags), with lbYAML as its `lb:` block and extraYAML
// (whole lines, indented four spaces) as more service keys. What the state
// records is killed when the test ends.
func testService(t *testing.T, blue, green int, lbYAML, extraYAML string, demoFlags ...string) *service {
	t.Helper()
	dir := t.TempDir()
	list := func(argv ...string) string { data, _ := json.Marshal(argv); return string(data) }
	argv := append(append([]string{bgdBin, "demo-app"}, demoFlags...), "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}")
	yml := fmt.Sprintf(`state_dir: %q
services:
  app:
    command: %s
    blue: {port: %d}
    green: {port: %d}
    health: {timeout: 10s}
    stop_grace: 2s
%s    lb:
%s`, filepath.Join(dir, "state"), list(argv...), blue, green, extraYAML, lbYAML)
	if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	stopAll(t, filepath.Join(dir, "state", "bg_state.json"))
	return &service{t: t, dir: dir}
}

// run runs bgd on the service: stdout, stderr and the exit code.
func (s *service) run(args ...string) (string, string, int) {
	s.t.Helper()
	return bgd(s.t, s.dir, []string{"NO_COLOR=1"}, args...)
}

// must runs bgd on the service and fails the test on a non-zero exit.
func (s *service) must(args ...string) string {
	s.t.Helper()
	out, errOut, code := s.run(args...)
	if code != 0 {
		s.t.Fatalf("bgd %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// answer is how a request through the load balancer ended.
type answer struct {
	status int // 0 when it failed
	slot   string
	err    error
	took   time.Duration
	ended  time.Time
}

// slowRequest GETs url?delay=delay on a new connection in the background.
func slowRequest(url string, delay time.Duration) <-chan answer {
	done := make(chan answer, 1)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	sent := time.Now()
	go func() {
		resp, err := client.Get(fmt.Sprintf("%s?delay=%s", url, delay))
		a := answer{err: err}
		if err == nil {
			_, a.err = io.ReadAll(resp.Body)
			resp.Body.Close()
			a.status, a.slot = resp.StatusCode, resp.Header.Get("X-Slot")
		}
		a.took, a.ended = time.Since(sent), time.Now()
		done <- a
	}()
	return done
}

// drainScenario runs the case on a real load balancer (lbYAML is
// the service's `lb:` block, url the service through it; drainService): a
// request of delay is sent to
// blue through the load balancer; while it is in flight, `bgd switch
// green` and then `bgd stop blue --json`.
func drainScenario(t *testing.T, blue, green int, lbYAML, url, drainTimeout string, delay time.Duration) drainRun {
	t.Helper()
	run := drainService(t, blue, green, lbYAML, drainTimeout)
	run("start", "blue")
	run("start", "green")
	done := slowRequest(url, delay)
	time.Sleep(300 * time.Millisecond) // the request reaches blue
	run("switch", "green")
	began := time.Now()
	out := run("stop", "blue", "--json")
	var r drainRun
	r.stopTook = time.Since(began)
	stopEnd := time.Now()
	var res struct {
		OK      bool            `json:"ok"`
		Message string          `json:"message"`
		Drain   json.RawMessage `json:"drain"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.OK {
		t.Fatalf("bgd stop blue --json: %v\n%s", err, out)
	}
	r.drained = res.Drain != nil
	if r.drained {
		if err := json.Unmarshal(res.Drain, &r.drain); err != nil {
			t.Fatal(err)
		}
	}
	r.message = res.Message
	a := <-done
	r.status, r.slot, r.reqErr, r.reqTook, r.endVsEnd = a.status, a.slot, a.err, a.took, a.ended.Sub(stopEnd)
	t.Logf("request of %s: status %d from %q (err %v) after %s, %s relative to the stop's end; stop took %s: %q",
		delay, r.status, r.slot, r.reqErr, r.reqTook.Round(time.Millisecond), r.endVsEnd.Round(time.Millisecond),
		r.stopTook.Round(time.Millisecond), r.message)
	return r
}

// checkDrained: the slow request was answered 200 by blue, before blue was
// stopped, and the stop says it waited for it.
func checkDrained(t *testing.T, r drainRun) {
	t.Helper()
	if r.reqErr != nil || r.status != http.StatusOK || r.slot != "blue" {
		t.Errorf("the request in flight during switch and stop: status %d from %q, err %v; want 200 from blue", r.status, r.slot, r.reqErr)
	}
	if !r.drain.Drained || r.drain.TimedOut || r.drain.InFlight != 0 || r.drain.Slot != "blue" || r.drain.Error != "" {
		t.Errorf("drain = %+v, want drained blue", r.drain)
	}
	// The request still had more than a second to run when the stop began.
	if r.drain.Waited < 500*time.Millisecond || r.drain.Waited > 5*time.Second {
		t.Errorf("drain waited %s, want the rest of the request (about 1-2 s)", r.drain.Waited)
	}
	if !strings.HasPrefix(r.message, "blue stopped; drained blue: 0 in flight after ") {
		t.Errorf("stop message %q", r.message)
	}
}

// checkTimedOut: with drain_timeout 500ms and a 4 s request, the stop waits
// about 500 ms, says so, and stops blue anyway: the hard-stopping app drops
// the request (what every stop did before drains).
func checkTimedOut(t *testing.T, r drainRun) {
	t.Helper()
	if !r.drain.TimedOut || r.drain.Drained || r.drain.InFlight < 1 {
		t.Errorf("drain = %+v, want timed out with the request in flight", r.drain)
	}
	if r.drain.Waited < 500*time.Millisecond || r.drain.Waited > 1500*time.Millisecond {
		t.Errorf("drain waited %s, want about drain_timeout (500ms)", r.drain.Waited)
	}
	if !strings.Contains(r.message, "drain of blue timed out with ") || !strings.Contains(r.message, "stopped anyway") {
		t.Errorf("stop message %q", r.message)
	}
	if r.reqErr == nil && r.status == http.StatusOK {
		t.Errorf("the 4 s request answered 200 although blue was stopped (hard) while it ran: the test proves nothing")
	}
	if r.endVsEnd > time.Second {
		t.Errorf("the request ended %s after the stop: it was not cut by the stop", r.endVsEnd)
	}
}

// checkNotDrained: drain_timeout 0s stops blue at once (no drain in the
// answer) and the hard-stopping app drops the 2 s request, as every stop
// did before drains.
func checkNotDrained(t *testing.T, r drainRun) {
	t.Helper()
	if r.drained || r.message != "blue stopped" {
		t.Errorf("drain_timeout 0s: stop said %q, drain %+v; want no drain", r.message, r.drain)
	}
	if r.reqErr == nil && r.status == http.StatusOK {
		t.Errorf("the 2 s request answered 200 although blue was stopped (hard) at once while it ran: the test proves nothing")
	}
}

func builtinLB(t *testing.T) (lbYAML, url string) {
	port := freePort(t)
	return fmt.Sprintf("      driver: builtin\n      builtin: {listen: \"127.0.0.1:%d\"}\n", port), fmt.Sprintf("http://127.0.0.1:%d/", port)
}

func haproxyLB(t *testing.T, blue, green int, s ...haSetup) (lbYAML, url string) {
	h := newHAProxy(t, blue, green, append(s, haSetup{})[0])
	return fmt.Sprintf("      driver: haproxy\n      haproxy: {socket: %q, map_file: %q}\n", h.sock, h.mapFile), h.url()
}

func nginxLB(t *testing.T) (lbYAML, url string) {
	n := newNginx(t, nginxSetup{})
	c := n.cfg()
	list := func(argv []string) string { data, _ := json.Marshal(argv); return string(data) }
	return fmt.Sprintf("      driver: nginx\n      nginx: {file: %q, listen: %q, test: %s, reload: %s, verify_url: %q, access_log: %q}\n",
		c.File, c.Listen, list(c.Test), list(c.Reload), c.VerifyURL, filepath.Join(t.TempDir(), "bgd-app.json.log")), n.url()
}

// TestDrainBeforeStop: per driver, a 2 s request in flight during switch
// and stop completes with 200; with drain_timeout shorter than the
// request, the stop waits drain_timeout and stops anyway; with 0s it does
// not wait, and the request is dropped.
func TestDrainBeforeStop(t *testing.T) {
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		for _, c := range []struct {
			name    string
			timeout string
			delay   time.Duration
			check   func(*testing.T, drainRun)
		}{
			{"drained", "10s", 2 * time.Second, checkDrained},
			{"timeout", "500ms", 4 * time.Second, checkTimedOut},
			{"off", "0s", 2 * time.Second, checkNotDrained},
		} {
			t.Run(driver+"/"+c.name, func(t *testing.T) {
				blue, green := freePort(t), freePort(t)
				var lbYAML, url string
				switch driver {
				case "builtin":
					lbYAML, url = builtinLB(t)
				case "haproxy":
					lbYAML, url = haproxyLB(t, blue, green)
				case "nginx":
					lbYAML, url = nginxLB(t)
				}
				c.check(t, drainScenario(t, blue, green, lbYAML, url, c.timeout, c.delay))
			})
		}
	}
}

// TestDeployDrainsTheStandbyItReplaces: a request that started on blue
// before two deploys (v2 to green, v3 back to blue) is not cut by the
// second one, which replaces blue: the deploy drains it first and says so.
func TestDeployDrainsTheStandbyItReplaces(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	lbYAML, url := builtinLB(t)
	run := drainService(t, blue, green, lbYAML, "10s")
	run("start", "blue")
	done := slowRequest(url, 3*time.Second)
	time.Sleep(300 * time.Millisecond) // the request reaches blue
	run("deploy", "--release", "v2")
	out := run("deploy", "--release", "v3", "--json")
	var res struct {
		Slot    string `json:"slot"`
		Message string `json:"message"`
		Drain   *struct {
			Slot    string        `json:"slot"`
			Drained bool          `json:"drained"`
			Waited  time.Duration `json:"waited_ns"`
		} `json:"drain"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bgd deploy --json: %v\n%s", err, out)
	}
	a := <-done
	t.Logf("request of 3s: status %d from %q (err %v) after %s; deploy v3: %q",
		a.status, a.slot, a.err, a.took.Round(time.Millisecond), res.Message)
	if a.err != nil || a.status != http.StatusOK || a.slot != "blue" {
		t.Errorf("the request in flight on blue: status %d from %q, err %v; want 200 from blue", a.status, a.slot, a.err)
	}
	if res.Slot != "blue" || res.Drain == nil || !res.Drain.Drained || res.Drain.Slot != "blue" || res.Drain.Waited < 500*time.Millisecond ||
		!strings.Contains(res.Message, "; drained blue: 0 in flight after ") {
		t.Errorf("deploy v3 = %s, want blue drained for the rest of the request", out)
	}
}
