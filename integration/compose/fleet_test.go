//go:build compose

package compose

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// TestFleet brings up docker-compose.fleet.yml (three LB hosts sharing one
// state in a three-member etcd cluster, each applying it with `bgd agent`)
// and runs, in order: switch convergence, zero downtime under load, an LB
// host cut from every etcd member during a switch, the etcd leader stopped
// under load, the whole etcd cluster restarted, and a CLI SIGKILLed while it
// holds the lock. Every measured number is logged and printed as a Markdown
// table.
//
// The partition comes before the etcd scenarios on purpose: the agent cut
// off and connected again must serve them as well as the others (its etcd
// client's keep-alive pings drop a connection that died with the network,
// rather than leave its requests waiting on TCP's retransmissions).
func TestFleet(t *testing.T) {
	startFleet(t)
	t.Run("convergence", fleetConvergence)
	t.Run("zero-downtime", fleetZeroDowntime)
	t.Run("partition", fleetPartition)
	t.Run("member-lost", fleetMemberLost)
	t.Run("cluster-restart", fleetClusterRestart)
	t.Run("killed-lock-holder", fleetKilledLockHolder)
}

// fleetConvergenceSwitches is how many switches the convergence test makes.
const fleetConvergenceSwitches = 20

// fleetSwitch runs `bgd GLOBAL... switch to` on the app host, which must exit 0
// having waited for every agent, and checks that the status then shows
// every agent live on the new generation and colour, and that the command
// printed a line for each. It returns the status and how long each agent
// took: its applied time minus the state's last_switch.
func fleetSwitch(t *testing.T, to string, global ...string) (fleetStatus, map[string]time.Duration, time.Duration) {
	t.Helper()
	before := getFleetStatus(t)
	r, took := mustAppBgd(t, append(global, "switch", to)...)
	st := getFleetStatus(t)
	if st.Active != to || st.Generation <= before.Generation {
		t.Fatalf("after bgd switch %s: %s active at generation %d (before: generation %d), want %s at a newer one",
			to, st.Active, st.Generation, before.Generation, to)
	}
	if lag := st.lagging(); lag != "" {
		t.Fatalf("bgd switch %s exited 0, but the status shows agents lagging: %s\n%s%s", to, lag, r.stdout, r.stderr)
	}
	if st.LastSwitch == nil {
		t.Fatalf("after bgd switch %s the status has no last_switch", to)
	}
	conv := map[string]time.Duration{}
	for _, lb := range fleetLBs {
		if !strings.Contains(r.stdout+r.stderr, lb.host) {
			t.Errorf("bgd switch %s printed no line for the agent %s:\n%s%s", to, lb.host, r.stdout, r.stderr)
		}
		a, _ := st.agent(lb.host)
		at, err := a.appliedAt()
		if err != nil {
			t.Fatal(err)
		}
		d := at.Sub(*st.LastSwitch)
		if d < 0 {
			t.Fatalf("agent %s reports generation %d applied at %s, before the switch's last_switch %s",
				lb.host, a.Generation, a.Applied, st.LastSwitch.Format(time.RFC3339Nano))
		}
		conv[lb.host] = d
	}
	return st, conv, took
}

// fleetConvergence: 20 switches alternating colours, each exiting 0 once
// every agent reports it; per switch, its convergence is the slowest
// agent's applied time minus the state's last_switch. The median must be
// under 1 s; after every switch every LB answers the new colour.
func fleetConvergence(t *testing.T) {
	worst, perHost, cmd := fleetSwitches(t, fleetConvergenceSwitches, "convergence")
	rows := [][]string{{"all (slowest agent)", strconv.Itoa(len(worst)), fleetMs(fleetMedian(worst)), fleetMs(fleetMax(worst))}}
	for _, lb := range fleetLBs {
		d := perHost[lb.host]
		rows = append(rows, []string{lb.host + " (" + lb.driver + ")", strconv.Itoa(len(d)), fleetMs(fleetMedian(d)), fleetMs(fleetMax(d))})
	}
	rows = append(rows, []string{"`bgd switch` command (docker exec)", strconv.Itoa(len(cmd)), fleetMs(fleetMedian(cmd)), fleetMs(fleetMax(cmd))})
	fleetTable("fleet convergence: applied - last_switch per switch", []string{"agent", "switches", "median ms", "max ms"}, rows)
	t.Logf("convergence over %d switches: median %s ms, max %s ms", len(worst), fleetMs(fleetMedian(worst)), fleetMs(fleetMax(worst)))
	if m := fleetMedian(worst); m >= time.Second {
		t.Errorf("median convergence %s, want under 1 s", m)
	}
}

// fleetZeroDowntimeSwitches is how many switches run under load.
const fleetZeroDowntimeSwitches = 10

// The fleet's loads: one new-connection and one keep-alive wrk per LB host,
// paced (six of them share two cores with bgd and the load balancers).
var (
	fleetNewConnLoad   = testsupport.WrkLoad{Conns: 2, NewConn: true, Delay: 10 * time.Millisecond}
	fleetKeepAliveLoad = testsupport.WrkLoad{Conns: 2, Delay: 10 * time.Millisecond}
)

// fleetZeroDowntime: wrk from the client against every LB host, new
// connections and keep-alive, during 10 switches. No request may fail,
// except keep-alive requests through nginx (its reloads close idle
// keep-alive connections: counted and printed).
func fleetZeroDowntime(t *testing.T) {
	colour := getFleetStatus(t).Active
	type load struct {
		lb    fleetLB
		kind  string
		clean bool
		w     *clientWrk
	}
	var loads []load
	for _, lb := range fleetLBs {
		loads = append(loads,
			load{lb, "new connection", true, startFleetWrk(t, lb.url, fleetNewConnLoad)},
			load{lb, "keep-alive", lb.keepAliveClean, startFleetWrk(t, lb.url, fleetKeepAliveLoad)})
	}
	time.Sleep(500 * time.Millisecond) // load before the first switch
	began := time.Now()
	for i := 1; i <= fleetZeroDowntimeSwitches; i++ {
		colour = other(colour)
		fleetSwitch(t, colour)
		expectFleetColours(t, fleetLBs, colour, fmt.Sprintf("switch %d to %s under load", i, colour))
	}
	took := time.Since(began)
	time.Sleep(500 * time.Millisecond) // load after the last switch
	var rows [][]string
	for _, l := range loads {
		r, err := l.w.stop()
		if err != nil {
			t.Fatalf("%s %s: %v", l.lb.host, l.kind, err)
		}
		t.Logf("%s (%s), %s clients: %d switches in %s; %d requests, %d failed (connect %d, read %d, write %d, timeout %d, non-2xx %d), p99 %.1f ms, max %.1f ms",
			l.lb.host, l.lb.driver, l.kind, fleetZeroDowntimeSwitches, took.Round(time.Millisecond), r.Requests, r.Failures,
			r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx, r.P99Ms, r.MaxMs)
		rows = append(rows, []string{l.lb.host, l.lb.driver, l.kind, strconv.Itoa(fleetZeroDowntimeSwitches),
			fmt.Sprint(r.Requests), fmt.Sprint(r.Failures), fmt.Sprintf("%.1f", r.P99Ms), fmt.Sprintf("%.1f", r.MaxMs)})
		if r.Requests < 100 {
			t.Errorf("%s %s clients sent only %d requests: the load did not run", l.lb.host, l.kind, r.Requests)
		}
		if l.clean && r.Failures != 0 {
			t.Errorf("%s (%s): %d of %d %s requests failed across %d switches, want 0",
				l.lb.host, l.lb.driver, r.Failures, r.Requests, l.kind, fleetZeroDowntimeSwitches)
		}
	}
	fleetTable("fleet zero downtime: wrk -t1 -c2 (10 ms pacing) per client kind from the client, during the switches",
		[]string{"host", "driver", "clients", "switches", "requests", "failed", "p99 ms", "max ms"}, rows)
}

// fleetPartition: lb2 cut from the control network (no etcd member answers
// it; the data network still joins it to the slots and the client) before
// a switch. The switch records the new routing and exits 1 naming lb2; lb2
// keeps serving the old colour, lb1 and lb3 the new one. Connected again,
// lb2 converges on its own, and the status shows every agent on the new
// generation.
func fleetPartition(t *testing.T) {
	const cut = "lb2"
	var lb2 fleetLB
	for _, lb := range fleetLBs {
		if lb.host == cut {
			lb2 = lb
		}
	}
	before := getFleetStatus(t)
	from, to := before.Active, other(before.Active)
	if reached := etcdReachableFrom(cut); len(reached) != len(fleetEtcdMembers) {
		t.Fatalf("before the cut, %s reaches the etcd members %v, want all of %v", cut, reached, fleetEtcdMembers)
	}
	network, id := fleetNetwork("control"), fleet.ids[cut]
	if out, err := exec.Command("docker", "network", "disconnect", network, id).CombinedOutput(); err != nil {
		t.Fatalf("docker network disconnect %s %s: %v %s", network, cut, err, out)
	}
	connected := false
	connect := func() error {
		if connected {
			return nil
		}
		out, err := exec.Command("docker", "network", "connect", network, id).CombinedOutput()
		if err != nil {
			return fmt.Errorf("docker network connect %s %s: %v %s", network, cut, err, out)
		}
		connected = true
		return nil
	}
	t.Cleanup(func() {
		if err := connect(); err != nil {
			t.Error(err)
		}
	})
	if reached := etcdReachableFrom(cut); len(reached) != 0 {
		t.Fatalf("%s cut from the control network still reaches the etcd members %v", cut, reached)
	}

	r, took := appBgd(t, "switch", to)
	out := r.stdout + r.stderr
	t.Logf("bgd switch %s with %s cut from every etcd member: exit %d after %s ms:\n%s", to, cut, r.code, fleetMs(took), out)
	if r.code != 1 {
		t.Fatalf("bgd switch %s with %s cut from etcd exited %d, want 1\n%s", to, cut, r.code, out)
	}
	st := getFleetStatus(t)
	if st.Active != to || st.Generation <= before.Generation {
		t.Fatalf("after the partial switch the state has %s at generation %d, want %s recorded at a generation after %d", st.Active, st.Generation, to, before.Generation)
	}
	want := st.Generation
	// The message (docs/etcd.md) names the new generation and each host
	// that has not applied it, as "host (why...)".
	if !strings.Contains(out, fmt.Sprintf("generation %d", want)) || !regexp.MustCompile(`\b`+cut+` \(`).MatchString(out) {
		t.Errorf("bgd switch %s with %s cut from etcd: the message does not name %s as not serving generation %d:\n%s", to, cut, cut, want, out)
	}
	for _, lb := range lbsExcept(cut) {
		if regexp.MustCompile(`\b` + lb.host + ` \(`).MatchString(out) {
			t.Errorf("bgd switch %s: %s is named as lagging, but only %s was cut:\n%s", to, lb.host, cut, out)
		}
	}
	a, _ := st.agent(cut)
	t.Logf("status after the partial switch: %s %+v", cut, a)
	if a.Live && a.Generation == want {
		t.Fatalf("status shows %s live on generation %d although it was cut from etcd", cut, want)
	}
	// lb2 keeps the old routing, seen from inside it and from the client;
	// the others serve the new colour.
	if c, _, err := fleetAnswer(cut, lb2.local); err != nil || c != from {
		t.Fatalf("%s cut from etcd, from inside: %s answered (%v), want the old colour %s", cut, c, err, from)
	}
	expectFleetColours(t, []fleetLB{lb2}, from, "the switch it missed")
	expectFleetColours(t, lbsExcept(cut), to, "the switch with "+cut+" cut")
	// Past its lease, it still does not flip on its own.
	time.Sleep(fleetLeaseTTL + time.Second)
	expectFleetColours(t, []fleetLB{lb2}, from, "a lease's time cut from etcd")

	began := time.Now()
	if err := connect(); err != nil {
		t.Fatal(err)
	}
	var served, reported time.Duration
	deadline := began.Add(60 * time.Second)
	for served == 0 || reported == 0 {
		if served == 0 {
			if c, _, err := fleetAnswer(cut, lb2.local); err == nil && c == to {
				served = time.Since(began)
			}
		}
		if reported == 0 {
			if st, err := tryFleetStatus(); err == nil {
				if a, ok := st.agent(cut); ok && a.Live && a.Generation == want && a.Active == to {
					reported = time.Since(began)
				}
			}
		}
		if time.Now().After(deadline) {
			st, _ := tryFleetStatus()
			a, _ := st.agent(cut)
			t.Fatalf("%s connected again did not converge within 60 s: serving %s after %s, reporting %s after %s; its agent: %+v",
				cut, to, served, to, reported, a)
		}
		time.Sleep(100 * time.Millisecond)
	}
	final := waitAgents(t, want, 10*time.Second)
	t.Logf("%s connected again: serves %s after %s ms, reports generation %d after %s ms; every agent on generation %d",
		cut, to, fleetMs(served), want, fleetMs(reported), final.Generation)
	fleetTable("fleet partition: lb2 (haproxy) cut from every etcd member during a switch",
		[]string{"measure", "value"}, [][]string{
			{"`bgd switch` with lb2 cut: exit code", strconv.Itoa(r.code)},
			{"`bgd switch` with lb2 cut: duration ms", fleetMs(took)},
			{"lb2 reconnected → serves the new colour, ms", fleetMs(served)},
			{"lb2 reconnected → status shows it on the new generation, ms", fleetMs(reported)},
		})
}

// fleetEtcdLoad is the light load of the etcd member and cluster restarts:
// one new-connection client per LB host.
var fleetEtcdLoad = testsupport.WrkLoad{Conns: 1, NewConn: true, Delay: 20 * time.Millisecond}

// startFleetEtcdLoads starts fleetEtcdLoad against every LB host (in
// fleetLBs' order) and lets it run half a second.
func startFleetEtcdLoads(t *testing.T) []*clientWrk {
	t.Helper()
	var loads []*clientWrk
	for _, lb := range fleetLBs {
		loads = append(loads, startFleetWrk(t, lb.url, fleetEtcdLoad))
	}
	time.Sleep(500 * time.Millisecond)
	return loads
}

// stopFleetEtcdLoads stops the loads of startFleetEtcdLoads and fails the
// test unless each sent at least 50 requests and none failed, across what
// happened (named by during). It returns the results in fleetLBs' order.
func stopFleetEtcdLoads(t *testing.T, loads []*clientWrk, during string) []testsupport.WrkResult {
	t.Helper()
	res := make([]testsupport.WrkResult, len(loads))
	for i, l := range loads {
		r, err := l.stop()
		if err != nil {
			t.Fatal(err)
		}
		res[i] = r
		lb := fleetLBs[i]
		t.Logf("%s (%s) under light load across %s: %d requests, %d failed (connect %d, read %d, timeout %d, non-2xx %d)",
			lb.host, lb.driver, during, r.Requests, r.Failures, r.Connect, r.Read, r.Timeout, r.Non2xx)
		if r.Requests < 50 {
			t.Errorf("%s: only %d requests across %s: the load did not run", lb.host, r.Requests, during)
		}
		if r.Failures != 0 {
			t.Errorf("%s (%s): %d of %d requests failed across %s, want 0", lb.host, lb.driver, r.Failures, r.Requests, during)
		}
	}
	return res
}

// fleetMemberLostSwitches is how many switches run with each of the
// cluster's states (all members up, one down).
const fleetMemberLostSwitches = 5

// fleetSwitches makes n switches, alternating colours from the active one,
// each exiting 0 once every agent reports it and every LB host answering
// the new colour after it (fleetSwitch and expectFleetColours). It returns
// each switch's convergence (its slowest agent's), each host's, and how
// long each `bgd switch` command took.
func fleetSwitches(t *testing.T, n int, during string) (worst []time.Duration, perHost map[string][]time.Duration, cmd []time.Duration) {
	t.Helper()
	colour := getFleetStatus(t).Active
	perHost = map[string][]time.Duration{}
	for i := 1; i <= n; i++ {
		colour = other(colour)
		st, conv, took := fleetSwitch(t, colour)
		var w time.Duration
		for h, d := range conv {
			perHost[h] = append(perHost[h], d)
			w = max(w, d)
		}
		worst, cmd = append(worst, w), append(cmd, took)
		t.Logf("%s: switch %d to %-5s generation %d: converged in %s ms (lb1 %s, lb2 %s, lb3 %s); the command took %s ms",
			during, i, colour, st.Generation, fleetMs(w), fleetMs(conv["lb1"]), fleetMs(conv["lb2"]), fleetMs(conv["lb3"]), fleetMs(took))
		expectFleetColours(t, fleetLBs, colour, fmt.Sprintf("switch %d to %s, %s", i, colour, during))
	}
	return worst, perHost, cmd
}

// fleetMemberLost: under the light load of the cluster restart, 5
// switches with every etcd member up; then the leader is stopped and 5
// more switches must each exit 0 and converge on every LB host, within
// the same 1 s goal as the convergence test. The member started again must
// rejoin (every member healthy within 30 s) and one more switch converge.
// No request fails on any host throughout.
func fleetMemberLost(t *testing.T) {
	t.Cleanup(func() { startStoppedEtcdMembers(t) })
	loads := startFleetEtcdLoads(t)

	allUp, allUpHosts, _ := fleetSwitches(t, fleetMemberLostSwitches, "every etcd member up")

	lost, err := etcdLeader()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := stopEtcdMembers(lost); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(began)
	// The others elect a leader among themselves (a stopped leader hands
	// its leadership over first).
	var leader string
	for {
		if leader, err = etcdLeader(); err == nil {
			break
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("10 s after %s (the leader) was stopped, the other members have no leader: %v", lost, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	newLeader := time.Since(began)
	if leader == lost {
		t.Fatalf("etcd reports the stopped member %s as the leader", lost)
	}
	t.Logf("stopped %s, the leader, in %s ms; %s leads %s ms after the stop began", lost, fleetMs(stopped), leader, fleetMs(newLeader))

	oneDown, oneDownHosts, _ := fleetSwitches(t, fleetMemberLostSwitches, lost+" (the leader) stopped")

	began = time.Now()
	if err := startEtcdMembers(lost); err != nil {
		t.Fatal(err)
	}
	rejoined, err := waitEtcdClusterHealthy(30 * time.Second)
	if err != nil {
		t.Fatalf("%s started again: %v", lost, err)
	}
	rejoined = time.Since(began)
	t.Logf("%s started again: every member healthy (etcdctl endpoint health --cluster) %s ms after the start began", lost, fleetMs(rejoined))
	after, _, _ := fleetSwitches(t, 1, lost+" rejoined")

	res := stopFleetEtcdLoads(t, loads, "the loss of "+lost)
	phases := []struct {
		name  string
		worst []time.Duration
		hosts map[string][]time.Duration
	}{
		{"every member up", allUp, allUpHosts},
		{lost + " (the leader) stopped", oneDown, oneDownHosts},
		{lost + " rejoined", after, nil},
	}
	var rows [][]string
	for _, p := range phases {
		row := []string{p.name, strconv.Itoa(len(p.worst)), fleetMs(fleetMedian(p.worst)), fleetMs(fleetMax(p.worst))}
		for _, lb := range fleetLBs {
			if p.hosts == nil {
				row = append(row, "")
				continue
			}
			row = append(row, fleetMs(fleetMedian(p.hosts[lb.host])))
		}
		rows = append(rows, row)
	}
	fleetTable("fleet member lost: convergence (slowest agent) per switch under light load, with every etcd member up and with the leader stopped",
		[]string{"etcd cluster", "switches", "median ms", "max ms", "lb1 (nginx) median ms", "lb2 (haproxy) median ms", "lb3 (builtin) median ms"}, rows)
	rows = [][]string{
		{"member stopped (the leader)", lost},
		{"`docker-compose stop`, ms", fleetMs(stopped)},
		{"stop began → " + leader + " leads, ms", fleetMs(newLeader)},
		{"start began → every member healthy, ms", fleetMs(rejoined)},
	}
	for i, lb := range fleetLBs {
		rows = append(rows, []string{fmt.Sprintf("%s (%s): requests, failed (new conn, 20 ms pacing)", lb.host, lb.driver),
			fmt.Sprintf("%d, %d", res[i].Requests, res[i].Failures)})
	}
	fleetTable("fleet member lost: the leader stopped and started again", []string{"measure", "value"}, rows)
	if m := fleetMedian(oneDown); m >= time.Second {
		t.Errorf("median convergence with %s stopped %s, want under 1 s", lost, m)
	}
}

// fleetClusterRestart: every etcd member stopped, for longer than the
// agents' lease, then started again, under a light load. The LB hosts keep
// serving the active colour throughout (no request fails), bgd status
// meanwhile exits 1 naming every endpoint, and once the cluster is healthy
// again a switch converges on every host.
func fleetClusterRestart(t *testing.T) {
	colour := getFleetStatus(t).Active
	t.Cleanup(func() { startStoppedEtcdMembers(t) })
	loads := startFleetEtcdLoads(t)
	began := time.Now()
	if err := stopEtcdCluster(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(began)
	expectFleetColours(t, fleetLBs, colour, "every etcd member stopped")
	// Commands fail naming the endpoints (docs/etcd.md).
	r, _ := appBgd(t, "--json", "status")
	msg := strings.TrimSpace(r.stdout + r.stderr)
	t.Logf("bgd status with every etcd member down: exit %d: %s", r.code, msg)
	if r.code != 1 {
		t.Errorf("bgd status with every etcd member down exited %d, want 1:\n%s", r.code, msg)
	}
	for _, m := range fleetEtcdMembers {
		if !strings.Contains(msg, etcdClientURL(m)) {
			t.Errorf("bgd status with every etcd member down does not name the endpoint %s:\n%s", etcdClientURL(m), msg)
		}
	}
	time.Sleep(fleetLeaseTTL + time.Second)
	expectFleetColours(t, fleetLBs, colour, "every etcd member down past the agents' lease")
	down := time.Since(began)
	if err := startEtcdMembers(fleetEtcdMembers...); err != nil {
		t.Fatal(err)
	}
	if _, err := waitEtcdClusterHealthy(30 * time.Second); err != nil {
		t.Fatalf("the etcd cluster started again: %v", err)
	}
	back := time.Since(began)
	expectFleetColours(t, fleetLBs, colour, "the etcd cluster back")

	// The agents' etcd clients reconnect with a backoff of their own: this
	// switch waits up to 15 s for them rather than state.agents_timeout.
	to := other(colour)
	st, conv, took := fleetSwitch(t, to, "--agents-timeout", "15s")
	expectFleetColours(t, fleetLBs, to, "the switch after the etcd cluster came back")
	res := stopFleetEtcdLoads(t, loads, "the etcd cluster's restart")
	var rows [][]string
	for i, lb := range fleetLBs {
		rows = append(rows, []string{lb.host, lb.driver, fmt.Sprint(res[i].Requests), fmt.Sprint(res[i].Failures), fleetMs(conv[lb.host])})
	}
	t.Logf("every etcd member stopped in %s, down for %s, the cluster healthy again %s after the stop; the switch after (generation %d) took %s ms",
		stopped.Round(time.Millisecond), down.Round(time.Millisecond), back.Round(time.Millisecond), st.Generation, fleetMs(took))
	fleetTable(fmt.Sprintf("fleet etcd cluster restart: all three members down %s ms, healthy %s ms after the stop; then `bgd switch` (took %s ms)",
		fleetMs(down), fleetMs(back), fleetMs(took)),
		[]string{"host", "driver", "requests (new conn, 20 ms pacing)", "failed", "switch after: converged ms"}, rows)
}

// lockHolder is the lock-holder record in etcd.
type lockHolder struct {
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	Command string `json:"command"`
}

// readLockHolder returns the lock holder recorded in etcd, or false when
// there is none.
func readLockHolder(t *testing.T) (lockHolder, bool) {
	t.Helper()
	r, err := fleetEtcdctl("get", "--print-value-only", fleetHolderKey)
	if err != nil || r.code != 0 {
		t.Fatalf("etcdctl get %s: exit %d, %v %s", fleetHolderKey, r.code, err, r.stderr)
	}
	if strings.TrimSpace(r.stdout) == "" {
		return lockHolder{}, false
	}
	var h lockHolder
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
		t.Fatalf("%s in etcd: %v\n%s", fleetHolderKey, err, r.stdout)
	}
	return h, true
}

// fleetKilledLockHolder: a deploy of a slow release (its slot is healthy
// only after 5 s) holds the lock; a second operation meanwhile exits 3
// naming the holder's host and pid. The deploy SIGKILLed, the lock goes
// with its lease: within lease_ttl (+1.5 s) an attempt is no longer
// refused for the dead holder, and the next operation proceeds.
func fleetKilledLockHolder(t *testing.T) {
	active := getFleetStatus(t).Active
	rel := release("slow")
	bg := startIn(t, fleet.ids["app"], "bgd", "deploy", "--release", rel)

	var holder lockHolder
	deadline := time.Now().Add(4 * time.Second)
	for {
		h, ok := readLockHolder(t)
		if ok && h.PID != 0 {
			holder = h
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lock holder in etcd 4 s after bgd deploy began: %s", bg.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the deploy holds the lock: %+v", holder)
	if holder.Host != "app" || holder.Command != "deploy" {
		t.Errorf("lock holder %+v, want host app and command deploy", holder)
	}
	// A second operation while the lock is held.
	r, _ := appBgd(t, "switch", active)
	msg := r.stdout + r.stderr
	if r.code != 3 {
		t.Fatalf("bgd switch while the deploy holds the lock exited %d, want 3:\n%s", r.code, msg)
	}
	if !regexp.MustCompile(`\bapp\b`).MatchString(msg) || !regexp.MustCompile(`\b`+strconv.Itoa(holder.PID)+`\b`).MatchString(msg) {
		t.Errorf("bgd switch while locked: the message does not name the holder's host app and pid %d:\n%s", holder.PID, msg)
	}
	t.Logf("bgd switch while locked: exit 3: %s", strings.TrimSpace(msg))

	if r, err := fleetExec("app", "kill", "-KILL", strconv.Itoa(holder.PID)); err != nil || r.code != 0 {
		t.Fatalf("kill -KILL %d in app: exit %d, %v %s", holder.PID, r.code, err, r.stderr)
	}
	killed := time.Now()
	bg.endsKilled(t)

	// The next operation: a deploy, tried until it is not refused for the
	// lock. Each refusal must still name the dead holder, except one: the
	// lease may run out between an attempt's try of the lock and its read
	// of the holder's record, which goes with the lease. That attempt
	// names no holder ("an unknown process"), and the next must get the
	// lock.
	next := release("v")
	var refusals, unnamed int
	var freed, proceeded time.Duration
	for {
		at := time.Since(killed)
		r, _ := appBgd(t, "deploy", "--release", next)
		if r.code == 3 {
			refusals++
			msg := r.stdout + r.stderr
			switch {
			case unnamed > 0:
				t.Fatalf("bgd deploy %s after the kill exited 3 again after a refusal that named no holder (the lease had run out):\n%s", next, msg)
			case regexp.MustCompile(`\b` + strconv.Itoa(holder.PID) + `\b`).MatchString(msg):
			case strings.Contains(msg, "locked by an unknown process"):
				unnamed++
				freed = at
				t.Logf("bgd deploy %s %s ms after the kill: exit 3 naming no holder: the lease ran out during this attempt: %s", next, fleetMs(at), strings.TrimSpace(msg))
			default:
				t.Fatalf("bgd deploy %s after the kill exited 3 naming another holder than pid %d:\n%s", next, holder.PID, msg)
			}
			if time.Since(killed) > fleetLeaseTTL+10*time.Second {
				t.Fatalf("the lock of the killed deploy is still held %s after the kill (lease_ttl %s):\n%s%s", time.Since(killed), fleetLeaseTTL, r.stdout, r.stderr)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if r.code != 0 {
			t.Fatalf("bgd deploy %s after the kill exited %d, want 0:\n%s%s", next, r.code, r.stdout, r.stderr)
		}
		proceeded = at
		if unnamed == 0 {
			freed = at
		}
		break
	}
	t.Logf("after the SIGKILL: %d refusals (exit 3, %d naming no holder); the first attempt not refused for the dead holder began %s ms after the kill, the deploy that got the lock %s ms after it (lease_ttl %s)",
		refusals, unnamed, fleetMs(freed), fleetMs(proceeded), fleetLeaseTTL)
	if limit := fleetLeaseTTL + 1500*time.Millisecond; freed > limit {
		t.Errorf("attempts were refused for the killed holder until %s after the kill, want within lease_ttl + 1.5 s (%s)", freed, limit)
	}
	st := waitAgents(t, 0, 10*time.Second)
	if st.Active != other(active) {
		t.Fatalf("after the deploy of %s: %s active, want %s", next, st.Active, other(active))
	}
	for _, lb := range fleetLBs {
		c, rel, err := fleetAnswer("client", lb.url)
		if err != nil || c != st.Active || rel != next {
			t.Fatalf("%s after the deploy of %s: %s release %s (%v), want %s release %s", lb.host, next, c, rel, err, st.Active, next)
		}
	}
	fleetTable("fleet lock: deploy holding the lock SIGKILLed",
		[]string{"measure", "value"}, [][]string{
			{"second operation while held: exit code", strconv.Itoa(r.code)},
			{"refusals (exit 3) after the kill", strconv.Itoa(refusals)},
			{"of which naming no holder (the lease ran out during the attempt)", strconv.Itoa(unnamed)},
			{"kill → first attempt not refused for the dead holder, ms", fleetMs(freed)},
			{"kill → next operation got the lock, ms", fleetMs(proceeded)},
			{"lease_ttl, ms", fleetMs(fleetLeaseTTL)},
		})
}
