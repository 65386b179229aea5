package haproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

// flipSplit routes the service to the split backend with r's weights:
// check the split backend (servers blue and green, the cookie the route's
// stickiness needs), `set weight` both servers, wait until HAProxy's checks
// see both UP, point the map entry at the split backend, confirm the entry
// with `get map` and both weights with `get weight`, and rewrite the map
// file. On any error the previous entry and weights are put back.
func (b *Balancer) flipSplit(ctx context.Context, r lb.Route) error {
	start := time.Now()
	want := map[config.Color]int{r.Active.Color: r.Active.Weight, r.Standby.Color: r.Standby.Weight}
	log := b.opts.Logger.With("service", b.service, "backend", b.split,
		"active", r.Active.Color, "canary", r.Standby.Color, "canary_weight", r.Standby.Weight, "sticky", r.Sticky)

	if err := b.checkSplit(ctx, r); err != nil {
		return err
	}
	prev, err := b.lookup(ctx)
	if err != nil {
		return err
	}
	if err := b.checkMapFile(b.split); err != nil {
		return err
	}
	before, err := b.weights(ctx)
	if err != nil {
		return err
	}
	// Restores the weights, then says what failed and whether that worked.
	undo := func(err error) error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*b.opts.CallTimeout)
		defer cancel()
		if rerr := b.setWeights(rctx, before); rerr != nil {
			return fmt.Errorf("%w; restoring the split backend's weights (%s) failed too: %v (check `get weight %s/blue`)",
				err, weightText(before), rerr, b.split)
		}
		return err
	}
	if err := b.setWeights(ctx, want); err != nil {
		return undo(b.wrap(err, "set the split backend's weights"))
	}
	if err := b.waitServersUp(ctx, r); err != nil {
		return undo(err)
	}
	if !prev.Found || prev.Value != b.split {
		if err := b.setEntry(ctx, prev.Found, b.split); err != nil {
			var ce *admin.CommandError
			if !errors.As(err, &ce) {
				// The command may have been applied before the connection
				// failed: put the previous entry back, harmless if not.
				if rerr := b.restore(ctx, prev); rerr != nil {
					return undo(fmt.Errorf("%w; restoring the previous entry failed too: %v (check `get map %s %s`)",
						b.wrap(err, "set the map entry"), rerr, b.cfg.MapFile, b.service))
				}
			}
			return undo(b.wrap(err, "set the map entry"))
		}
	}
	if cause := b.confirmSplit(ctx, want); cause != nil {
		err := fmt.Errorf("%w: %s split %s: %v", lb.ErrNotConfirmed, b.service, weightText(want), cause)
		if rerr := b.restore(ctx, prev); rerr != nil {
			return undo(fmt.Errorf("%w; restoring the previous entry failed too: %v (check `get map %s %s`)", err, rerr, b.cfg.MapFile, b.service))
		}
		return undo(fmt.Errorf("%w; the previous entry was restored", err))
	}
	if err := b.persist(ctx, b.split); err != nil {
		if rerr := b.restore(ctx, prev); rerr != nil {
			return fmt.Errorf("%w: %v; HAProxy now routes %s to %s and restoring the previous entry failed: %v",
				ErrMapFile, err, b.service, b.split, rerr)
		}
		return undo(fmt.Errorf("%w: %v; the runtime change was undone, so HAProxy still routes as before", ErrMapFile, err))
	}
	log.Info("haproxy split", "previous", prev.Value, "weights", weightText(want), "elapsed", time.Since(start))
	return nil
}

// checkSplit refuses a split HAProxy cannot do as asked: no split backend,
// no server blue or green in it, or a cookie that does not match the
// route's stickiness. Nothing has changed when it fails.
func (b *Balancer) checkSplit(ctx context.Context, r lb.Route) error {
	backends, err := b.client.ShowBackends(ctx)
	if err != nil {
		return b.wrap(err, "list backends")
	}
	if !slices.Contains(backends, b.split) {
		return fmt.Errorf("%w: cannot split %s between %s and %s: backend %q (lb.haproxy.split_backend) is not in HAProxy's running configuration (it has: %s); a canary needs it, with servers named blue and green: `bgd render` prints it; add it and reload HAProxy",
			ErrNoBackend, b.service, r.Active.Color, r.Standby.Color, b.split, strings.Join(backends, ", "))
	}
	rows, err := b.client.ShowStat(ctx, "")
	if err != nil {
		return b.wrap(err, "read the split backend")
	}
	var cookie string
	servers := map[string]admin.Stat{}
	var names []string
	for _, s := range rows {
		switch {
		case s.Proxy != b.split:
		case s.Type == admin.StatBackend:
			cookie = s.Fields["cookie"]
		case s.IsServer():
			servers[s.Name] = s
			names = append(names, s.Name)
		}
	}
	for _, c := range config.Colors {
		if _, ok := servers[c.String()]; !ok {
			return fmt.Errorf("%w: cannot split %s: backend %q has no server named %s (it has: %s); bgd sets the weights of servers blue and green: `bgd render` prints the backend",
				ErrNoBackend, b.service, b.split, c, cmp.Or(strings.Join(names, ", "), "none"))
		}
	}
	for _, u := range []lb.Upstream{r.Active, r.Standby} {
		// HAProxy shows the address it resolved: compare IPv4 literals only.
		addr := servers[u.Color.String()].Addr
		if ip := net.ParseIP(u.Host); ip != nil && ip.To4() != nil && addr != "" && addr != u.Addr() {
			return fmt.Errorf("%w: cannot split %s: server %s of backend %q is %s, but the %s slot listens on %s; put the split backend `bgd render` prints in the configuration and reload HAProxy",
				ErrNoBackend, b.service, u.Color, b.split, addr, u.Color, u.Addr())
		}
	}
	name := lb.StickyCookie(b.service)
	if r.Sticky {
		bad := cookie != name
		for _, c := range config.Colors {
			bad = bad || servers[c.String()].Fields["cookie"] != c.String()
		}
		if bad {
			return fmt.Errorf("%w: cannot make %s's split sticky: backend %q has cookie %q with servers blue=%q green=%q, and needs `cookie %s insert indirect nocache httponly` with `cookie blue` and `cookie green` on its servers; HAProxy reads them only from its configuration: set canary.sticky: true, put the split backend `bgd render` prints in the configuration and reload HAProxy",
				ErrSticky, b.service, b.split, cookie, servers["blue"].Fields["cookie"], servers["green"].Fields["cookie"], name)
		}
	} else if cookie != "" {
		return fmt.Errorf("%w: cannot split %s without stickiness: backend %q inserts cookie %q, so HAProxy would keep each client on the side that first answered it; set canary.sticky: true, or remove the cookie line from the backend (`bgd render` prints it) and reload HAProxy",
			ErrSticky, b.service, b.split, cookie)
	}
	return nil
}

// weights reads the split backend's servers' weights.
func (b *Balancer) weights(ctx context.Context) (map[config.Color]int, error) {
	out := map[config.Color]int{}
	for _, c := range config.Colors {
		w, err := b.client.GetWeight(ctx, b.split, c.String())
		if err != nil {
			return nil, b.wrap(err, "read the split backend's weights")
		}
		out[c] = w.Current
	}
	return out, nil
}

// setWeights sets the split backend's servers' weights (HAProxy's weights
// are relative, so a percentage is used as it is), blue then green.
func (b *Balancer) setWeights(ctx context.Context, w map[config.Color]int) error {
	for _, c := range config.Colors {
		if err := b.client.SetWeight(ctx, b.split, c.String(), w[c]); err != nil {
			return err
		}
	}
	return nil
}

// confirmSplit reads the map entry and both weights back from HAProxy:
// nil when they are what the split asked for, else what differs.
func (b *Balancer) confirmSplit(ctx context.Context, want map[config.Color]int) error {
	got, err := b.lookup(ctx)
	if err != nil {
		return err
	}
	if !got.Found || got.Value != b.split {
		return fmt.Errorf("get map answers %+v, not %s", got, b.split)
	}
	have, err := b.weights(ctx)
	if err != nil {
		return err
	}
	for _, c := range config.Colors {
		if have[c] != want[c] {
			return fmt.Errorf("get weight answers %s, not %s", weightText(have), weightText(want))
		}
	}
	return nil
}

// waitServersUp polls `show stat` until both of the split backend's
// servers are UP by HAProxy's own checks, for at most Options.UpTimeout:
// a split sends new requests to both.
func (b *Balancer) waitServersUp(ctx context.Context, r lb.Route) error {
	deadline := time.Now().Add(b.opts.UpTimeout)
	for {
		rows, err := b.client.ShowStat(ctx, b.split)
		if err != nil {
			return b.wrap(err, "read server states")
		}
		var down []string
		for _, c := range config.Colors {
			i := slices.IndexFunc(rows, func(s admin.Stat) bool { return s.Proxy == b.split && s.Name == c.String() })
			switch {
			case i < 0:
				down = append(down, c.String()+" missing")
			case !rows[i].Up():
				st := c.String() + " " + rows[i].Status
				if rows[i].CheckDesc != "" {
					st += " (" + rows[i].CheckDesc + ")"
				}
				down = append(down, st)
			}
		}
		if len(down) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: cannot split %s between %s and %s: backend %q has servers not UP in HAProxy after %s (%s)",
				ErrNoServerUp, b.service, r.Active.Color, r.Standby.Color, b.split, b.opts.UpTimeout, strings.Join(down, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy: waiting for the servers of backend %q to be UP: %w", b.split, ctx.Err())
		case <-time.After(min(b.opts.PollInterval, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// activeOfSplit is Active while the map names the split backend: the
// colour with the larger weight. A split gives the stable colour 100 - w
// and the canary w, so this is the stable colour whenever w < 50; at an
// even split HAProxy holds nothing that tells them apart (ErrEvenSplit).
func (b *Balancer) activeOfSplit(ctx context.Context) (config.Color, error) {
	w, err := b.weights(ctx)
	if err != nil {
		return "", err
	}
	switch {
	case w[config.Blue] > w[config.Green]:
		return config.Blue, nil
	case w[config.Green] > w[config.Blue]:
		return config.Green, nil
	}
	return "", fmt.Errorf("%w: %s routes %s to the split backend %q with equal weights (%s): either colour may be the stable one; the state file says which",
		ErrEvenSplit, b.cfg.MapFile, b.service, b.split, weightText(w))
}

func weightText(w map[config.Color]int) string {
	return fmt.Sprintf("blue %d, green %d", w[config.Blue], w[config.Green])
}
