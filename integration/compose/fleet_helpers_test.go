//go:build compose

package compose

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// The fleet topology (docker-compose.fleet.yml): a three-member etcd
// cluster, the app host where
// the slots and the operator's CLI run, three LB hosts each running its load
// balancer and `bgd agent`, and a client. It is brought up by TestFleet
// under a project name of its own, beside the topology of TestMain.

// fleetLB is one LB host of the fleet.
type fleetLB struct {
	// host is the compose service, the container's hostname and the name
	// its agent reports under.
	host, driver string
	// url is the load balancer as the client reaches it over the data
	// network; local is the load balancer from inside its own host.
	url, local string
	// keepAliveClean: keep-alive clients see no failure across a flip
	// (every nginx reload closes idle keep-alive connections).
	keepAliveClean bool
}

var fleetLBs = []fleetLB{
	{host: "lb1", driver: "nginx", url: "http://lb1:80/", local: "http://127.0.0.1:80/"},
	{host: "lb2", driver: "haproxy", url: "http://lb2:80/", local: "http://127.0.0.1:80/", keepAliveClean: true},
	{host: "lb3", driver: "builtin", url: "http://lb3:5004/", local: "http://127.0.0.1:5004/", keepAliveClean: true},
}

// The settings of images/fleet/*.yml the tests depend on.
const (
	// fleetLeaseTTL is state.lease_ttl.
	fleetLeaseTTL = 3 * time.Second
	// fleetAgentsTimeout is state.agents_timeout.
	fleetAgentsTimeout = 5 * time.Second
	// fleetStateKey and fleetHolderKey are the service app's state and
	// lock holder under state.prefix /bgd.
	fleetStateKey  = "/bgd/app/state"
	fleetHolderKey = "/bgd/app/lock-holder"
)

// fleetEtcdMembers are the members of the fleet's etcd cluster: each is a
// compose service, the container's hostname and the member's name in etcd,
// and every host's state.endpoints lists them all.
var fleetEtcdMembers = []string{"etcd1", "etcd2", "etcd3"}

// etcdClientURL is a member's client URL on the control network.
func etcdClientURL(member string) string { return "http://" + member + ":2379" }

// fleetImages are the images docker-compose.fleet.yml runs (`make images`
// builds them).
var fleetImages = []string{"bgd/etcd:dev", "bgd/lb-nginx:dev", "bgd/lb-haproxy:dev", "bgd/lb-builtin:dev", "bgd/client:dev"}

// fleet is the fleet topology of this run, brought up by startFleet.
var fleet struct {
	project, file string
	// mu guards ids against the interrupt guard, which may read them while
	// startFleet sets them.
	mu  sync.Mutex
	ids map[string]string // compose service -> container id
	// down are the etcd members a test has stopped (guarded by mu).
	down map[string]bool
}

// needFleet fails the test when the fleet cannot run: a loud skip on a
// machine without Docker or the images, a failure in CI.
func needFleet(t *testing.T) {
	t.Helper()
	msg := topo.unavailable
	if msg == "" {
		for _, img := range fleetImages {
			if exec.Command("docker", "image", "inspect", img).Run() != nil {
				msg = "image " + img + " is missing: run `make images` first"
				break
			}
		}
	}
	switch {
	case msg != "" && testsupport.InCI():
		t.Fatalf("%s, and CI must not skip: install it (see .ci/run) and run make images", msg)
	case msg != "":
		t.Skipf("SKIP (loud): %s; the fleet tests did not run", msg)
	}
}

// startFleet brings the fleet up under a project name of its own, waits
// until every load balancer answers and every agent reports the recorded
// generation, and takes it down when the test ends (after printing the
// containers' last log lines if it failed).
func startFleet(t *testing.T) {
	needFleet(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fleet.file = filepath.Join(root, "docker-compose.fleet.yml")
	b := make([]byte, 4)
	rand.Read(b)
	fleet.project = fmt.Sprintf("bgdfleet%d%s", os.Getpid(), hex.EncodeToString(b))
	stopGuard := fleetDownOnTimeoutOrSignal()
	t.Cleanup(func() {
		stopGuard()
		if t.Failed() {
			logs, _ := fleetCompose("logs", "--no-color", "--tail", "60")
			fmt.Printf("fleet: the containers' last log lines:\n%s\n", logs)
		}
		began := time.Now()
		// The hosts first, while etcd lets the agents leave cleanly; then
		// the etcd cluster, killed: its data goes with it, and stopped
		// together its leader would wait for a follower to take over until
		// the grace period's end.
		fleetCompose("stop", "-t", "5", "client", "lb1", "lb2", "lb3", "app")
		hosts := time.Since(began)
		var killed []string
		for _, svc := range []string{"client", "lb1", "lb2", "lb3", "app"} {
			out, _ := exec.Command("docker", "inspect", "-f", "{{.State.ExitCode}}", fleet.ids[svc]).Output()
			if strings.TrimSpace(string(out)) == "137" {
				killed = append(killed, svc)
			}
		}
		if len(killed) > 0 {
			t.Logf("fleet: killed at the end of the 5 s grace period: %s", strings.Join(killed, ", "))
		}
		fleetCompose(append([]string{"kill"}, fleetEtcdMembers...)...)
		etcd := time.Since(began) - hosts
		if out, err := fleetCompose("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("fleet: docker-compose down: %v\n%s", err, out)
		}
		t.Logf("fleet: project %s down in %s (hosts stopped in %s, etcd in %s)", fleet.project,
			time.Since(began).Round(time.Millisecond), hosts.Round(time.Millisecond), etcd.Round(time.Millisecond))
	})
	began := time.Now()
	if out, err := fleetCompose("up", "-d", "--no-build"); err != nil {
		t.Fatalf("fleet: docker-compose up: %v\n%s", err, out)
	}
	ids := map[string]string{}
	for _, svc := range append(slices.Clone(fleetEtcdMembers), "app", "lb1", "lb2", "lb3", "client") {
		out, err := fleetCompose("ps", "-q", svc)
		id := strings.TrimSpace(out)
		if err != nil || id == "" {
			t.Fatalf("fleet: docker-compose ps -q %s: %v %s", svc, err, out)
		}
		ids[svc] = id
	}
	fleet.mu.Lock()
	fleet.ids = ids
	fleet.down = map[string]bool{}
	fleet.mu.Unlock()
	st := waitAgents(t, 0, time.Minute)
	// The app host's `bgd up` started the active slot; the switches need
	// the standby too.
	if standby := other(st.Active); !st.slot(standby).Healthy {
		mustAppBgd(t, "start", standby)
	}
	for _, lb := range fleetLBs {
		if err := waitFleetColour(lb, st.Active, 30*time.Second); err != nil {
			t.Fatalf("fleet: not serving after up: %v", err)
		}
	}
	t.Logf("fleet: project %s up, every agent on generation %d and every LB serving %s, in %s",
		fleet.project, st.Generation, st.Active, time.Since(began).Round(time.Millisecond))
}

// fleetDownOnTimeoutOrSignal takes the fleet down when the test binary is
// interrupted (SIGINT, SIGTERM) or 45 s before -timeout would make it panic
// (TestMain's own guard, 30 s before, takes its project down and exits);
// the returned func disarms it.
func fleetDownOnTimeoutOrSignal() func() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var expired <-chan time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 2*time.Minute {
			expired = time.NewTimer(d - 45*time.Second).C
		}
	}
	stop := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "fleet: %v: taking project %s down\n", s, fleet.project)
		case <-expired:
			fmt.Fprintf(os.Stderr, "fleet: -timeout is 45 s away: taking project %s down\n", fleet.project)
		case <-stop:
			return
		}
		// TestMain's guard exits the binary once its own project is down:
		// remove the fleet's containers and networks at once (docker rm -f,
		// no grace), then let compose sweep what is left.
		fleetRemoveNow()
		fleetCompose("down", "-v", "--remove-orphans", "-t", "1")
	}()
	return func() { signal.Stop(sigs); close(stop) }
}

// fleetRemoveNow removes the fleet's containers (SIGKILL) and networks
// with plain docker commands, which take a second where compose's down
// takes several.
func fleetRemoveNow() {
	args := []string{"rm", "-f", "-v"}
	fleet.mu.Lock()
	for _, id := range fleet.ids {
		args = append(args, id)
	}
	fleet.mu.Unlock()
	if len(args) > 3 {
		exec.Command("docker", args...).Run()
	}
	exec.Command("docker", "network", "rm", fleetNetwork("control"), fleetNetwork("data")).Run()
}

// fleetCompose runs docker-compose on the fleet's project and returns its
// output.
func fleetCompose(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", fleet.project, "-f", fleet.file}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fleetNetwork is the docker name of one of the fleet's networks (control
// or data).
func fleetNetwork(name string) string { return fleet.project + "_" + name }

// fleetExec runs argv in the fleet service's container (docker exec, no
// shell of ours) and returns what it printed and its exit code; the error
// is for a docker exec that could not run it.
func fleetExec(service string, argv ...string) (run, error) {
	return fleetExecEnv(service, nil, argv...)
}

// fleetExecEnv is fleetExec with environment variables (NAME=value) set
// for argv.
func fleetExecEnv(service string, env []string, argv ...string) (run, error) {
	return dockerExec(fleet.ids[service], "", env, argv...)
}

// appBgd runs `bgd ARGS` on the app host and returns its run and how long it
// took; a docker exec that could not run it fails the test.
func appBgd(t *testing.T, args ...string) (run, time.Duration) {
	t.Helper()
	began := time.Now()
	r, err := fleetExec("app", append([]string{"bgd"}, args...)...)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("app: bgd %q: %v", args, err)
	}
	return r, took
}

// mustAppBgd runs `bgd ARGS` on the app host and fails the test unless it
// exits 0.
func mustAppBgd(t *testing.T, args ...string) (run, time.Duration) {
	t.Helper()
	r, took := appBgd(t, args...)
	if r.code != 0 {
		t.Fatalf("app: bgd %q exited %d, want 0\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r, took
}

// fleetAgent is one agent of `bgd status --json`'s "agents".
type fleetAgent struct {
	Host       string `json:"host"`
	Live       bool   `json:"live"`
	Generation uint64 `json:"generation"`
	Active     string `json:"active"`
	Applied    string `json:"applied"`
	Error      string `json:"error"`
}

// appliedAt is when the agent applied the generation it reports.
func (a fleetAgent) appliedAt() (time.Time, error) {
	at, err := time.Parse(time.RFC3339Nano, a.Applied)
	if err != nil {
		return time.Time{}, fmt.Errorf("agent %s: applied %q is not RFC 3339: %w", a.Host, a.Applied, err)
	}
	return at, nil
}

// fleetStatus is the parts of `bgd status --json` on the app host the fleet
// tests read, with the generation of the state in etcd.
type fleetStatus struct {
	Active     string       `json:"active_version"`
	Blue       slot         `json:"blue"`
	Green      slot         `json:"green"`
	LastSwitch *time.Time   `json:"last_switch"`
	Generation uint64       `json:"generation"`
	Agents     []fleetAgent `json:"agents"`
}

func (s fleetStatus) slot(colour string) slot {
	if colour == "green" {
		return s.Green
	}
	return s.Blue
}

// agent returns the host's agent in the status, or false.
func (s fleetStatus) agent(host string) (fleetAgent, bool) {
	for _, a := range s.Agents {
		if a.Host == host {
			return a, true
		}
	}
	return fleetAgent{}, false
}

// lagging says which LB hosts do not serve the status's generation and
// colour through a live agent, or "" when none.
func (s fleetStatus) lagging() string {
	var lag []string
	for _, lb := range fleetLBs {
		a, ok := s.agent(lb.host)
		switch {
		case !ok:
			lag = append(lag, lb.host+" (no agent in status)")
		case !a.Live:
			lag = append(lag, lb.host+" (not live)")
		case a.Generation != s.Generation || a.Active != s.Active:
			lag = append(lag, fmt.Sprintf("%s (generation %d on %s, want %d on %s; error %q)", lb.host, a.Generation, a.Active, s.Generation, s.Active, a.Error))
		case a.Error != "":
			lag = append(lag, fmt.Sprintf("%s (error %q)", lb.host, a.Error))
		}
	}
	return strings.Join(lag, ", ")
}

// etcdState is the parts of the service's state in etcd the tests read.
type etcdState struct {
	Active     string     `json:"active_version"`
	Generation uint64     `json:"generation"`
	LastSwitch *time.Time `json:"last_switch"`
}

// runningEtcdMembers are the members no test has stopped.
func runningEtcdMembers() []string {
	fleet.mu.Lock()
	defer fleet.mu.Unlock()
	var up []string
	for _, m := range fleetEtcdMembers {
		if !fleet.down[m] {
			up = append(up, m)
		}
	}
	return up
}

// fleetEtcdctl runs etcdctl ARGS in the first running member's container,
// against the running members' client URLs.
func fleetEtcdctl(args ...string) (run, error) {
	up := runningEtcdMembers()
	if len(up) == 0 {
		return run{}, errors.New("etcdctl: every etcd member is stopped")
	}
	var eps []string
	for _, m := range up {
		eps = append(eps, etcdClientURL(m))
	}
	// etcdctl refuses --endpoints beside the image's ETCDCTL_ENDPOINTS:
	// the endpoints go in the environment.
	return fleetExecEnv(up[0], []string{"ETCDCTL_ENDPOINTS=" + strings.Join(eps, ",")}, append([]string{"etcdctl"}, args...)...)
}

// stopEtcdMembers stops the members (docker-compose stop: SIGTERM, so a
// leader hands its leadership over) and records them as down.
func stopEtcdMembers(members ...string) error {
	fleet.mu.Lock()
	for _, m := range members {
		fleet.down[m] = true
	}
	fleet.mu.Unlock()
	if out, err := fleetCompose(append([]string{"stop", "-t", "10"}, members...)...); err != nil {
		return fmt.Errorf("docker-compose stop %s: %w\n%s", strings.Join(members, " "), err, out)
	}
	return nil
}

// stopEtcdCluster stops every member: the followers, then the leader once
// it has stepped down. A leader that stops tries to hand its leadership
// over first, and with its followers stopping too it waits for that until
// the grace period's end; a leader without a quorum steps down after an
// election timeout, and then stops at once.
func stopEtcdCluster() error {
	leader, err := etcdLeader()
	if err != nil {
		return fmt.Errorf("before stopping the etcd cluster: %w", err)
	}
	followers := slices.DeleteFunc(slices.Clone(fleetEtcdMembers), func(m string) bool { return m == leader })
	if err := stopEtcdMembers(followers...); err != nil {
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		r, err := fleetEtcdctl("--command-timeout", "1s", "endpoint", "status", "-w", "json")
		var sts []etcdEndpointStatus
		if err == nil && json.Unmarshal([]byte(r.stdout), &sts) == nil &&
			len(sts) == 1 && sts[0].Status.Leader != sts[0].Status.Header.MemberID {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return stopEtcdMembers(leader)
}

// startEtcdMembers starts stopped members again (their data is kept in
// their containers) and records them as running.
func startEtcdMembers(members ...string) error {
	if out, err := fleetCompose(append([]string{"start"}, members...)...); err != nil {
		return fmt.Errorf("docker-compose start %s: %w\n%s", strings.Join(members, " "), err, out)
	}
	fleet.mu.Lock()
	for _, m := range members {
		delete(fleet.down, m)
	}
	fleet.mu.Unlock()
	return nil
}

// startStoppedEtcdMembers is a cleanup: it starts every member a test
// stopped and left down.
func startStoppedEtcdMembers(t *testing.T) {
	fleet.mu.Lock()
	var down []string
	for _, m := range fleetEtcdMembers {
		if fleet.down[m] {
			down = append(down, m)
		}
	}
	fleet.mu.Unlock()
	if len(down) > 0 {
		if err := startEtcdMembers(down...); err != nil {
			t.Error(err)
		}
	}
}

// etcdClusterHealthy reports whether every member of the cluster (etcd's
// member list) answers a read through the cluster's leader.
func etcdClusterHealthy() bool {
	r, err := fleetEtcdctl("--command-timeout", "1s", "endpoint", "health", "--cluster")
	return err == nil && r.code == 0
}

// waitEtcdClusterHealthy waits until etcdClusterHealthy and returns how
// long it took.
func waitEtcdClusterHealthy(within time.Duration) (time.Duration, error) {
	began := time.Now()
	for !etcdClusterHealthy() {
		if time.Since(began) > within {
			r, _ := fleetEtcdctl("--command-timeout", "1s", "endpoint", "health", "--cluster")
			return 0, fmt.Errorf("the etcd cluster is not healthy within %s: %s%s", within, r.stdout, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(began), nil
}

// etcdEndpointStatus is one member in `etcdctl endpoint status -w json`.
type etcdEndpointStatus struct {
	Endpoint string `json:"Endpoint"`
	Status   struct {
		Header struct {
			MemberID uint64 `json:"member_id"`
		} `json:"header"`
		Leader uint64 `json:"leader"`
	} `json:"Status"`
}

// etcdLeader returns the running member that leads the cluster, asking
// every running member; they must agree.
func etcdLeader() (string, error) {
	r, err := fleetEtcdctl("--command-timeout", "1s", "endpoint", "status", "-w", "json")
	if err != nil || r.code != 0 {
		return "", fmt.Errorf("etcdctl endpoint status: exit %d, %v %s", r.code, err, r.stderr)
	}
	var sts []etcdEndpointStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		return "", fmt.Errorf("etcdctl endpoint status -w json: %w\n%s", err, r.stdout)
	}
	leader := ""
	for _, s := range sts {
		if s.Status.Leader == 0 || s.Status.Leader != sts[0].Status.Leader {
			return "", fmt.Errorf("the running members do not agree on a leader: %s", r.stdout)
		}
		if s.Status.Header.MemberID == s.Status.Leader {
			leader = strings.TrimSuffix(strings.TrimPrefix(s.Endpoint, "http://"), ":2379")
		}
	}
	if leader == "" {
		return "", fmt.Errorf("no running member is the leader: %s", r.stdout)
	}
	return leader, nil
}

// etcdReachableFrom returns the members whose client port answers an
// HTTP request (etcd's /health, whatever its answer) from the service's
// container.
func etcdReachableFrom(service string) []string {
	ok := make([]bool, len(fleetEtcdMembers))
	var wg sync.WaitGroup
	for i, m := range fleetEtcdMembers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := fleetExec(service, "curl", "-sS", "-m", "2", "-o", "/dev/null", etcdClientURL(m)+"/health")
			ok[i] = err == nil && r.code == 0
		}()
	}
	wg.Wait()
	var reached []string
	for i, m := range fleetEtcdMembers {
		if ok[i] {
			reached = append(reached, m)
		}
	}
	return reached
}

// readEtcdState reads the service's state from etcd itself (etcdctl in a
// member's container).
func readEtcdState() (etcdState, error) {
	r, err := fleetEtcdctl("get", "--print-value-only", fleetStateKey)
	if err != nil || r.code != 0 {
		return etcdState{}, fmt.Errorf("etcdctl get %s: exit %d, %v %s", fleetStateKey, r.code, err, r.stderr)
	}
	if strings.TrimSpace(r.stdout) == "" {
		return etcdState{}, fmt.Errorf("etcd has no %s", fleetStateKey)
	}
	var st etcdState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return etcdState{}, fmt.Errorf("%s in etcd: %w\n%s", fleetStateKey, err, r.stdout)
	}
	return st, nil
}

// getFleetStatus is `bgd --json status` on the app host, checked against
// the state in etcd: the two must agree on the active colour and the
// generation.
func getFleetStatus(t *testing.T) fleetStatus {
	t.Helper()
	st, err := tryFleetStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func tryFleetStatus() (fleetStatus, error) {
	r, err := fleetExec("app", "bgd", "--json", "status")
	if err != nil || r.code != 0 {
		return fleetStatus{}, fmt.Errorf("app: bgd status: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	var st fleetStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return fleetStatus{}, fmt.Errorf("app: bgd status --json: %w\n%s", err, r.stdout)
	}
	es, err := readEtcdState()
	if err != nil {
		return fleetStatus{}, err
	}
	if es.Active != st.Active || es.Generation != st.Generation {
		return fleetStatus{}, fmt.Errorf("bgd status shows %s active at generation %d, the state in etcd %s at %d",
			st.Active, st.Generation, es.Active, es.Generation)
	}
	return st, nil
}

// waitAgents waits until every LB host's agent is live and reports the
// recorded generation and colour, which must be at least minGen, and
// returns the status then.
func waitAgents(t *testing.T, minGen uint64, within time.Duration) fleetStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := tryFleetStatus()
		if err == nil && st.Generation >= minGen && st.lagging() == "" {
			return st
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("generation %d (want at least %d), lagging: %s", st.Generation, minGen, st.lagging())
			}
			t.Fatalf("fleet: the agents did not all report the recorded state within %s: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fleetAnswer is one request to url with curl in the service's container:
// the colour and release that answered.
func fleetAnswer(service, url string) (colour, release string, err error) {
	r, err := fleetExec(service, "curl", "-sS", "-m", "5", "-f", url)
	if err != nil {
		return "", "", err
	}
	if r.code != 0 {
		return "", "", fmt.Errorf("curl %s in %s: exit %d: %s", url, service, r.code, strings.TrimSpace(r.stderr))
	}
	m := answerRE.FindStringSubmatch(r.stdout)
	if m == nil {
		return "", "", fmt.Errorf("curl %s in %s: not the demo app's answer: %q", url, service, r.stdout)
	}
	return m[1], m[2], nil
}

// waitFleetColour polls the client's view of the LB host until colour
// answers; failed requests and the other colour are retried.
func waitFleetColour(lb fleetLB, colour string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, _, err := fleetAnswer("client", lb.url)
		if err == nil && c == colour {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s answered", c)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (%s): %s did not answer %s within %s: %v", lb.host, lb.driver, lb.url, colour, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectFleetColours fails the test unless every LB host in lbs answers the
// client with colour, now: each request is made once, at the same time.
func expectFleetColours(t *testing.T, lbs []fleetLB, colour, after string) {
	t.Helper()
	errs := make([]error, len(lbs))
	var wg sync.WaitGroup
	for i, lb := range lbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := fleetAnswer("client", lb.url)
			if err == nil && c != colour {
				err = fmt.Errorf("%s answered, want %s", c, colour)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s (%s) after %s: %w", lb.host, lb.driver, after, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// lbsExcept is fleetLBs without the named host.
func lbsExcept(host string) []fleetLB {
	return slices.DeleteFunc(slices.Clone(fleetLBs), func(lb fleetLB) bool { return lb.host == host })
}

// startFleetWrk runs wrk in the fleet's client against url (startWrk, in
// the fleet's client container).
func startFleetWrk(t *testing.T, url string, l testsupport.WrkLoad) *clientWrk {
	t.Helper()
	return startWrkIn(t, fleet.ids["client"], "fleet-wrk", url, l)
}

// fleetMedian and fleetMax are the median and maximum of durations (0 for none).
func fleetMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fleetMax(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds)
}

// fleetMs formats a duration in milliseconds with one decimal.
func fleetMs(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

// fleetTable prints a Markdown table to the test output.
func fleetTable(title string, header []string, rows [][]string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n| %s |\n|", title, strings.Join(header, " | "))
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Println(b.String())
}
