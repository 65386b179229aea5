package orchestrator

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// The smoke check: before a flip sends traffic to a new slot (deploy,
// switch, promote, a canary's first weight), bgd GETs each health.smoke
// path through the load balancer's preview route (lb.Previewer), which
// leads to the standby slot, and requires a 2xx answer that the load
// balancer says came from that slot (lb.SlotHeader). Anything else
// refuses the flip: traffic stays where it is.

// smokeClient makes each smoke request on a new connection and reports a
// redirect as itself (not 2xx), rather than follow it off the preview route.
var smokeClient = &http.Client{
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// smoke runs the smoke check of color, the standby slot, when
// health.smoke names paths. The error is ErrFailed (or ErrUnsupported
// for a driver without a preview route) and names the path, the answer and
// what to fix.
func (p *op) smoke(ctx context.Context, color config.Color) error {
	o, st := p.o, p.st
	paths := o.svc.Health.Smoke
	if len(paths) == 0 {
		return nil
	}
	pv, err := o.previewer()
	if err != nil {
		return err
	}
	if color != st.ActiveVersion.Other() {
		return failf("smoke check of %s: it is the active colour, not the standby the preview route leads to", color)
	}
	release := st.Slot(color).Release
	switch {
	case st.Maintenance:
		// Maintenance answers every request 503, previews included.
		return failf("smoke check of %s (release %s): maintenance is on, so the preview route answers 503 like every route: `bgd maintenance off` first, or `switch --force` (no smoke check); traffic stays on %s",
			color, release, routingOf(st))
	case st.Paused != nil && state.Now().Before(st.Paused.Until):
		return failf("smoke check of %s (release %s): a pause holds every request, previews included: `bgd resume` first; traffic stays on %s",
			color, release, routingOf(st))
	}
	p.phase("smoke", color, fmt.Sprintf("%d path(s) through the preview route", len(paths)))
	if err := p.ensureProxy(ctx, color); err != nil {
		return err
	}
	if pp, ok := o.lb.(lb.PreviewPreparer); ok {
		r := o.route(st, st.ActiveVersion)
		r.Generation = st.Generation
		if err := pp.PreparePreview(ctx, r); err != nil {
			return failf("smoke check of %s (release %s): pointing the load balancer's preview route at it failed: %w; traffic stays on %s",
				color, release, err, routingOf(st))
		}
	}
	for _, path := range paths {
		if err := o.smokeOne(ctx, pv, color, path); err != nil {
			return failf("smoke check of %s (release %s) failed: %w; traffic stays on %s", color, release, err, routingOf(st))
		}
	}
	o.log.Info("smoke check passed", "slot", color, "release", release, "paths", len(paths))
	return nil
}

// previewer is the load balancer as a Previewer whose preview route the
// smoke check can use, or why not (lb.ErrUnsupported): a deploy asks
// before it starts a slot, so a configuration that cannot be checked is
// refused (exit 2) before anything changes.
func (o *Orchestrator) previewer() (lb.Previewer, error) {
	pv, ok := o.lb.(lb.Previewer)
	if !ok {
		return nil, &lb.UnsupportedError{Driver: o.driverName(), Feature: lb.FeaturePreview, Service: o.svc.Name,
			Detail: "it cannot send a request to the standby slot before a flip: leave health.smoke out"}
	}
	for _, path := range o.svc.Health.Smoke {
		if _, err := pv.PreviewURL(path); err != nil {
			return nil, err
		}
	}
	return pv, nil
}

// smokeOne GETs path through the preview route and checks the answer.
func (o *Orchestrator) smokeOne(ctx context.Context, pv lb.Previewer, color config.Color, path string) error {
	url, err := pv.PreviewURL(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.svc.Health.RequestTimeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set(lb.PreviewHeader, "1")
	resp, err := smokeClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s through the load balancer's preview route (%s): %w", path, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	by := resp.Header.Get(lb.SlotHeader)
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	switch {
	case by == "" && !ok:
		return fmt.Errorf("GET %s through the load balancer's preview route (%s) answered %s, from no slot it named (no %s header): could it reach %s?",
			path, url, resp.Status, lb.SlotHeader, color)
	case by != color.String():
		if by == "" {
			by = "a slot it did not name (no " + lb.SlotHeader + " header)"
		}
		fix := "see README \"Preview and smoke checks\"; `bgd render` prints it"
		if fs, ok := o.lb.(followsState); ok && fs.FollowsState() {
			fix = "a `bgd proxy` started by an older bgd has none: restart it"
		}
		return fmt.Errorf("GET %s through the load balancer's preview route (%s) was answered by %s, not by %s: the load balancer's configuration lacks bgd's preview rule (%s)",
			path, url, by, color, fix)
	case !ok:
		msg := strings.TrimSpace(strings.SplitN(string(body), "\n", 2)[0])
		if msg != "" {
			msg = ": " + msg
		}
		return fmt.Errorf("GET %s answered %s%s (a smoke path must answer 2xx)", path, resp.Status, msg)
	}
	return nil
}

// smokeNew runs the smoke check of the new slot to before a deploy's
// flip; when it fails, to is stopped again, as after a failed health check.
func (p *op) smokeNew(ctx context.Context, to config.Color) error {
	err := p.smoke(ctx, to)
	if err == nil {
		return nil
	}
	note, serr := p.stopSlot(context.WithoutCancel(ctx), to)
	switch {
	case serr != nil:
		return fmt.Errorf("%w; the new slot was not stopped: %w", err, serr)
	case note != "":
		return fmt.Errorf("%w; %s stopped; %s", err, to, note)
	}
	return fmt.Errorf("%w; %s stopped", err, to)
}

// smokeRefused records a flip that the smoke check refused.
func (p *op) smokeRefused(action string, from, to config.Color, weight int, err error) error {
	p.st.Record(state.Event{Action: action, From: from, To: to, Status: state.StatusFailed, Release: p.st.Slot(to).Release,
		Weight: weight, Reason: err.Error()})
	p.phase("failed", to, err.Error())
	return err
}
