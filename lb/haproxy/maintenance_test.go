package haproxy

import (
	"context"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestRenderMaintenancePage: with maintenance_page, the frontend's rule
// answers that file.
func TestRenderMaintenancePage(t *testing.T) {
	b, _, _ := setup(t, Options{MaintenancePage: "/srv/www/maintenance.html", Bind: ":80"})
	got, err := b.Render(route("blue"))
	if err != nil {
		t.Fatal(err)
	}
	got = []byte(strings.ReplaceAll(strings.ReplaceAll(string(got), b.cfg.MapFile, "/etc/haproxy/bgd.map"), b.cfg.Socket, "/run/haproxy/admin.sock"))
	lbtest.Golden(t, "maintenance_page", got, *update)
}

// TestFlipSetsTheMaintenanceEntry: maintenance on adds the entry
// app@maintenance "on" at runtime and in the map file, beside the colour's
// entry; off sets it "off"; a flip that leaves maintenance as it is sends
// no change of it.
func TestFlipSetsTheMaintenanceEntry(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	ctx := context.Background()
	on := route("blue")
	on.Maintenance = true
	if err := b.Flip(ctx, on); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app@maintenance"); v != "on" {
		t.Errorf("runtime maintenance entry %q, want on", v)
	}
	if got := fileText(t, mapFile); got != "# managed by bgd\nother other_blue\napp app_blue\napp@maintenance on\napp@preview app_green\n" {
		t.Errorf("map file:\n%s", got)
	}
	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
	if err := b.Flip(ctx, on); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "set map") || strings.HasPrefix(c, "add map") {
			t.Errorf("a repeated flip in maintenance sent %q", c)
		}
	}
	if err := b.Flip(ctx, route("green")); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app@maintenance"); v != "off" {
		t.Errorf("runtime maintenance entry %q after off, want off", v)
	}
	if got := fileText(t, mapFile); got != "# managed by bgd\nother other_blue\napp app_green\napp@maintenance off\napp@preview app_blue\n" {
		t.Errorf("map file after off:\n%s", got)
	}
	lbtest.Refuses(t, b, lbtest.Route("blue", 8, func(r *lb.Route) { r.Maintenance, r.MaintenancePage = true, "<p>x</p>" }), "haproxy", lb.FeatureMaintenance)
}
