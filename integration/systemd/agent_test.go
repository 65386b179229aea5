//go:build systemd

package systemd

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// etcdState is the state: section of a host whose service lives in the
// etcd that Debian's etcd-server package runs on 127.0.0.1:2379.
const etcdState = "state: {backend: etcd, endpoints: [\"http://127.0.0.1:2379\"], lease_ttl: 2s, agents_timeout: 5s}\n"

// agentsOf is the hosts `bgd status --json` lists, with whether each is
// live and the generation it reports.
func (h *host) agentsOf() (gen string, agents []string) {
	h.t.Helper()
	st := h.mustJSON("status")
	list, _ := st["agents"].([]any)
	for _, a := range list {
		m, _ := a.(map[string]any)
		agents = append(agents, fmt.Sprintf("%v live=%v generation=%v", m["host"], m["live"], m["generation"]))
	}
	return fmt.Sprint(st["generation"]), agents
}

// TestAgentUnit runs the shipped bgd-agent@.service on a host whose state
// is in etcd (Debian's etcd.service) in front of bgd-proxy@: a deploy
// waits for the agent and fails no request, a SIGKILLed agent is restarted
// by systemd and catches up, and a stopped agent leaves etcd.
func TestAgentUnit(t *testing.T) {
	h := newHost(t)
	h.installBGD(etcdState + config(""))
	h.must("systemctl", "enable", "--now", "etcd.service")
	h.must("systemctl", "enable", "--now", "bgd-proxy@app.service", "bgd-agent@app.service")
	h.waitFor(10*time.Second, "the agent to join", func() bool {
		_, agents := h.agentsOf()
		return slices.Contains(agents, "bgd-lb live=true generation=0")
	})
	if typ, state := h.prop("bgd-agent@app.service", "Type"), h.prop("bgd-agent@app.service", "ActiveState"); typ != "exec" || state != "active" {
		t.Fatalf("bgd-agent@app: Type=%s ActiveState=%s", typ, state)
	}

	// The first state written (blue active, generation 0) is applied by
	// the agent as soon as it appears.
	h.mustJSON("start", "blue")
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("through the proxy after start: %q, %v", by, err)
	}

	l := h.startLoad(5 * time.Second)
	res := h.mustJSON("deploy", "--release", "v2")
	if agents, _ := res["agents"].([]any); res["active_version"] != "green" || len(agents) != 1 || !strings.Contains(fmt.Sprint(agents[0]), "applied") {
		t.Fatalf("deploy: green is not live, or the agent's application is not reported: %v", res)
	}
	r := l.wait()
	t.Logf("deploy through the agent under load: %d requests sent, %d failed, answered by %v", r.Sent, r.Failed, r.Slots)
	if r.Failed != 0 || !slices.Contains(r.Slots, "green") {
		t.Fatalf("deploy under load: %d of %d requests failed (%+v), slots %v", r.Failed, r.Sent, r.Outages, r.Slots)
	}

	// The agent dies: systemd runs it again, it joins under a new lease,
	// and a switch made meanwhile is applied.
	oldPID := h.prop("bgd-agent@app.service", "MainPID")
	h.must("systemctl", "kill", "-s", "KILL", "bgd-agent@app.service")
	h.waitFor(5*time.Second, "the agent to run again", func() bool {
		pid := h.prop("bgd-agent@app.service", "MainPID")
		return h.prop("bgd-agent@app.service", "ActiveState") == "active" && pid != oldPID && pid != "0"
	})
	h.waitFor(10*time.Second, "the restarted agent to switch", func() bool {
		_, _, err := h.bgd("switch", "blue")
		return err == nil
	})
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("after the switch by the restarted agent: %q, %v", by, err)
	}

	// Stopped (SIGTERM): it leaves, so commands no longer wait for it.
	h.must("systemctl", "stop", "bgd-agent@app.service")
	if res := h.prop("bgd-agent@app.service", "Result"); res != "success" {
		t.Errorf("bgd-agent@app stopped with Result=%s, want success (exit 0 on SIGTERM)", res)
	}
	if _, agents := h.agentsOf(); len(agents) != 0 {
		t.Errorf("agents after the agent stopped: %v, want none", agents)
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Errorf("the proxy keeps its routing without the agent: %q, %v", by, err)
	}
}

// TestAnsibleRoleAgent installs a load-balancer host of the etcd backend
// with the Ansible role: bgd_agent_services enables bgd-agent@ (and
// bgd_services: [] no bgd-up@, the health timer off), the agent routes what
// a command writes to etcd, and a second run changes nothing.
func TestAnsibleRoleAgent(t *testing.T) {
	h := newHost(t)
	h.must("systemctl", "enable", "--now", "etcd.service")
	p := newPlaybooks(t, h, etcdState+config(""))
	vars := []string{"-e", `{"bgd_services": [], "bgd_agent_services": ["app"], "bgd_proxy_services": ["app"], "bgd_health_timer": false}`}
	if r := p.must("site.yml", vars...); r.changed == 0 {
		t.Fatalf("the first site.yml changed nothing: %+v", r)
	}
	for unit, want := range map[string]string{"bgd-agent@app.service": "enabled", "bgd-proxy@app.service": "enabled",
		"bgd-up@app.service": "disabled", "bgd-health.timer": "disabled"} {
		if got, _ := h.exec("systemctl", "is-enabled", unit); got != want { // exit 1 when disabled
			t.Errorf("%s is %q after site.yml, want %s", unit, got, want)
		}
	}
	h.waitFor(10*time.Second, "the agent to join", func() bool {
		_, agents := h.agentsOf()
		return len(agents) == 1 && strings.HasPrefix(agents[0], "bgd-lb live=true")
	})
	// The operator's command (here on the same host) writes etcd; the
	// agent the role installed routes it.
	if res := h.mustJSON("start", "blue"); res["active_version"] != "blue" {
		t.Fatalf("start blue: %v", res)
	}
	res := h.mustJSON("deploy", "--release", "v2")
	if agents, _ := res["agents"].([]any); len(agents) != 1 || !strings.Contains(fmt.Sprint(agents[0]), "applied") {
		t.Fatalf("deploy: the role's agent did not apply it: %v", res)
	}
	if by, err := h.answer(); by != "green" || err != nil {
		t.Fatalf("through the proxy after the deploy: %q, %v", by, err)
	}
	if r := p.must("site.yml", vars...); r.changed != 0 {
		t.Fatalf("the second site.yml changed %d tasks, want 0", r.changed)
	}
}
