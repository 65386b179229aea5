//go:build systemd

package systemd

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// slotPID is a slot's pid as bgd status reports it (0: not running).
func slotPID(st map[string]any, color string) int {
	s, _ := st[color].(map[string]any)
	if s["running"] != true {
		return 0
	}
	pid, _ := s["pid"].(float64)
	return int(pid)
}

// restart stops the container (systemd shuts down on SIGRTMIN+3) and starts
// it again; it returns when the container runs again, with how long the
// stop took and the moment of the start.
func (h *host) restart() (stopped time.Duration, startedAt time.Time) {
	h.t.Helper()
	t0 := time.Now()
	if b, err := exec.Command(h.docker, "stop", "-t", "30", h.name).CombinedOutput(); err != nil {
		h.t.Fatalf("docker stop: %v\n%s", err, b)
	}
	stopped = time.Since(t0)
	startedAt = time.Now()
	if b, err := exec.Command(h.docker, "start", h.name).CombinedOutput(); err != nil {
		h.t.Fatalf("docker start: %v\n%s", err, b)
	}
	return stopped, startedAt
}

// waitAnswer polls the proxy until it answers from color, and returns when.
func (h *host) waitAnswer(color string, limit time.Duration) time.Time {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		by, err := h.answer()
		if by == color && err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the proxy did not answer from %s within %s: %q, %v\n%s", color, limit, by, err, h.out("systemctl", "status", "--no-pager", "bgd-up@app.service", "bgd-proxy@app.service"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBootBringsTheServiceBack, for each slot runner: bgd-up@ starts the
// service on a fresh host; a restart of the unit changes nothing and keeps
// the slots (KillMode=process for the detached runner); after a deploy, a
// restart of the whole container (systemd shut down and booted again)
// brings the service back on the recorded colour and release, the standby
// too, answered through bgd-proxy@.
func TestBootBringsTheServiceBack(t *testing.T) {
	for _, runner := range []string{"process", "systemd"} {
		t.Run(runner, func(t *testing.T) {
			extra := ""
			if runner == "systemd" {
				extra = "    runner: systemd\n"
			}
			h := newHost(t)
			h.installBGD(config(extra))
			h.must("systemctl", "enable", "--now", "bgd-proxy@app.service")
			h.must("systemctl", "enable", "bgd-up@app.service", "bgd-health.timer")
			h.must("systemctl", "start", "bgd-up@app.service")
			h.waitAnswer("blue", 10*time.Second)
			if s := h.prop("bgd-up@app.service", "ActiveState") + "/" + h.prop("bgd-up@app.service", "SubState"); s != "active/exited" {
				t.Fatalf("bgd-up@app after a fresh start: %s, want active/exited", s)
			}
			st := h.mustJSON("status")
			blue := slotPID(st, "blue")
			if blue == 0 {
				t.Fatalf("blue is not running after bgd-up@app: %v", st)
			}
			cg := h.must("cat", fmt.Sprintf("/proc/%d/cgroup", blue))
			t.Logf("runner %s: blue (pid %d) runs in the cgroup %s", runner, blue, systemdCgroup(cg))
			// The detached process stays in the cgroup of the unit that ran
			// bgd (hence KillMode=process); the systemd runner's is its own.
			want := map[string]string{"process": "/bgd-up@app.service", "systemd": "/bgd-slot-app-blue.service"}[runner]
			if !strings.HasSuffix(systemdCgroup(cg), want) {
				t.Fatalf("runner %s: blue's cgroup is not ...%s:\n%s", runner, want, cg)
			}

			// Restarting the oneshot unit runs `bgd up` again: nothing to do,
			// and the slot it started before survives the unit's stop.
			h.must("systemctl", "restart", "bgd-up@app.service")
			if got := slotPID(h.mustJSON("status"), "blue"); got != blue {
				t.Fatalf("blue's pid went from %d to %d across a restart of bgd-up@app", blue, got)
			}
			if j := h.journal("bgd-up@app.service"); strings.Count(j, "Finished bgd-up@app.service") != 2 {
				t.Fatalf("bgd-up@app ran %d times, want 2:\n%s", strings.Count(j, "Finished bgd-up@app.service"), j)
			}

			if res := h.mustJSON("deploy", "--release", "v2"); res["active_version"] != "green" {
				t.Fatalf("deploy: %v", res)
			}
			stopped, startedAt := h.restart()
			h.waitBooted(60 * time.Second)
			answered := h.waitAnswer("green", 30*time.Second)
			upAt := h.unitTime("bgd-up@app.service", "ActiveEnterTimestamp")
			record(t, recovery{what: "container restart (" + runner + ")", back: upAt.Sub(startedAt), served: answered.Sub(startedAt)})
			t.Logf("docker stop took %s (systemd's shutdown); bgd-up@app active %s after docker start, answered %s after",
				ms(stopped), ms(upAt.Sub(startedAt)), ms(answered.Sub(startedAt)))

			t.Logf("systemctl status bgd-up@app after the restart:\n%s", h.out("systemctl", "status", "--no-pager", "-n", "5", "bgd-up@app.service"))
			if s := h.prop("bgd-up@app.service", "ActiveState") + "/" + h.prop("bgd-up@app.service", "Result"); s != "active/success" {
				t.Fatalf("bgd-up@app after the restart: %s", s)
			}
			st = h.mustJSON("status")
			green, _ := st["green"].(map[string]any)
			if st["active_version"] != "green" || st["lb_active"] != "green" || green["release"] != "v2" || slotPID(st, "green") == 0 {
				t.Fatalf("after the restart: %v", st)
			}
			if slotPID(st, "blue") == 0 {
				t.Errorf("the standby blue ran before the restart and does not after it: %v", st)
			}
			// The timer's first sweep after boot is left to its own
			// interval (1 min): a sweep run now must find all well.
			h.must("systemctl", "start", "bgd-health.service")
			if r := h.prop("bgd-health.service", "Result"); r != "success" {
				t.Fatalf("a sweep after the restart: %s\n%s", r, h.journal("bgd-health.service"))
			}
			if got := slotPID(h.mustJSON("status"), "green"); got != slotPID(st, "green") {
				t.Fatalf("the sweep (its unit stopped since) took green with it: pid %d, was %d", got, slotPID(st, "green"))
			}
		})
	}
}

// TestSlotCrashUnderSystemdRunner: with `runner: systemd` each slot is the
// transient unit bgd-slot-app-<colour>; a deploy under load fails no
// request, and a SIGKILLed active slot is restarted by systemd, requests
// answered again within 2 s.
func TestSlotCrashUnderSystemdRunner(t *testing.T) {
	h := newHost(t)
	h.installBGD(config("    runner: systemd\n"))
	h.must("systemctl", "enable", "--now", "bgd-proxy@app.service")
	h.must("systemctl", "start", "bgd-up@app.service")
	h.waitAnswer("blue", 10*time.Second)

	l := h.startLoad(5 * time.Second)
	if res := h.mustJSON("deploy", "--release", "v2"); res["active_version"] != "green" {
		t.Fatalf("deploy: %v", res)
	}
	r := l.wait()
	t.Logf("deploy under load: %d requests sent, %d failed, answered by %v", r.Sent, r.Failed, r.Slots)
	if r.Failed != 0 || !slices.Contains(r.Slots, "green") {
		t.Fatalf("deploy under load: %d of %d requests failed (%+v)", r.Failed, r.Sent, r.Outages)
	}

	unit := "bgd-slot-app-green.service"
	h.killUnderLoad(unit, "active slot SIGKILL (systemd)")
	if by, err := h.answer(); by != "green" || err != nil {
		t.Fatalf("after the slot's restart: %q, %v", by, err)
	}
	if logs, _, err := h.bgd("logs", "green", "-n", "5"); err != nil || strings.TrimSpace(logs) == "" {
		t.Errorf("bgd logs green (the journal of %s): %v\n%s", unit, err, logs)
	}
}

// systemdCgroup is the path of systemd's cgroup in /proc/PID/cgroup (the
// name=systemd hierarchy of cgroup v1, else the unified one).
func systemdCgroup(procCgroup string) string {
	unified := ""
	for _, l := range strings.Split(procCgroup, "\n") {
		if _, path, ok := strings.Cut(l, ":name=systemd:"); ok {
			return path
		}
		if path, ok := strings.CutPrefix(l, "0::"); ok {
			unified = path
		}
	}
	return unified
}
