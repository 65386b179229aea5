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

	"github.com/bgd-dev/bgd/config"
)

// upOutput is `bgd --json up`.
type upOutput struct {
	OK       bool     `json:"ok"`
	Changed  bool     `json:"changed"`
	Actions  []string `json:"actions"`
	Error    string   `json:"error"`
	Services []struct {
		Service string       `json:"service"`
		Active  config.Color `json:"active_version"`
		Changed bool         `json:"changed"`
		Actions []string     `json:"actions"`
	} `json:"services"`
}

func (r *rig) up() (upOutput, int, time.Duration) {
	r.t.Helper()
	began := time.Now()
	out, errOut, code := r.run("--json", "up")
	took := time.Since(began)
	var u upOutput
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		r.t.Fatalf("up --json: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	return u, code, took
}

// body GETs / through the rig's proxy on a new connection.
func (r *rig) body() string {
	r.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", r.proxy))
	if err != nil {
		r.t.Fatalf("request through the proxy: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestUpBringsEverythingBack: after start and a deploy, every slot and the
// proxy are killed (a crash, or a reboot of the LB host); `bgd up` brings
// back the active colour on its release, the standby and the proxy, which
// answers with the active colour. Run again, it changes nothing.
func TestUpBringsEverythingBack(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.must("start", "blue", "--release", "v1")
	r.must("deploy", "--release", "v2")
	r.waitServedBy(config.Green)
	st := r.state()
	for _, pid := range []int{st.BluePID, st.GreenPID, st.ProxyPID} {
		if pid <= 0 {
			t.Fatalf("state records no pid: %+v", st)
		}
		killGroup(pid)
	}
	for _, port := range []int{r.blue, r.green, r.proxy} {
		waitFree(t, port)
	}

	u, code, took := r.up()
	if code != 0 || !u.OK || !u.Changed || len(u.Actions) != 3 || len(u.Services) != 1 || u.Services[0].Active != config.Green {
		t.Fatalf("up: exit %d %+v", code, u)
	}
	for i, want := range []string{"started active slot green (release v2", "started the builtin proxy", "started standby slot blue (release v1"} {
		if !strings.HasPrefix(u.Actions[i], want) {
			t.Errorf("action %d = %q, want %q...", i, u.Actions[i], want)
		}
	}
	t.Logf("up brought back 2 slots and the proxy in %s", took)
	if b := r.body(); !strings.Contains(b, "color=green release=v2") {
		t.Fatalf("the proxy answers %q, want green's v2", b)
	}
	now := r.state()
	if now.GreenPID == st.GreenPID || now.ProxyPID == st.ProxyPID || now.ActiveVersion != config.Green || !now.GreenHealthy || !now.BlueHealthy {
		t.Errorf("state after up: %+v", now)
	}
	if s := r.status(); !s.Blue.Running || s.Blue.Release != "v1" || !s.Green.Running || s.Proxy == nil || !s.Proxy.Running {
		t.Errorf("status after up: blue %+v green %+v proxy %+v", s.Blue, s.Green, s.Proxy)
	}

	u, code, _ = r.up()
	if code != 0 || !u.OK || u.Changed || len(u.Actions) != 0 {
		t.Fatalf("second up: exit %d %+v", code, u)
	}
	if r.state().GreenPID != now.GreenPID {
		t.Errorf("second up replaced the active slot")
	}
}

// sweep runs `bgd --json health-check` and returns its exit code, its
// actions and its error.
func (r *rig) sweep() (int, []string, string) {
	r.t.Helper()
	out, errOut, code := r.run("--json", "health-check")
	var v struct {
		Error    string `json:"error"`
		Services []struct {
			Actions []string `json:"actions"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Services) != 1 {
		r.t.Fatalf("health-check --json: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	return code, v.Services[0].Actions, v.Error
}

// TestSweepRestartsACrashedSlot: the active slot is SIGKILLed; the next
// health sweep restarts it on its release and exits 0. Then the slot's
// command crashes at every start: three sweeps try (exit 1), the fourth
// reports the crash loop without trying, and `bgd start` after the fix
// brings it back.
func TestSweepRestartsACrashedSlot(t *testing.T) {
	dir := t.TempDir()
	broken := dir + "/broken"
	r := newRig(t, rigOptions{healthTimeout: 5 * time.Second, command: []string{"sh", "-c",
		`test -e "$0" && { echo "broken release: exiting" >&2; exit 3; }; exec "$1" demo-app --port "$2" --color "$3" --release "$4"`,
		broken, bgdBin, "{{.Port}}", "{{.Color}}", "{{.Release}}"}})
	r.must("start", "blue", "--release", "v1")
	r.waitServedBy(config.Blue)
	killGroup(r.state().BluePID)
	waitFree(t, r.blue)

	began := time.Now()
	code, actions, errMsg := r.sweep()
	took := time.Since(began)
	if code != 0 || len(actions) != 1 || !strings.HasPrefix(actions[0], "restarted active slot blue (release v1") {
		t.Fatalf("sweep after a crash: exit %d, actions %q, error %q", code, actions, errMsg)
	}
	t.Logf("the sweep restarted the active slot in %s", took)
	if b := r.body(); !strings.Contains(b, "color=blue release=v1") {
		t.Fatalf("the proxy answers %q after the restart", b)
	}
	if rs := r.state().BlueRestarts; rs == nil || rs.Count != 1 {
		t.Errorf("restarts recorded: %+v", rs)
	}

	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	killGroup(r.state().BluePID)
	waitFree(t, r.blue)
	// Restart 1 of 3 was the one above: two more attempts, then the loop.
	for i := 2; i <= 3; i++ {
		code, _, errMsg := r.sweep()
		if code != 1 || !strings.Contains(errMsg, fmt.Sprintf("restart %d of 3 within 10m0s failed", i)) || !strings.Contains(errMsg, "broken release: exiting") {
			t.Fatalf("sweep %d with a crashing release: exit %d, %q", i, code, errMsg)
		}
	}
	code, actions, errMsg = r.sweep()
	if code != 1 || len(actions) != 0 || !strings.Contains(errMsg, "crash loop: 3 restarts in 10m0s") {
		t.Fatalf("sweep past the limit: exit %d, actions %q, error %q", code, actions, errMsg)
	}
	_, errOut, code := r.run("health-check")
	if code != 1 || !strings.Contains(errOut, "active slot blue: crash loop: 3 restarts in 10m0s") {
		t.Fatalf("health-check text: exit %d, stderr %q", code, errOut)
	}

	os.Remove(broken)
	r.must("start", "blue")
	if code, _, errMsg := r.sweep(); code != 0 || r.state().BlueRestarts != nil {
		t.Fatalf("after an operator's start: exit %d %q, restarts %+v", code, errMsg, r.state().BlueRestarts)
	}
}

// TestUpHAProxyAfterARestart: the LB host restarts: both slots are gone and
// HAProxy comes back with a map file that routes to the wrong colour (a
// provisioning run rewrote it). `bgd up` starts green (active, v2) and blue,
// and sets HAProxy's map back to green, confirmed; run again it changes
// nothing.
func TestUpHAProxyAfterARestart(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	h := newHAProxy(t, blue, green, haSetup{})
	dir := t.TempDir()
	cmd, _ := json.Marshal([]string{bgdBin, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"})
	yml := fmt.Sprintf("services:\n  app:\n    command: %s\n    blue: {port: %d}\n    green: {port: %d}\n    health: {timeout: 10s}\n"+
		"    lb: {driver: haproxy, haproxy: {socket: %q, map_file: %q}}\n", cmd, blue, green, h.sock, h.mapFile)
	if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	run := func(args ...string) (string, int) {
		t.Helper()
		out, errOut, code := bgd(t, dir, []string{"NO_COLOR=1"}, args...)
		if code != 0 {
			t.Fatalf("bgd %v: exit %d\n%s%s", args, code, out, errOut)
		}
		return out, code
	}
	run("start", "blue", "--release", "v1")
	run("deploy", "--release", "v2")
	h.waitUp(t, config.Green)
	h.assertRoutesTo(t, "green")

	var st struct {
		Blue  int `json:"blue_pid"`
		Green int `json:"green_pid"`
	}
	data, _ := os.ReadFile(statePath)
	json.Unmarshal(data, &st)
	killGroup(st.Blue)
	killGroup(st.Green)
	waitFree(t, blue)
	waitFree(t, green)
	if err := os.WriteFile(h.mapFile, []byte("app app_blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.restart(t)
	if v := h.mapValue(t); v != "app_blue" {
		t.Fatalf("after the restart HAProxy's map says %q, want the stale app_blue", v)
	}

	out, _ := run("--json", "up")
	var u upOutput
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{"started active slot green (release v2", "routed the load balancer to green", "started standby slot blue (release v1"}
	if !u.OK || !u.Changed || len(u.Actions) != len(want) {
		t.Fatalf("up: %+v", u)
	}
	for i, w := range want {
		if !strings.HasPrefix(u.Actions[i], w) {
			t.Errorf("action %d = %q, want %q...", i, u.Actions[i], w)
		}
	}
	if v := h.mapValue(t); v != "app_green" {
		t.Errorf("HAProxy's map says %q after up, want app_green", v)
	}
	if data, _ := os.ReadFile(h.mapFile); string(data) != "app app_green\napp@preview app_blue\n" {
		t.Errorf("map file %q after up", data)
	}
	h.assertRoutesTo(t, "green")

	out, _ = run("--json", "up")
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.Changed || len(u.Actions) != 0 {
		t.Fatalf("second up: %+v %v", u, err)
	}
}
