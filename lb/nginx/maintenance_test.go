package nginx

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestRenderMaintenanceGolden: maintenance with the driver's own text and
// with a page (the temporary directory written as /etc/nginx/conf.d).
func TestRenderMaintenanceGolden(t *testing.T) {
	for _, c := range []struct {
		name, page string
	}{{"maintenance-text", ""}, {"maintenance-page", "<h1>back soon</h1>\n"}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := New("app", testConfig(dir), Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Render(lbtest.Route("green", 9, func(r *lb.Route) { r.Maintenance, r.MaintenancePage = true, c.page }))
			if err != nil {
				t.Fatal(err)
			}
			lbtest.Golden(t, c.name, bytes.ReplaceAll(got, []byte(dir), []byte("/etc/nginx/conf.d")), *update)
		})
	}
}

// TestFlipWritesTheMaintenancePage: a flip to a route in maintenance with a
// page writes the page beside the file before nginx -t; the file serves it.
func TestFlipWritesTheMaintenancePage(t *testing.T) {
	f, b := newFake(t)
	r := testRoute("blue", 2)
	r.Maintenance, r.MaintenancePage = true, "<p>later</p>"
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(f.file + ".maintenance.html")
	if err != nil || string(page) != "<p>later</p>" {
		t.Fatalf("page file: %q %v", page, err)
	}
	conf, _ := os.ReadFile(f.file)
	if !strings.Contains(string(conf), `alias "`+filepath.Clean(f.file)+`.maintenance.html";`) {
		t.Errorf("the file does not serve the page:\n%s", conf)
	}
}
