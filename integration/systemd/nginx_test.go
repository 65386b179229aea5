//go:build systemd

package systemd

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// nginxConfig is the test's bluegreen.yml for the nginx driver: Debian's
// nginx (its nginx.service) includes /etc/nginx/conf.d/*.conf, where bgd
// renders the service's server on the port the tests load.
func nginxConfig() string {
	return fmt.Sprintf(`state_dir: /var/lib/bgd
services:
  app:
    command: ["/usr/local/bin/bgd", "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]
    blue: {port: %d}
    green: {port: %d}
    stop_grace: 2s
    lb:
      driver: nginx
      nginx: {file: /etc/nginx/conf.d/bgd-app.conf, listen: "127.0.0.1:%d"}
`, bluePort, greenPort, proxyPort)
}

// TestNginxUnderTheShippedUnits drives Debian's nginx from the shipped
// units: bgd-up@ (ProtectSystem=yes, NoNewPrivileges) renders the server
// file, checks it with nginx -t and reloads nginx on a fresh host; a deploy
// under load fails no request; after a restart of the whole container the
// recorded colour answers through nginx again; a sweep from bgd-health
// succeeds.
func TestNginxUnderTheShippedUnits(t *testing.T) {
	h := newHost(t)
	h.installBGD(nginxConfig())
	h.must("systemctl", "enable", "--now", "nginx.service")
	h.must("systemctl", "enable", "bgd-up@app.service")
	h.must("systemctl", "start", "bgd-up@app.service")
	h.waitAnswer("blue", 10*time.Second)
	if res := h.prop("bgd-up@app.service", "Result"); res != "success" {
		t.Fatalf("bgd-up@app: Result=%s\n%s", res, h.journal("bgd-up@app.service"))
	}
	if conf := h.must("cat", "/etc/nginx/conf.d/bgd-app.conf"); !strings.Contains(conf, fmt.Sprint(bluePort)) {
		t.Fatalf("the rendered server does not route to blue (port %d):\n%s", bluePort, conf)
	}

	l := h.startLoad(5 * time.Second)
	if res := h.mustJSON("deploy", "--release", "v2"); res["changed"] != true || res["active_version"] != "green" {
		t.Fatalf("deploy: %v", res)
	}
	r := l.wait()
	t.Logf("nginx, deploy under load: %d requests sent (a new connection each), %d failed, answered by %v", r.Sent, r.Failed, r.Slots)
	if r.Failed != 0 || !slices.Contains(r.Slots, "green") {
		t.Fatalf("deploy under load through nginx: %d of %d requests failed (%+v), slots %v", r.Failed, r.Sent, r.Outages, r.Slots)
	}

	_, startedAt := h.restart()
	h.waitBooted(30 * time.Second)
	answered := h.waitAnswer("green", 15*time.Second)
	t.Logf("nginx: container restarted, green answers through nginx %s after docker start", answered.Sub(startedAt).Round(time.Millisecond))
	if res := h.prop("bgd-up@app.service", "Result"); res != "success" {
		t.Fatalf("bgd-up@app after the restart: Result=%s\n%s", res, h.journal("bgd-up@app.service"))
	}
	st := h.mustJSON("status")
	if st["active_version"] != "green" || slotPID(st, "green") == 0 || slotPID(st, "blue") == 0 {
		t.Fatalf("status after the restart: want green active and both slots running: %v", st)
	}

	if out, err := h.exec("systemctl", "start", "bgd-health.service"); err != nil {
		t.Fatalf("bgd-health.service with nginx: %v\n%s\n%s", err, out, h.journal("bgd-health.service"))
	}
	if res := h.prop("bgd-health.service", "Result"); res != "success" {
		t.Fatalf("bgd-health.service: Result=%s\n%s", res, h.journal("bgd-health.service"))
	}
}
