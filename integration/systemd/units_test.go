//go:build systemd

package systemd

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// unitTime is a unit's timestamp property (ExecMainStartTimestamp, ...) as
// systemd recorded it, to the microsecond; zero when it has none.
func (h *host) unitTime(unit, prop string) time.Time {
	h.t.Helper()
	v := h.must("systemctl", "show", "--timestamp=us+utc", "--value", "-p", prop, unit)
	if v == "" || v == "n/a" {
		return time.Time{}
	}
	ts, err := time.Parse("Mon 2006-01-02 15:04:05.999999 MST", v)
	if err != nil {
		h.t.Fatalf("%s %s: %v", unit, prop, err)
	}
	return ts
}

// prop is one property of a unit (systemctl show --value).
func (h *host) prop(unit, prop string) string {
	h.t.Helper()
	return h.must("systemctl", "show", "--value", "-p", prop, unit)
}

// jsonOut runs bgd with --json and decodes its one object.
func (h *host) jsonOut(args ...string) (map[string]any, error) {
	h.t.Helper()
	stdout, stderr, err := h.bgd(append([]string{"--json"}, args...)...)
	var m map[string]any
	if jerr := json.Unmarshal([]byte(stdout), &m); jerr != nil {
		h.t.Fatalf("bgd --json %s (%v): stdout is not one JSON object: %v\n%s\nstderr:\n%s", strings.Join(args, " "), err, jerr, stdout, stderr)
	}
	if err != nil {
		return m, fmt.Errorf("bgd --json %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return m, nil
}

// mustJSON is jsonOut that has to succeed.
func (h *host) mustJSON(args ...string) map[string]any {
	h.t.Helper()
	m, err := h.jsonOut(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// proxyListening: something answers HTTP on the proxy's port (any status).
func (h *host) proxyListening() bool {
	_, err := h.exec("curl", "-s", "-m", "1", "-o", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/", proxyPort))
	return err == nil
}

// checkSandboxed fails unless the unit's main process really runs in the
// sandbox the unit asks for: no new privileges, and "/" read-only in its
// mount namespace when readOnlyRoot (ProtectSystem=strict).
func (h *host) checkSandboxed(unit string, readOnlyRoot bool) {
	h.t.Helper()
	pid := h.prop(unit, "MainPID")
	if status := h.must("cat", "/proc/"+pid+"/status"); !strings.Contains(status, "NoNewPrivs:\t1") {
		h.t.Errorf("%s (pid %s) runs without NoNewPrivileges:\n%s", unit, pid, status)
	}
	if !readOnlyRoot {
		return
	}
	for _, line := range strings.Split(h.must("cat", "/proc/"+pid+"/mountinfo"), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" && strings.HasPrefix(f[5], "ro") {
			return
		}
	}
	h.t.Errorf("%s (pid %s): / is not read-only in its mount namespace: ProtectSystem=strict was not applied", unit, pid)
}

// TestProxyUnit runs the builtin proxy under the shipped bgd-proxy@.service:
// it starts sandboxed, bgd uses it instead of spawning its own, a deploy
// under load fails no request, and a SIGKILLed proxy is back within 2 s.
func TestProxyUnit(t *testing.T) {
	h := newHost(t)
	h.installBGD(config(""))
	// Type=notify: systemctl returns once bgd proxy said READY=1, and from
	// then on the proxy answers.
	h.must("systemctl", "enable", "--now", "bgd-proxy@app.service")
	if !h.proxyListening() {
		t.Fatalf("bgd-proxy@app is started but its proxy does not answer:\n%s", h.journal("bgd-proxy@app.service"))
	}
	if typ, state := h.prop("bgd-proxy@app.service", "Type"), h.prop("bgd-proxy@app.service", "ActiveState"); typ != "notify" || state != "active" {
		t.Fatalf("bgd-proxy@app: Type=%s ActiveState=%s, want a notify unit that is active", typ, state)
	}
	h.checkSandboxed("bgd-proxy@app.service", true)

	h.mustJSON("start", "blue")
	st := h.mustJSON("status")
	proxy, _ := st["proxy"].(map[string]any)
	if proxy["running"] != true || proxy["managed"] != false {
		t.Fatalf("status: the proxy should run under systemd, not started by bgd: %v", proxy)
	}
	if pid := fmt.Sprint(proxy["pid"]); pid != h.prop("bgd-proxy@app.service", "MainPID") {
		t.Fatalf("the proxy answering is pid %s, not the unit's main process %s", pid, h.prop("bgd-proxy@app.service", "MainPID"))
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("through the proxy: %q, %v", by, err)
	}

	l := h.startLoad(5 * time.Second)
	if res := h.mustJSON("deploy", "--release", "v2"); res["changed"] != true || res["active_version"] != "green" {
		t.Fatalf("deploy: %v", res)
	}
	r := l.wait()
	t.Logf("deploy under load: %d requests sent, %d failed, answered by %v", r.Sent, r.Failed, r.Slots)
	if r.Failed != 0 || !slices.Contains(r.Slots, "green") {
		t.Fatalf("deploy under load: %d of %d requests failed (%+v), slots %v", r.Failed, r.Sent, r.Outages, r.Slots)
	}

	// The proxy crashes: systemd restarts it (Restart=always, RestartSec=100ms).
	h.killUnderLoad("bgd-proxy@app.service", "proxy SIGKILL (bgd-proxy@)")
	if n := h.prop("bgd-proxy@app.service", "NRestarts"); n != "1" {
		t.Errorf("NRestarts=%s after one kill", n)
	}
	if by, err := h.answer(); by != "green" || err != nil {
		t.Fatalf("after the proxy's restart: %q, %v", by, err)
	}
	// A health sweep leaves a proxy systemd runs to systemd.
	hc := h.mustJSON("health-check")
	if fmt.Sprint(hc["ok"]) != "true" {
		t.Fatalf("health-check: %v", hc)
	}
	if n, _ := h.exec("pgrep", "-c", "-f", "^/usr/local/bin/bgd .*proxy$"); n != "1" {
		t.Fatalf("%s bgd proxies run after the sweep, want the unit's one:\n%s", n, h.out("ps", "-ef"))
	}
}

// TestHealthTimerFiresOnItsOwn: the shipped timer starts bgd-health.service
// by itself (its intervals shortened by a drop-in of the test's, not in the
// shipped unit) and the sweep's result is in the journal; a sweep restarts
// a crashed slot, which outlives the sweep's unit; a sweep that finds the
// proxy down fails the unit with bgd's message.
func TestHealthTimerFiresOnItsOwn(t *testing.T) {
	h := newHost(t)
	h.installBGD(config(""))
	h.must("systemctl", "enable", "--now", "bgd-proxy@app.service")
	h.waitFor(5*time.Second, "the proxy answering", h.proxyListening)
	h.mustJSON("start", "blue")
	h.write("/etc/systemd/system/bgd-health.timer.d/test.conf",
		// An empty assignment resets every On*Sec= of the timer.
		"[Timer]\nOnActiveSec=\nOnActiveSec=1s\nOnUnitActiveSec=2s\nAccuracySec=100ms\n", 0o644)
	h.must("systemctl", "daemon-reload")
	started := time.Now()
	h.must("systemctl", "enable", "--now", "bgd-health.timer")
	h.waitFor(20*time.Second, "two sweeps started by the timer", func() bool {
		return strings.Count(h.journal("bgd-health.service"), "Finished bgd-health.service") >= 2
	})
	t.Logf("two sweeps within %s of enabling the timer", time.Since(started).Round(time.Millisecond))
	j := h.journal("bgd-health.service")
	if !strings.Contains(j, "bgd-lb bgd[") || !strings.Contains(j, "blue (active)") || strings.Contains(j, "Failed with result") {
		t.Fatalf("journal of bgd-health.service: no sweep report of bgd's, or a failed sweep:\n%s", j)
	}
	if res := h.prop("bgd-health.service", "Result"); res != "success" {
		t.Fatalf("bgd-health.service Result=%s\n%s", res, j)
	}
	st := h.mustJSON("status")
	if st["last_check"] == nil {
		t.Fatalf("no last_check recorded by the timer's sweeps: %v", st)
	}

	// The active slot, a detached process (the default runner), crashes
	// under load: a sweep of the timer restarts it, and it keeps running
	// in bgd-health.service's cgroup after that oneshot unit has ended
	// (KillMode=process).
	oldBlue := slotPID(st, "blue")
	l := h.startLoad(8 * time.Second)
	time.Sleep(500 * time.Millisecond)
	killAt := h.at("kill", "-KILL", fmt.Sprint(oldBlue))
	var blue int
	h.waitFor(10*time.Second, "blue restarted by a sweep", func() bool {
		blue = slotPID(h.mustJSON("status"), "blue")
		return blue != 0 && blue != oldBlue
	})
	r := l.wait()
	served, failed := r.After(killAt)
	t.Logf("outages relative to the kill: %s", r.Describe(killAt))
	record(t, recovery{what: "active slot SIGKILL (process runner, sweep every 2 s)", served: served, sent: r.Sent, failed: failed})
	if served <= 0 || served > 8*time.Second {
		t.Fatalf("after the active slot was killed, requests answered again after %s (%+v)", ms(served), r.Outages)
	}
	sweeps := strings.Count(h.journal("bgd-health.service"), "Finished bgd-health.service")
	h.waitFor(10*time.Second, "another sweep", func() bool {
		return strings.Count(h.journal("bgd-health.service"), "Finished bgd-health.service") > sweeps
	})
	if got := slotPID(h.mustJSON("status"), "blue"); got != blue {
		t.Fatalf("the restarted blue (pid %d) did not outlive the sweep that started it: now %d\n%s", blue, got, h.journal("bgd-health.service"))
	}
	if cg := systemdCgroup(h.must("cat", fmt.Sprintf("/proc/%d/cgroup", blue))); !strings.HasSuffix(cg, "/bgd-health.service") {
		t.Errorf("the restarted blue runs in %s, expected bgd-health.service's cgroup", cg)
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("after the sweep's restart: %q, %v", by, err)
	}

	// The proxy is down (stopped, so systemd does not restart it): the
	// sweep fails the unit, with bgd's message in the journal, and the
	// failure shows in systemctl --failed.
	h.must("systemctl", "stop", "bgd-proxy@app.service")
	h.waitFor(20*time.Second, "a failed sweep in the journal", func() bool {
		return strings.Contains(h.journal("bgd-health.service"), "Failed with result")
	})
	j = h.journal("bgd-health.service")
	t.Logf("journal of the failed sweep:\n%s", lastLines(j, 6))
	if !strings.Contains(j, "the builtin proxy for app is not running") {
		t.Fatalf("the failed sweep's journal lacks bgd's message:\n%s", lastLines(j, 12))
	}
	if failed := h.out("systemctl", "--failed", "--no-legend", "--plain"); !strings.Contains(failed, "bgd-health.service") {
		t.Fatalf("systemctl --failed does not list bgd-health.service:\n%s", failed)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
