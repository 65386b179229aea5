package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
