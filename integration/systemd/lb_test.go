//go:build systemd

package systemd

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// lbConfig is the test's bluegreen.yml for the nginx or HAProxy driver,
// serving on proxyPort; lb is the driver's settings.
func lbConfig(driver, lb string) string {
	return serviceConfig(fmt.Sprintf("driver: %s\n      %s: {%s, listen: \"127.0.0.1:%d\"}", driver, driver, lb, proxyPort), "")
}

// Debian's nginx.service includes /etc/nginx/conf.d/*.conf, where bgd
// renders the service's server.
func setUpNginx(h *host) {
	h.installBGD(lbConfig("nginx", "file: /etc/nginx/conf.d/bgd-app.conf"))
	h.must("systemctl", "enable", "--now", "nginx.service")
}

// Debian's haproxy.service loads a small base (the compose host's) plus the
// snippet `bgd render` prints, through EXTRAOPTS in /etc/default/haproxy;
// the admin socket is where that unit keeps its runtime files.
func setUpHAProxy(h *host) {
	h.installBGD(lbConfig("haproxy", "socket: /run/haproxy/admin.sock, map_file: /etc/haproxy/bgd.map"))
	h.cp(filepath.Join(repoRoot(), "images", "lb", "haproxy.cfg"), "/etc/haproxy/haproxy.cfg")
	h.write("/etc/default/haproxy", "EXTRAOPTS=\"-f /etc/haproxy/bgd.cfg\"\n", 0o644)
	h.write("/etc/haproxy/bgd.map", "app app_blue\n", 0o644)
	snippet, stderr, err := h.bgd("render")
	if err != nil {
		h.t.Fatalf("bgd render: %v\n%s", err, stderr)
	}
	h.write("/etc/haproxy/bgd.cfg", snippet, 0o644)
	h.must("systemctl", "enable", "--now", "haproxy.service")
}

// TestLoadBalancersUnderTheShippedUnits drives Debian's nginx and HAProxy
// from the shipped units: on a fresh host bgd-up@ (ProtectSystem=yes,
// NoNewPrivileges) routes the load balancer to blue (nginx: render, nginx
// -t, reload; HAProxy: set map on the admin socket); a deploy under load
// fails no request; after a restart of the whole container the recorded
// colour answers through the load balancer again; a sweep from bgd-health
// succeeds.
func TestLoadBalancersUnderTheShippedUnits(t *testing.T) {
	for _, lb := range []struct {
		name  string
		setUp func(*host)
	}{{"nginx", setUpNginx}, {"haproxy", setUpHAProxy}} {
		t.Run(lb.name, func(t *testing.T) {
			h := newHost(t)
			lb.setUp(h)
			h.must("systemctl", "enable", "bgd-up@app.service")
			h.must("systemctl", "start", "bgd-up@app.service")
			h.waitAnswer("blue", 10*time.Second)
			h.unitSucceeded("bgd-up@app.service")

			l := h.startLoad(5 * time.Second)
			if res := h.mustJSON("deploy", "--release", "v2"); res["changed"] != true || res["active_version"] != "green" {
				t.Fatalf("deploy: %v", res)
			}
			r := l.wait()
			t.Logf("%s, deploy under load: %d requests sent (a new connection each), %d failed, answered by %v", lb.name, r.Sent, r.Failed, r.Slots)
			if r.Failed != 0 || !slices.Contains(r.Slots, "green") {
				t.Fatalf("deploy under load through %s: %d of %d requests failed (%+v), slots %v", lb.name, r.Failed, r.Sent, r.Outages, r.Slots)
			}

			_, startedAt := h.restart()
			h.waitBooted(30 * time.Second)
			answered := h.waitAnswer("green", 15*time.Second)
			t.Logf("%s: container restarted, green answers through it %s after docker start", lb.name, answered.Sub(startedAt).Round(time.Millisecond))
			h.unitSucceeded("bgd-up@app.service")
			st := h.mustJSON("status")
			if st["active_version"] != "green" || slotPID(st, "green") == 0 || slotPID(st, "blue") == 0 {
				t.Fatalf("status after the restart: want green active and both slots running: %v", st)
			}

			if out, err := h.exec("systemctl", "start", "bgd-health.service"); err != nil {
				t.Fatalf("bgd-health.service: %v\n%s\n%s", err, out, h.journal("bgd-health.service"))
			}
			h.unitSucceeded("bgd-health.service")
		})
	}
}

// unitSucceeded fails the test unless unit's last run ended in success.
func (h *host) unitSucceeded(unit string) {
	h.t.Helper()
	if res := h.prop(unit, "Result"); res != "success" {
		h.t.Fatalf("%s: Result=%s\n%s", unit, res, strings.TrimSpace(h.journal(unit)))
	}
}
