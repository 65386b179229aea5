package haproxy

import (
	"context"
	"fmt"
	"os"

	"github.com/bgd-dev/bgd/lb"
)

// Maintenance is the frontend's maintenance rule, as the snippet template
// sees it: while the map's entry Key is "on", every request of the service
// is answered 503 with Retry-After and the page (`file` Page, else
// `string` Text), instead of being routed.
type Maintenance struct {
	Key        string // "<service>@maintenance": no service name has a '@'
	Page       string // the HTML file (Options.MaintenancePage), "" for Text
	Text       string // lb.DefaultMaintenancePage, as an HAProxy quoted string's content
	RetryAfter string // lb.MaintenanceRetryAfter
	On         bool   // the route asks for maintenance
}

// maxPage is what HAProxy can answer with `http-request return ... file`:
// the page and the headers must fit in one buffer (tune.bufsize, 16 KiB by
// default).
const maxPage = 15 << 10

// maintenanceKey is the map entry that turns maintenance on ("on") or off.
func (b *Balancer) maintenanceKey() string { return b.service + "@maintenance" }

func (b *Balancer) maintenanceData(r lb.Route) Maintenance {
	return Maintenance{Key: b.maintenanceKey(), Page: b.opts.MaintenancePage,
		Text:       `503 Service Unavailable: down for maintenance, try again later\n`,
		RetryAfter: lb.MaintenanceRetryAfter, On: r.Maintenance}
}

// checkPage refuses a route in maintenance whose page HAProxy cannot
// answer: HAProxy reads the page of its rule (maintenance_page) when it
// loads its configuration, so another page (bgd maintenance on --page)
// would need the snippet rendered with it and a reload.
func (b *Balancer) checkPage(r lb.Route) error {
	if !r.Maintenance || r.MaintenancePage == "" {
		return nil
	}
	no := func(format string, args ...any) error {
		return &lb.UnsupportedError{Driver: "haproxy", Feature: lb.FeatureMaintenance, Service: b.service, Detail: fmt.Sprintf(format, args...)}
	}
	if len(r.MaintenancePage) > maxPage {
		return no("the page is %d bytes; HAProxy answers at most about %d (one buffer, tune.bufsize)", len(r.MaintenancePage), maxPage)
	}
	page := b.opts.MaintenancePage
	if page == "" {
		return no("HAProxy answers the page its configuration names, read when it loads: set maintenance_page to this page, install the snippet `bgd render` prints, and reload HAProxy")
	}
	if cur, err := os.ReadFile(page); err != nil || string(cur) != r.MaintenancePage {
		return no("the page differs from maintenance_page %s, the one HAProxy's rule answers (read when it loads): set maintenance_page to this page, install the snippet `bgd render` prints, and reload HAProxy", page)
	}
	return nil
}

// setMaintenance sets the service's maintenance entry to "on" or "off" if
// it says otherwise, reads it back, and persists it in the map file (a
// reload keeps it). An entry that is absent counts as off. On failure the
// previous entry is put back.
func (b *Balancer) setMaintenance(ctx context.Context, on bool) error {
	key, want := b.maintenanceKey(), map[bool]string{true: "on", false: "off"}[on]
	prev, err := b.client.GetMap(ctx, b.cfg.MapFile, key)
	if err != nil {
		return b.wrap(err, "read the maintenance entry")
	}
	if prev.Found && prev.Value == want || !prev.Found && !on {
		if prev.Found {
			if err := b.persistKey(ctx, key, want); err != nil {
				return fmt.Errorf("%w: %v", ErrMapFile, err)
			}
		}
		return nil
	}
	if err := b.setMapKey(ctx, key, prev.Found, want); err != nil {
		return b.wrap(err, "set the maintenance entry")
	}
	got, err := b.client.GetMap(ctx, b.cfg.MapFile, key)
	if err == nil && (!got.Found || got.Value != want) {
		err = fmt.Errorf("get map answers %+v", got)
	}
	if err == nil {
		err = b.persistKey(ctx, key, want)
		if err != nil {
			err = fmt.Errorf("%w: %v", ErrMapFile, err)
		}
	}
	if err != nil {
		back := "off"
		if prev.Found {
			back = prev.Value
		}
		if rerr := b.setMapKey(context.WithoutCancel(ctx), key, true, back); rerr != nil {
			return fmt.Errorf("%w: maintenance %s for %s: %v; restoring %q failed too: %v (check `get map %s %s`)",
				lb.ErrNotConfirmed, want, b.service, err, back, rerr, b.cfg.MapFile, key)
		}
		return fmt.Errorf("%w: maintenance %s for %s: %v; the entry was put back to %q", lb.ErrNotConfirmed, want, b.service, err, back)
	}
	b.opts.Logger.Info("haproxy maintenance", "service", b.service, "state", want)
	return nil
}

// setMapKey sets key to value, adding it when absent.
func (b *Balancer) setMapKey(ctx context.Context, key string, exists bool, value string) error {
	if exists {
		if err := b.client.SetMap(ctx, b.cfg.MapFile, key, value); err == nil {
			return nil
		}
	}
	return b.client.AddMap(ctx, b.cfg.MapFile, key, value)
}
