package haproxy

import (
	"context"
	"fmt"

	"github.com/bgd-dev/bgd/lb"
)

// The preview route: the snippet's frontend sends a request with
// "X-Bgd-Preview: 1" from a loopback address to the backend that the map
// entry "<service>@preview" names, and bgd keeps that entry naming the
// standby's backend: set at each flip and before each smoke check, and
// persisted in the map file like the main entry. Every answer carries
// X-Bgd-Slot with the name of the server that answered (a colour). A
// frontend without the preview rule routes the header like any request:
// the answer then names the active colour, which the smoke check refuses.

var _ lb.PreviewPreparer = (*Balancer)(nil)

// PreviewKey is the map key of the service's preview entry.
func PreviewKey(service string) string { return service + "@preview" }

// PreparePreview points the preview entry at r.Standby's backend
// (setPreview), then waits until HAProxy's own checks see a server of it
// UP, as a flip does: a slot that just became healthy is not yet UP in
// HAProxy, which would answer 503.
func (b *Balancer) PreparePreview(ctx context.Context, r lb.Route) error {
	if err := b.setPreview(ctx, r); err != nil {
		return err
	}
	return b.waitUp(ctx, b.backends[r.Standby.Color], r.Standby.Color)
}

// setPreview sets the map entry "<service>@preview" to r.Standby's backend
// in HAProxy (add map when absent) and in the map file.
func (b *Balancer) setPreview(ctx context.Context, r lb.Route) error {
	target, ok := b.backends[r.Standby.Color]
	if !ok {
		return fmt.Errorf("haproxy: preview of %s: standby colour %q is not blue or green", b.service, r.Standby.Color)
	}
	key := PreviewKey(b.service)
	cur, err := b.client.GetMap(ctx, b.cfg.MapFile, key)
	if err != nil {
		return b.wrap(err, "read the preview map entry")
	}
	if !cur.Found || cur.Value != target {
		if cur.Found {
			err = b.client.SetMap(ctx, b.cfg.MapFile, key, target)
		} else {
			err = b.client.AddMap(ctx, b.cfg.MapFile, key, target)
		}
		if err != nil {
			return b.wrap(err, "set the preview map entry "+key)
		}
	}
	if err := b.persistKey(ctx, key, target); err != nil {
		return fmt.Errorf("%w: the preview entry %s %s: %v", ErrMapFile, key, target, err)
	}
	return nil
}

// PreviewURL is path on lb.haproxy.listen, the frontend's address (a
// wildcard one reached on loopback).
func (b *Balancer) PreviewURL(path string) (string, error) {
	u, err := lb.LoopbackURL(b.opts.Bind, path)
	if err != nil {
		return "", fmt.Errorf("haproxy for service %q: lb.haproxy.listen: %w", b.service, err)
	}
	return u, nil
}
