package nginx

import (
	"bytes"
	"fmt"
	"os"

	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
)

// pageFile is where a Flip writes the maintenance page of a route that has
// one: beside lb.nginx.file, with a name nginx's usual include of
// conf.d/*.conf does not take ("<file>.maintenance.html"). The template
// serves it with an alias, so nginx's workers must be able to read it
// (written mode 0644).
func (b *Balancer) pageFile() string { return b.cfg.File + ".maintenance.html" }

// setMaintenance fills d's maintenance variables from r.
func setMaintenance(d *Data, r lb.Route, page string) {
	if !r.Maintenance {
		return
	}
	d.Maintenance, d.RetryAfter = true, lb.MaintenanceRetryAfter
	d.MaintenanceText = `503 Service Unavailable: down for maintenance, try again later\n`
	if r.MaintenancePage != "" {
		d.MaintenancePage = page
	}
}

// writePage writes r's maintenance page where the rendered file reads it
// (pageFile), before nginx -t, which checks that the file is there. A page
// already written with the same bytes is left alone.
func (b *Balancer) writePage(r lb.Route) error {
	if !r.Maintenance || r.MaintenancePage == "" {
		return nil
	}
	path := b.pageFile()
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, []byte(r.MaintenancePage)) {
		return nil
	}
	if err := fsx.WriteFileAtomic(path, []byte(r.MaintenancePage), 0o644); err != nil {
		return fmt.Errorf("nginx: writing the maintenance page of service %q: %w (it goes beside lb.nginx.file)", b.service, err)
	}
	return nil
}
