package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state/etcdstore"
	"gopkg.in/yaml.v3"
)

// fleetRig is one service on the etcd backend: an "app" config whose
// commands start the slots and write the state, and load-balancer hosts,
// each a config of its own with a real load balancer and a real `bgd
// agent` process. All on loopback: the hosts differ by config and port.
type fleetRig struct {
	t          *testing.T
	etcd       *testsupport.Etcd
	dir        string
	appCfg     string
	blue       int
	green      int
	agents     map[string]*exec.Cmd
	lbURLs     map[string]string
	stateBlock string
}

func newFleetRig(t *testing.T) *fleetRig {
	t.Helper()
	r := &fleetRig{t: t, etcd: testsupport.StartEtcd(t), dir: t.TempDir(), agents: map[string]*exec.Cmd{}, lbURLs: map[string]string{}}
	r.blue = freePort(t)
	for r.green = freePort(t); r.green == r.blue; r.green = freePort(t) {
	}
	r.stateBlock = fmt.Sprintf("state: {backend: etcd, endpoints: [%q], prefix: /test, lease_ttl: 2s, agents_timeout: 4s}\n", r.etcd.Endpoint)
	r.appCfg = r.writeConfig("app", "lb: {driver: builtin, builtin: {listen: \"127.0.0.1:1\"}}")
	t.Cleanup(func() { // before etcd stops (cleanups run last first)
		out, _, _ := r.app("--json", "status")
		var st orchestrator.Status
		json.Unmarshal([]byte(out), &st)
		for _, pid := range []int{st.Blue.PID, st.Green.PID} {
			if pid > 0 {
				killGroup(pid)
			}
		}
	})
	return r
}

// writeConfig writes host's config, with lbBlock as its service's lb:.
func (r *fleetRig) writeConfig(host, lbBlock string) string {
	r.t.Helper()
	cfg := fmt.Sprintf(`state_dir: %s
%sservices:
  app:
    command: [%q, demo-app, --port, "{{.Port}}", --color, "{{.Color}}", --release, "{{.Release}}"]
    blue: {port: %d}
    green: {port: %d}
    health: {interval: 100ms, timeout: 10s}
    stop_grace: 2s
    drain_timeout: 0s
    %s
`, filepath.Join(r.dir, host), r.stateBlock, bgdBin, r.blue, r.green, lbBlock)
	path := filepath.Join(r.dir, host+".yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// addBuiltin adds a host whose load balancer is the builtin proxy.
func (r *fleetRig) addBuiltin(host string) {
	port := freePort(r.t)
	r.startAgent(host, r.writeConfig(host, fmt.Sprintf("lb: {driver: builtin, builtin: {listen: \"127.0.0.1:%d\"}}", port)))
	r.lbURLs[host] = fmt.Sprintf("http://127.0.0.1:%d/", port)
}

// addHAProxy adds a host whose load balancer is a real HAProxy.
func (r *fleetRig) addHAProxy(host string) {
	h := newHAProxy(r.t, r.blue, r.green, haSetup{})
	section, err := yaml.Marshal(map[string]any{"driver": "haproxy", "haproxy": map[string]any{
		"socket": h.hcfg.Socket, "map_file": h.hcfg.MapFile, "backends": h.hcfg.Backends}})
	if err != nil {
		r.t.Fatal(err)
	}
	flow := "lb:\n      " + strings.ReplaceAll(strings.TrimSpace(string(section)), "\n", "\n      ")
	r.startAgent(host, r.writeConfig(host, flow))
	r.lbURLs[host] = h.url()
}

// startAgent runs `bgd agent` for host until the test ends (SIGTERM: it
// leaves).
func (r *fleetRig) startAgent(host, cfg string) {
	r.t.Helper()
	cmd := exec.Command(bgdBin, "--config", cfg, "-v", "agent", "--host", host)
	cmd.Dir = r.dir
	logf, err := os.Create(filepath.Join(r.dir, host+".log"))
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.agents[host] = cmd
	r.t.Cleanup(func() {
		r.stopAgent(host)
		logf.Close()
		if r.t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			r.t.Logf("agent %s log:\n%s", host, tailLines(string(out), 30))
		}
	})
	// A builtin proxy the agent started is recorded in host's state file.
	stopAll(r.t, filepath.Join(r.dir, host, "bg_state.json"))
	waitFor(r.t, 10*time.Second, "agent "+host+" to report", func() bool {
		st := r.status()
		return slices.ContainsFunc(st.Agents, func(a fleet.Agent) bool { return a.Host == host && a.Live })
	})
}

// stopAgent ends host's agent with SIGTERM and checks that it exits 0.
func (r *fleetRig) stopAgent(host string) {
	cmd := r.agents[host]
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			r.t.Errorf("agent %s: %v after SIGTERM, want exit 0", host, err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		r.t.Errorf("agent %s did not exit within 10s of SIGTERM", host)
	}
}

// app runs bgd with the app host's config.
func (r *fleetRig) app(args ...string) (string, string, int) {
	r.t.Helper()
	return bgd(r.t, r.dir, nil, append([]string{"--config", r.appCfg}, args...)...)
}

// mustApp runs a command on the app host that has to succeed.
func (r *fleetRig) mustApp(args ...string) string {
	r.t.Helper()
	out, errOut, code := r.app(args...)
	if code != 0 {
		r.t.Fatalf("bgd %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (r *fleetRig) status() *orchestrator.Status {
	r.t.Helper()
	out, errOut, code := r.app("--json", "status")
	var st orchestrator.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		r.t.Fatalf("status: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	return &st
}

// servedBy is the colour host's load balancer answers with.
func (r *fleetRig) servedBy(host string) string {
	slot, err := testsupport.AnsweredBy(r.lbURLs[host])
	if err != nil {
		return "error: " + err.Error()
	}
	return slot
}

// TestFleetOnEtcd runs one service on the etcd backend with two
// load-balancer hosts (the builtin proxy and HAProxy), each with its agent:
// every switch is applied by both under load with no failed request, a
// host cut off from etcd makes the switch exit 1 naming it while it keeps
// its routing, and converges when it is back; an agent that leaves is no
// longer waited for; etcd's restart loses no request; a second operation
// while one holds the lock exits 3 naming the holder; and a canary splits
// on every host by its weight.
func TestFleetOnEtcd(t *testing.T) {
	r := newFleetRig(t)
	r.addBuiltin("lb-builtin")
	r.addHAProxy("lb-haproxy")
	r.mustApp("start", "blue")
	r.mustApp("start", "green")
	for host := range r.lbURLs {
		waitFor(t, 5*time.Second, host+" to serve blue", func() bool { return r.servedBy(host) == "blue" })
	}

	t.Run("switches under load", func(t *testing.T) {
		loads := map[string]*testsupport.Load{}
		for host, url := range r.lbURLs {
			loads[host] = testsupport.StartLoad(url, testsupport.LoadOptions{Clients: 4, KeepAlive: true, Pause: time.Millisecond})
		}
		var took []time.Duration
		color := "green"
		for range 10 {
			out := r.mustApp("--json", "switch", color)
			var res orchestrator.Result
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Agents) != 2 {
				t.Fatalf("switch %s reported %d hosts, want 2: %s", color, len(res.Agents), out)
			}
			for _, h := range res.Agents {
				if h.State != "applied" {
					t.Errorf("switch %s: %s %s", color, h.Host, h.Line())
				}
				took = append(took, h.Took)
			}
			for host := range r.lbURLs {
				if got := r.servedBy(host); got != color {
					t.Errorf("after switch %s, %s serves %s", color, host, got)
				}
			}
			color = config.Color(color).Other().String()
		}
		for host, l := range loads {
			c := l.Stop()
			t.Logf("%s: %s", host, c)
			if c.Failures != 0 || c.Requests < 100 {
				t.Errorf("%s during 10 switches: %s; want 0 failures of at least 100", host, c)
			}
		}
		slices.Sort(took)
		t.Logf("agents applied a switch in: median %s, max %s (%d applications)", took[len(took)/2], took[len(took)-1], len(took))
	})

	t.Run("a host cut off from etcd", func(t *testing.T) {
		now := r.status().ActiveVersion
		next := now.Other().String()
		agent := r.agents["lb-haproxy"].Process
		if err := agent.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := r.app("switch", next)
		agent.Signal(syscall.SIGCONT)
		if code != 1 || !strings.Contains(errOut, "lb-haproxy (") || strings.Contains(errOut, "lb-builtin (") {
			t.Fatalf("switch with lb-haproxy's agent stopped: exit %d, %s; want exit 1 naming lb-haproxy only", code, errOut)
		}
		if got := r.servedBy("lb-builtin"); got != next {
			t.Errorf("lb-builtin serves %s, want %s", got, next)
		}
		if st := r.status(); st.ActiveVersion.String() != next {
			t.Errorf("state says %s after a switch the lagging host did not apply; want %s (the desired routing stands)", st.ActiveVersion, next)
		}
		waitFor(t, 10*time.Second, "lb-haproxy to converge", func() bool { return r.servedBy("lb-haproxy") == next })
		gen := r.status().Generation
		waitFor(t, 5*time.Second, "lb-haproxy to report the generation", func() bool {
			st := r.status()
			i := slices.IndexFunc(st.Agents, func(a fleet.Agent) bool { return a.Host == "lb-haproxy" })
			return i >= 0 && st.Agents[i].Live && st.Agents[i].Generation == gen
		})
	})

	t.Run("etcd restarts", func(t *testing.T) {
		loads := map[string]*testsupport.Load{}
		for host, url := range r.lbURLs {
			loads[host] = testsupport.StartLoad(url, testsupport.LoadOptions{Clients: 2, KeepAlive: true, Pause: 2 * time.Millisecond})
		}
		r.etcd.Stop()
		_, errOut, code := r.app("status")
		if code == 0 || !strings.Contains(errOut, r.etcd.Endpoint) {
			t.Errorf("status with etcd down: exit %d, %s; want a failure naming %s", code, errOut, r.etcd.Endpoint)
		}
		time.Sleep(time.Second)
		if err := r.etcd.Start(); err != nil {
			t.Fatal(err)
		}
		next := r.status().ActiveVersion.Other().String()
		waitFor(t, 15*time.Second, "both agents to report again", func() bool {
			st := r.status()
			return len(st.Agents) == 2 && st.Agents[0].Live && st.Agents[1].Live
		})
		r.mustApp("switch", next)
		for host, l := range loads {
			c := l.Stop()
			if c.Failures != 0 {
				t.Errorf("%s while etcd restarted: %s", host, c)
			}
			if got := r.servedBy(host); got != next {
				t.Errorf("%s serves %s after the switch, want %s", host, got, next)
			}
		}
	})

	t.Run("a second operation names the lock's holder", func(t *testing.T) {
		client, err := etcdstore.Dial(etcdstore.Options{Endpoints: []string{r.etcd.Endpoint}})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		s := &etcdstore.Store{Client: client, Prefix: "/test", Service: "app", Host: "ops-host", LeaseTTL: 2 * time.Second}
		l, err := s.Lock(context.Background(), "deploy", 0)
		if err != nil {
			t.Fatal(err)
		}
		_, errOut, code := r.app("switch", "blue")
		l.Unlock()
		if code != 3 || !strings.Contains(errOut, "ops-host") || !strings.Contains(errOut, fmt.Sprint(os.Getpid())) {
			t.Errorf("switch while the lock is held: exit %d, %s; want exit 3 naming ops-host and pid %d", code, errOut, os.Getpid())
		}
	})

	t.Run("a second agent with the same name", func(t *testing.T) {
		cfg := filepath.Join(r.dir, "lb-haproxy.yml")
		_, errOut, code := bgd(t, r.dir, nil, "--config", cfg, "agent", "--host", "lb-haproxy")
		if code != 2 || !strings.Contains(errOut, `another agent reports as host "lb-haproxy"`) {
			t.Errorf("a second agent as lb-haproxy: exit %d, %s; want exit 2 naming the other", code, errOut)
		}
		if st := r.status(); len(st.Agents) != 2 || !st.Agents[1].Live {
			t.Errorf("the refused agent changed the first one's keys: %+v", st.Agents)
		}
		for _, bad := range []string{"lb/../x", "lb 1", "-lb", "lb\x1b[2J"} {
			_, errOut, code := bgd(t, r.dir, nil, "--config", cfg, "agent", "--host", bad)
			if code != 2 || !strings.Contains(errOut, "agent host name") {
				t.Errorf("agent --host %q: exit %d, %s; want exit 2 refusing the name", bad, code, errOut)
			}
		}
	})

	t.Run("a canary on every host", func(t *testing.T) {
		was := r.status().ActiveVersion
		canary := was.Other().String()
		r.mustApp("deploy", "--release", "v2", "--canary", "30")
		st := r.status()
		for _, a := range st.Agents {
			if a.Generation != st.Generation || a.CanaryWeight != 30 || a.Active != was {
				t.Errorf("%s reports %s with canary %d%% at generation %d; want %s with 30%% at %d", a.Host, a.Active, a.CanaryWeight, a.Generation, was, st.Generation)
			}
		}
		for host, url := range r.lbURLs {
			c := testsupport.CountSlots(url, 1000, 4)
			share := c.Share(canary) // a percentage
			t.Logf("%s: canary share %.1f%% of %d (%d failed)", host, share, c.Requests, c.Failures)
			if c.Failures != 0 || share < 25 || share > 35 {
				t.Errorf("%s: canary %s got %.1f%% of 1000 requests (%d failed), want 30%% ± 5", host, canary, share, c.Failures)
			}
		}
		r.mustApp("promote")
		for host := range r.lbURLs {
			if got := r.servedBy(host); got != canary {
				t.Errorf("after promote, %s serves %s, want %s", host, got, canary)
			}
		}
	})

	t.Run("an agent that leaves is not waited for", func(t *testing.T) {
		r.stopAgent("lb-builtin")
		st := r.status()
		if len(st.Agents) != 1 || st.Agents[0].Host != "lb-haproxy" {
			t.Fatalf("agents after lb-builtin left: %+v", st.Agents)
		}
		r.mustApp("switch", st.ActiveVersion.Other().String())
	})
}

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
