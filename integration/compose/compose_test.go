//go:build compose

package compose

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

var releaseSeq atomic.Int64

// release is a release name not used before in this run (a deploy of the
// release already live changes nothing).
func release(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().Unix()%100000, releaseSeq.Add(1))
}

// The load of the flips: new-connection and keep-alive clients, paced so
// that three engineers' tests and bgd share two cores.
var (
	newConnLoad   = testsupport.WrkLoad{Conns: 4, NewConn: true, Delay: 10 * time.Millisecond}
	keepAliveLoad = testsupport.WrkLoad{Conns: 4, Delay: 10 * time.Millisecond}
)

// switchFlips is how many `bgd switch` flips follow the deploy and the
// rollback in each driver's loaded window.
const switchFlips = 10

// TestFlipsUnderLoad: on each LB host, a deploy, a rollback and 10 switches
// while the client container loads the load balancer with wrk, one run with
// a new connection per request and one with keep-alive connections. After
// every flip the client's next request must be answered by the new colour.
// No request may fail, except keep-alive requests through nginx (its
// reloads close idle keep-alive connections; they are counted and printed).
func TestFlipsUnderLoad(t *testing.T) {
	need(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) { flipsUnderLoad(t, d) })
	}
}

func flipsUnderLoad(t *testing.T, d driver) {
	from := getStatus(t, d).Active
	expectColour(t, d, from, "", "the start")
	newConn := startWrk(t, d.url, newConnLoad)
	keepAlive := startWrk(t, d.url, keepAliveLoad)
	time.Sleep(500 * time.Millisecond) // load before the first flip
	began := time.Now()

	rel := release("v")
	dep := bgdJSON(t, d, 0, "deploy", "--release", rel)
	if dep["active_version"] != other(from) || dep["changed"] != true {
		t.Fatalf("deploy --release %s: %v, want green active and changed", rel, dep)
	}
	expectColour(t, d, other(from), rel, "deploy --release "+rel)
	bgdJSON(t, d, 0, "rollback")
	expectColour(t, d, from, "", "rollback")
	flips, colour := 2, from
	for i := 1; i <= switchFlips; i++ {
		colour = other(colour)
		bgdJSON(t, d, 0, "switch", colour)
		flips++
		expectColour(t, d, colour, "", fmt.Sprintf("switch %d to %s", i, colour))
	}
	flipTime := time.Since(began)
	time.Sleep(500 * time.Millisecond) // load after the last flip

	nc, err := newConn.stop()
	if err != nil {
		t.Fatal(err)
	}
	ka, err := keepAlive.stop()
	if err != nil {
		t.Fatal(err)
	}
	record(result{driver: d.name, client: "new connection", flips: flips, wrk: nc})
	record(result{driver: d.name, client: "keep-alive", flips: flips, wrk: ka})
	for _, c := range []struct {
		kind  string
		r     testsupport.WrkResult
		clean bool
	}{{"new-connection", nc, true}, {"keep-alive", ka, d.keepAliveClean}} {
		t.Logf("%s: %d flips in %s; %s clients: %d requests, %d failed (connect %d, read %d, write %d, timeout %d, non-2xx %d), p99 %.1f ms",
			d.name, flips, flipTime.Round(time.Millisecond), c.kind, c.r.Requests, c.r.Failures,
			c.r.Connect, c.r.Read, c.r.Write, c.r.Timeout, c.r.Non2xx, c.r.P99Ms)
		if c.r.Requests < 100 {
			t.Errorf("%s %s clients sent only %d requests: the load did not run", d.name, c.kind, c.r.Requests)
		}
		if c.clean && c.r.Failures != 0 {
			t.Errorf("%s: %d of %d %s requests failed across %d flips, want 0", d.name, c.r.Failures, c.r.Requests, c.kind, flips)
		}
	}
}

// TestFaults: on each LB host, in turn: the load balancer restarted, the
// active slot SIGKILLed, bgd SIGKILLed in the middle of a deploy, and the
// whole container restarted.
func TestFaults(t *testing.T) {
	need(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Run("restart-lb", func(t *testing.T) { restartLB(t, d) })
			t.Run("kill-active-slot", func(t *testing.T) { killActiveSlot(t, d) })
			t.Run("kill-bgd-mid-deploy", func(t *testing.T) { killBgdMidDeploy(t, d) })
			t.Run("restart-container", func(t *testing.T) { restartContainer(t, d) })
		})
	}
}

// activate makes colour the active one, starting its slot if needed.
func activate(t *testing.T, d driver, colour string) {
	t.Helper()
	st := getStatus(t, d)
	if st.Active == colour && st.slot(colour).Healthy {
		return
	}
	if !st.slot(colour).Healthy {
		bgdJSON(t, d, 0, "start", colour)
	}
	bgdJSON(t, d, 0, "switch", colour)
}

// restartLB: nginx and HAProxy stopped and started again from their files
// keep routing to the active colour (green, not the default); the builtin
// proxy SIGKILLed is an outage `bgd health-check` reports (exit 1) and
// repairs, since bgd started it.
func restartLB(t *testing.T, d driver) {
	activate(t, d, "green")
	if d.name == "builtin" {
		st := getStatus(t, d)
		if st.Proxy == nil || !st.Proxy.Running || st.Proxy.PID == 0 {
			t.Fatalf("the builtin proxy does not run: %+v", st.Proxy)
		}
		must(t, d.service, "kill", "-KILL", strconv.Itoa(st.Proxy.PID))
		waitGone(t, d, st.Proxy.PID)
		hc := bgdJSON(t, d, 1, "health-check")
		if !strings.Contains(fmt.Sprint(hc["error"]), "proxy") {
			t.Fatalf("health-check with the proxy killed: %v, want an error about the proxy", hc)
		}
		after := getStatus(t, d)
		if after.Proxy == nil || !after.Proxy.Running || after.Proxy.PID == st.Proxy.PID {
			t.Fatalf("after health-check the proxy is %+v, want a new one running", after.Proxy)
		}
	} else {
		out := must(t, d.service, "bgd-entrypoint", "restart-lb")
		t.Logf("%s: %s", d.service, strings.TrimSpace(out))
	}
	if _, err := waitColour(d, "green", 10*time.Second); err != nil {
		t.Fatalf("after restarting the load balancer: %v", err)
	}
	if st := getStatus(t, d); st.LBActive != "green" || st.Active != "green" {
		t.Fatalf("after the restart: active %s, the load balancer routes to %s; want green for both", st.Active, st.LBActive)
	}
}

// waitGone waits until pid no longer runs in the driver's container (docker
// init reaps it).
func waitGone(t *testing.T, d driver, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := execIn(d.service, "", "kill", "-0", strconv.Itoa(pid))
		if err == nil && r.code != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pid %d still runs 5 s after SIGKILL", d.service, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killActiveSlot: the active slot SIGKILLed, then `bgd health-check`. On
// lb-builtin (health.max_restarts 3) it restarts the slot and exits 0; on
// lb-haproxy (max_restarts 0, failover) it flips to the healthy standby,
// which then answers; on lb-nginx (max_restarts 0, no failover) it exits 1
// naming the active slot, and `bgd start` brings it back.
func killActiveSlot(t *testing.T, d driver) {
	st := getStatus(t, d)
	active, standby := st.Active, other(st.Active)
	if !st.slot(standby).Healthy {
		bgdJSON(t, d, 0, "start", standby)
	}
	pid := st.slot(active).PID
	if pid == 0 {
		t.Fatalf("no pid recorded for the active slot %s", active)
	}
	must(t, d.service, "kill", "-KILL", strconv.Itoa(pid))
	waitGone(t, d, pid)
	if d.restarts {
		hc := bgdJSON(t, d, 0, "health-check")
		if !strings.Contains(fmt.Sprint(hc["services"]), "restarted active slot "+active) {
			t.Fatalf("health-check with the active slot killed: %v, want its restart among the actions", hc)
		}
		st := getStatus(t, d)
		if st.Active != active || !st.slot(active).Healthy || st.slot(active).PID == pid {
			t.Fatalf("after the restart: active %s, slot %+v; want %s healthy with a new pid", st.Active, st.slot(active), active)
		}
		expectColour(t, d, active, st.slot(active).Release, "the health-check's restart")
		return
	}
	if d.failover {
		hc := bgdJSON(t, d, 0, "health-check")
		svcs, _ := hc["services"].([]any)
		if len(svcs) != 1 || svcs[0].(map[string]any)["failed_over"] != standby {
			t.Fatalf("health-check with failover: %v, want failed_over %s", hc, standby)
		}
		expectColour(t, d, standby, "", "the failover")
		bgdJSON(t, d, 0, "start", active) // the killed slot back, as the standby
		expectColour(t, d, standby, "", "starting the old slot again")
		return
	}
	hc := bgdJSON(t, d, 1, "health-check")
	if msg := fmt.Sprint(hc["error"]); !strings.Contains(msg, "active slot "+active) {
		t.Fatalf("health-check with the active slot killed: %v, want an error naming the active slot %s", hc, active)
	}
	if st := getStatus(t, d); st.Active != active {
		t.Fatalf("without failover the active colour changed to %s", st.Active)
	}
	bgdJSON(t, d, 0, "start", active)
	if _, err := waitColour(d, active, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	bgdJSON(t, d, 0, "health-check")
}

// killBgdMidDeploy: bgd SIGKILLed while its deploy waits for a slow slot to
// become healthy. The state stays valid (status works and shows the
// interrupted operation), traffic stays on the active colour, `bgd
// reconcile` repairs the state, and the next deploy works.
func killBgdMidDeploy(t *testing.T, d driver) {
	active := getStatus(t, d).Active
	rel := release("slow") // its slot answers /health only after 5 s
	bg := startIn(t, topo.ids[d.service], "bgd", "deploy", "--release", rel)

	var pid int
	deadline := time.Now().Add(4 * time.Second)
	for pid == 0 {
		if st := getStatus(t, d); st.InProgress != nil && st.InProgress.Command == "deploy" {
			pid = st.InProgress.PID
		} else if time.Now().After(deadline) {
			t.Fatalf("no deploy in progress 4 s after it began: %s", bg.out)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	must(t, d.service, "kill", "-KILL", strconv.Itoa(pid))
	bg.endsKilled(t)

	st := getStatus(t, d)
	if st.InProgress == nil {
		t.Fatal("status after the killed deploy shows no interrupted operation")
	}
	if st.Active != active {
		t.Fatalf("the killed deploy changed the active colour to %s", st.Active)
	}
	expectColour(t, d, active, "", "bgd killed mid-deploy")

	rec := bgdJSON(t, d, 0, "reconcile")
	t.Logf("%s: reconcile after the killed deploy: %v", d.name, rec["fixes"])
	st = getStatus(t, d)
	if st.InProgress != nil || st.Active != active || st.LBActive != active {
		t.Fatalf("after reconcile: in progress %+v, active %s, load balancer on %s; want none, %s, %s",
			st.InProgress, st.Active, st.LBActive, active, active)
	}
	expectColour(t, d, active, "", "reconcile")

	next := release("v")
	bgdJSON(t, d, 0, "deploy", "--release", next)
	expectColour(t, d, other(active), next, "the deploy after reconcile")
}

// restartContainer: the whole LB container restarted (every process in it
// ends); its entrypoint (`bgd up`) brings the service back on the recorded
// colour and release, with the load balancer routing to it, and the standby
// on its release too, since it was running.
func restartContainer(t *testing.T, d driver) {
	before := getStatus(t, d)
	active, standby := before.Active, other(before.Active)
	if !before.slot(standby).Healthy {
		bgdJSON(t, d, 0, "start", standby)
		before = getStatus(t, d)
	}
	rel := before.slot(active).Release
	began := time.Now()
	if out, err := exec.Command("docker", "restart", "-t", "10", topo.ids[d.service]).CombinedOutput(); err != nil {
		t.Fatalf("docker restart %s: %v %s", d.service, err, out)
	}
	got, err := waitColour(d, active, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: container restarted, %s (release %s) answers again after %s", d.name, active, got, time.Since(began).Round(time.Millisecond))
	if got != rel {
		t.Fatalf("after the restart %s answers with release %s, want the recorded %s", active, got, rel)
	}
	st := getStatus(t, d)
	if st.Active != active || st.LBActive != active || !st.slot(active).Healthy {
		t.Fatalf("after the restart: active %s (healthy %v), load balancer on %s; want %s healthy and routed",
			st.Active, st.slot(active).Healthy, st.LBActive, active)
	}
	if sb := st.slot(standby); !sb.Healthy || sb.Release != before.slot(standby).Release {
		t.Fatalf("after the restart the standby %s is %+v, want it healthy on release %s as before", standby, sb, before.slot(standby).Release)
	}
}
