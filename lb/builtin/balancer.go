package builtin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/slots"
)

// Balancer is the CLI's view of a running `bgd proxy`. The routing itself is
// the state file, written by the orchestrator before Flip; Flip confirms
// that the proxy serves it.
type Balancer struct {
	// Listen is the proxy's address, e.g. "127.0.0.1:5004".
	Listen string
	// Admin is where the proxy serves its admin endpoints (its
	// AdminListen: "unix:<path>" or host:port), which the Balancer asks.
	// Default "": Listen.
	Admin string
	// StatePath is the state file the proxy must follow; a bgd proxy on
	// Listen that follows another one is refused. Default "": not checked.
	StatePath string
	// Spawn starts a detached `bgd proxy` and returns its pid; nil: never
	// start one (systemd runs it).
	Spawn func() (int, error)
	// ConfirmTimeout bounds the wait for the proxy to serve a new
	// generation. Default 3s.
	ConfirmTimeout time.Duration
	// UpstreamHost is where the proxy dials both slots (its
	// Proxy.UpstreamHost). Default "": 127.0.0.1.
	UpstreamHost string
	// Client asks the proxy on a TCP admin address. Default: a client with
	// a 1 s timeout (a unix socket always gets its own such client).
	Client *http.Client
}

var _ lb.Capable = (*Balancer)(nil)

// Capabilities: weighted splits, shadow traffic, pause and maintenance.
// The proxy sends new requests to the active slot of the state file or,
// while the state file holds a canary, splits them between the active slot
// and the canary by its weight (sticky or not, Route.Sticky). While the
// state file says so, it copies each request to the standby slot (shadow
// traffic, shadow.go), holds new requests (a pause, pause.go) or answers
// 503 (maintenance, maintenance.go). It dials slots on 127.0.0.1 with the
// state file's ports on UpstreamHost (127.0.0.1 by default): a route's
// Host is not read, so Flip refuses any other host rather than ignore it.
func (b *Balancer) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "builtin", Weights: true, Shadow: true, Pause: true, Maintenance: true,
		RemoteHosts: b.upstreamHost() != lb.LocalHost}
}

func (b *Balancer) upstreamHost() string { return cmp.Or(b.UpstreamHost, lb.LocalHost) }

// CheckRoute refuses a route the proxy cannot serve as asked: beyond the
// capabilities, a slot on a host other than UpstreamHost.
func (b *Balancer) CheckRoute(r lb.Route) error {
	if err := b.Capabilities().Check(r); err != nil {
		return err
	}
	for _, u := range []lb.Upstream{r.Active, r.Standby} {
		if u.Host != b.upstreamHost() {
			return &lb.UnsupportedError{Driver: "builtin", Feature: lb.FeatureRemoteHosts, Service: r.Service,
				Detail: fmt.Sprintf("the %s slot is on %s: this proxy dials slots on %s only", u.Color, u.Host, b.upstreamHost())}
		}
	}
	return nil
}

var _ lb.Drainer = (*Balancer)(nil)

// InFlight asks the proxy how many requests it is forwarding to u's colour
// now (its own counter, RouteInfo.InFlight).
func (b *Balancer) InFlight(ctx context.Context, u lb.Upstream) (int, error) {
	ri, err := b.Route(ctx)
	if err != nil {
		return 0, err
	}
	if ri.InFlight == nil {
		return 0, fmt.Errorf("the builtin proxy on %s (pid %d) does not count in-flight requests: it is older than this bgd; restart it", b.Listen, ri.PID)
	}
	return int(ri.InFlight[u.Color]), nil
}

var adminClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}

// FollowsState tells the orchestrator to write the new routing to the state
// file before calling Flip.
func (b *Balancer) FollowsState() bool { return true }

// Route asks the proxy what it serves.
func (b *Balancer) Route(ctx context.Context) (*RouteInfo, error) {
	resp, err := b.get(ctx, RoutePath)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		if old := b.oldProxy(ctx); old != nil {
			return nil, old
		}
		return nil, fmt.Errorf("%w: no builtin proxy answers on %s (bgd start and deploy start one; under systemd, run `bgd proxy`)", lb.ErrUnreachable, b.describeAdmin())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: builtin proxy on %s: %v", lb.ErrUnreachable, b.describeAdmin(), err)
	}
	defer resp.Body.Close()
	ri, err := decodeRoute(resp)
	if err != nil {
		return nil, fmt.Errorf("%w: %s answers, but %w (status %d)%s", lb.ErrUnreachable, b.describeAdmin(), errNotProxy, resp.StatusCode, b.holder())
	}
	if b.StatePath != "" && ri.StateFile != "" && ri.StateFile != absPath(b.StatePath) {
		return nil, fmt.Errorf("%w: %s is served by %w (pid %d) that follows %s, not %s: stop it (kill %d), or give this service another lb.builtin.listen (BG_PROXY_PORT) and admin_listen",
			lb.ErrUnreachable, b.describeAdmin(), errOtherProxy, ri.PID, ri.StateFile, absPath(b.StatePath), ri.PID)
	}
	return ri, nil
}

// holder names the process that holds the admin port, when the admin
// endpoints are on TCP.
func (b *Balancer) holder() string { return holderOf(b.adminAddr()) }

// holderOf names the process that holds the TCP port of addr ("" for a
// unix socket, or when it cannot be told).
func holderOf(addr string) string {
	if _, ok := config.AdminSocket(addr); ok {
		return ""
	}
	_, port, _ := splitPort(addr)
	if o, ok := slots.ListenerOf(port); ok && o.PID > 0 {
		return fmt.Sprintf(": the port is held by pid %d (%s)", o.PID, o.Command)
	}
	return ""
}

// Ensure returns the pid of a newly started proxy, or 0 when one already
// answers. With Spawn nil and no proxy running it fails.
func (b *Balancer) Ensure(ctx context.Context) (int, error) {
	_, err := b.Route(ctx)
	if err == nil {
		return 0, nil
	}
	if errors.Is(err, errNotProxy) || errors.Is(err, errOtherProxy) || errors.Is(err, errOldProxy) || errors.Is(err, errAdminElsewhere) || b.Spawn == nil {
		return 0, err
	}
	pid, err := b.Spawn()
	if err != nil {
		return 0, fmt.Errorf("start builtin proxy on %s: %w", b.Listen, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Route(ctx); err == nil {
			return pid, nil
		}
		if !slots.Alive(pid) {
			return 0, fmt.Errorf("%w: the builtin proxy (pid %d) exited at start: see its log", lb.ErrUnreachable, pid)
		}
		if time.Now().After(deadline) {
			return pid, fmt.Errorf("%w: the builtin proxy (pid %d) does not answer on %s after 5s", lb.ErrUnreachable, pid, b.describeAdmin())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Flip waits until the proxy serves r.Generation with r.Active's colour and
// r's split: the weights of both colours and stickiness while r Splits, no
// split otherwise (a promote or an abort ends the split). The state file
// already says so; the proxy picks it up through fsnotify.
func (b *Balancer) Flip(ctx context.Context, r lb.Route) error {
	if err := b.CheckRoute(r); err != nil {
		return err
	}
	timeout := b.ConfirmTimeout
	lb.SetDefault(&timeout, 3*time.Second)
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		ri, err := b.Route(ctx)
		if err != nil {
			return err
		}
		if ri.Generation >= r.Generation && ri.Active == r.Active.Color && servesSplit(ri, r) && servesShadow(ri, r) && servesHold(ri, r) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: builtin proxy on %s still serves %s (generation %d) after %s, want %s (generation %d)%s",
				lb.ErrNotConfirmed, b.Listen, describeInfo(ri), ri.Generation, timeout, describeRoute(r), r.Generation, splitHint(ri, r)+holdHint(ri, r))
		}
		time.Sleep(wait)
		wait = min(wait*2, 20*time.Millisecond)
	}
}

// servesHold reports whether ri pauses and is in maintenance as r asks.
func servesHold(ri *RouteInfo, r lb.Route) bool {
	return ri.Paused == (r.Pause > 0) && ri.Maintenance == r.Maintenance
}

// servesSplit reports whether ri shows r's split: both weights and the
// stickiness when r Splits, no weights at all when it does not.
func servesSplit(ri *RouteInfo, r lb.Route) bool {
	if !r.Splits() {
		return len(ri.Weights) == 0
	}
	return len(ri.Weights) == 2 && ri.Weights[r.Active.Color] == r.Active.Weight &&
		ri.Weights[r.Standby.Color] == r.Standby.Weight && ri.Sticky == r.Sticky
}

// describeInfo names what ri serves: "blue", or "blue 90% + green 10%
// (sticky)".
func describeInfo(ri *RouteInfo) string {
	s := ri.Active.String()
	if len(ri.Weights) > 0 {
		other := ri.Active.Other()
		s = describeSplit(ri.Active, ri.Weights[ri.Active], other, ri.Weights[other], ri.Sticky)
	}
	if ri.Shadow != nil {
		s += ", shadow to " + ri.Shadow.Standby.String()
	}
	return s + holdSuffix(ri.Paused, ri.Maintenance)
}

// holdSuffix names a pause or maintenance after the routing.
func holdSuffix(paused, maintenance bool) string {
	switch {
	case paused:
		return ", paused"
	case maintenance:
		return ", in maintenance"
	}
	return ""
}

// describeRoute names what r asks for, as describeInfo does.
func describeRoute(r lb.Route) string {
	s := r.Active.Color.String()
	if r.Splits() {
		s = describeSplit(r.Active.Color, r.Active.Weight, r.Standby.Color, r.Standby.Weight, r.Sticky)
	}
	if r.Shadow {
		s += ", shadow to " + r.Standby.Color.String()
	}
	return s + holdSuffix(r.Pause > 0, r.Maintenance)
}

func describeSplit(a config.Color, aw int, c config.Color, cw int, sticky bool) string {
	s := fmt.Sprintf("%s %d%% + %s %d%%", a, aw, c, cw)
	if sticky {
		s += " (sticky)"
	}
	return s
}

// splitHint says what to check when the proxy serves r's generation and
// colour but not its split: the state file's canary, or a proxy too old
// to split.
func splitHint(ri *RouteInfo, r lb.Route) string {
	if ri.Generation < r.Generation || ri.Active != r.Active.Color {
		return ""
	}
	if servesSplit(ri, r) && !servesShadow(ri, r) {
		return shadowHint(ri, r)
	}
	if r.Splits() && len(ri.Weights) == 0 {
		return fmt.Sprintf(": the state file %s has no canary matching the split, or the proxy (pid %d) is older than weighted splits (restart it)",
			cmp.Or(ri.StateFile, "followed"), ri.PID)
	}
	if !r.Splits() {
		return fmt.Sprintf(": the state file %s still holds a canary, which this route ends", cmp.Or(ri.StateFile, "followed"))
	}
	return fmt.Sprintf(": the state file %s holds another canary than the route", cmp.Or(ri.StateFile, "followed"))
}

// Active asks the proxy which colour it serves.
func (b *Balancer) Active(ctx context.Context) (config.Color, error) {
	ri, err := b.Route(ctx)
	if err != nil {
		return "", err
	}
	return ri.Active, nil
}

// Render describes what the proxy serves after a flip to r.
func (b *Balancer) Render(r lb.Route) ([]byte, error) {
	if err := b.CheckRoute(r); err != nil {
		return nil, err
	}
	hold := ""
	switch {
	case r.Pause > 0:
		hold = fmt.Sprintf("paused: new requests are held for at most %s\n", r.Pause)
	case r.Maintenance:
		hold = "maintenance: every request is answered 503 (Retry-After " + lb.MaintenanceRetryAfter + ")\n"
	}
	if !r.Splits() {
		return []byte(fmt.Sprintf("# builtin proxy of service %s on %s\nupstream %s %s (generation %d)\n%s",
			r.Service, b.Listen, r.Active.Color, r.Active.Addr(), r.Generation, renderShadow(r)+hold)), nil
	}
	out := fmt.Sprintf("# builtin proxy of service %s on %s: canary split\nupstream %s %s weight %d%% (generation %d)\nupstream %s %s weight %d%% (canary)\n",
		r.Service, b.Listen, r.Active.Color, r.Active.Addr(), r.Active.Weight, r.Generation, r.Standby.Color, r.Standby.Addr(), r.Standby.Weight)
	if r.Sticky {
		out += fmt.Sprintf("sticky cookie %s=<colour>; Path=/; HttpOnly; SameSite=Lax\n", lb.StickyCookie(r.Service))
	}
	out += renderShadow(r)
	return []byte(out + hold), nil
}

func splitPort(addr string) (string, int, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			var p int
			_, err := fmt.Sscanf(addr[i+1:], "%d", &p)
			return addr[:i], p, err
		}
	}
	return addr, 0, fmt.Errorf("no port in %q", addr)
}
