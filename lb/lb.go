// Package lb defines what bgd needs of a load balancer. The drivers live in
// lb/builtin (bgd's own proxy), lb/nginx and lb/haproxy; all three give a
// flip the same meaning: once Flip returns nil, every new request of the
// service goes to the target slot, and the load balancer itself has said so.
//
// A Route grows by fields whose zero values mean today's flip (weights,
// pause, maintenance, slot hosts). Each driver declares its Capabilities,
// and Capabilities.Check is the one place a route is validated
// (Route.Validate) and matched against them: drivers call it at the top of
// Flip and Render, so a route asking for more than the driver can do is
// refused with ErrUnsupported before anything changes, never half-honoured.
package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
)

// ErrUnreachable: the load balancer could not be asked (no process, no
// socket, connection refused). Nothing was changed.
var ErrUnreachable = errors.New("load balancer unreachable")

// ErrNotConfirmed: the change was applied but the load balancer never
// confirmed it; the driver restored the previous routing.
var ErrNotConfirmed = errors.New("flip not confirmed by the load balancer")

// ErrInvalidRoute: the route makes no sense whatever the driver (weights
// that do not add up, a slot without a host, paused and in maintenance at
// once). Route.Validate returns it; nothing was changed.
var ErrInvalidRoute = errors.New("invalid route")

// ErrUnsupported: the route asks for something the driver cannot do (a
// weighted split, a pause, maintenance, a slot on another host). The error
// is an *UnsupportedError naming the driver and the feature; nothing was
// changed.
var ErrUnsupported = errors.New("not supported by the load balancer driver")

// LocalHost is where bgd's slots listen today, and the only slot host a
// driver without Capabilities.RemoteHosts routes to.
const LocalHost = "127.0.0.1"

// Upstream is one slot as the load balancer sees it.
type Upstream struct {
	Color config.Color // config.Blue or config.Green
	// Host is where the slot listens: a host name, an IPv4 address or a
	// bracketed IPv6 address ("[::1]"). Never empty; bgd's slots listen on
	// LocalHost. Any other host is a remote slot, which only a driver with
	// Capabilities.RemoteHosts routes to.
	Host string
	Port int
	// Weight is the percentage of the service's new requests this slot gets
	// when the route splits traffic between the colours (a canary). The
	// route splits only when Standby.Weight > 0; then Active.Weight +
	// Standby.Weight is 100 and Active.Weight > 0. Both 0 (the zero value)
	// means no split, today's flip: every new request goes to Active, the
	// same as Active 100 and Standby 0.
	Weight int
}

// Addr is host:port.
func (u Upstream) Addr() string { return fmt.Sprintf("%s:%d", u.Host, u.Port) }

// Remote reports whether the slot's Host is anything but LocalHost, even
// "localhost" or "[::1]": a driver that dials 127.0.0.1 reaches neither
// for sure.
func (u Upstream) Remote() bool { return u.Host != LocalHost }

// Route is what a flip asks for: send the service's traffic to Active. Its
// zero-valued routing fields (Weight, Pause, Maintenance) mean today's
// behaviour: all traffic to Active, not paused, not in maintenance; a
// driver refuses (ErrUnsupported) a route that asks for more than its
// Capabilities.
type Route struct {
	Service string
	// Active is the slot to route to; Standby is the other one.
	Active, Standby Upstream
	// HealthPath is the slots' health endpoint (for LB-side checks).
	HealthPath string
	// Generation increases with every flip; drivers that can echo it back
	// (builtin, nginx) use it to confirm that the new routing is live.
	Generation uint64
	// Pause, when positive, asks the load balancer to hold the service's new
	// requests while it switches, for at most this long, and then send them
	// to the new routing, rather than let any reach a slot mid-switch.
	// 0 (the zero value): not paused, requests flow throughout the flip.
	Pause time.Duration
	// Maintenance, when true, asks the load balancer to answer every request
	// of the service with 503 Service Unavailable and MaintenancePage
	// instead of routing it to a slot. false (the zero value): route.
	Maintenance bool
	// MaintenancePage is the body of the maintenance answers (HTML); "": the
	// driver's own short text. Ignored unless Maintenance.
	MaintenancePage string
	// Shadow, when true, asks the load balancer to send a copy of each of
	// the service's requests to Standby and discard its answer: the client
	// is answered by the routing alone, never delayed or failed by the
	// copy. false (the zero value): no copies.
	Shadow bool
	// Sticky, when the route Splits, keeps each client on one side: the
	// load balancer answers a client without the cookie StickyCookie(Service)
	// with a Set-Cookie naming the colour that served it (value "blue" or
	// "green", Path=/, HttpOnly), and sends a client whose cookie names a
	// colour of the split to that colour. Ignored when the route does not
	// split (every request goes to Active, whatever its cookie says).
	Sticky bool
}

// StickyCookie is the name of the cookie that keeps a client on one side of
// a sticky split of service (config.StickyCookie: "bgd_" and the service
// name with anything but letters, digits and '_' made '_').
func StickyCookie(service string) string { return config.StickyCookie(service) }

// Splits reports whether the route splits new requests between the colours
// (Standby.Weight > 0) rather than sending them all to Active.
func (r Route) Splits() bool { return r.Standby.Weight > 0 }

// Validate reports a route that no driver could honour, as an error
// wrapping ErrInvalidRoute: a slot without a colour, a host or a port in
// 1-65535; both slots of one colour; a negative weight; weights that do not
// add up to 100, or that give the active slot nothing; a pause that is
// negative or combined with maintenance. Today's routes (weights 0, not
// paused, not in maintenance) are valid when their slots are.
func (r Route) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: service %q: %s", ErrInvalidRoute, r.Service, fmt.Sprintf(format, args...))
	}
	for _, s := range []struct {
		role string
		u    Upstream
	}{{"active", r.Active}, {"standby", r.Standby}} {
		u := s.u
		switch {
		case u.Color == "":
			return bad("the %s slot has no colour", s.role)
		case u.Host == "":
			return bad("the %s slot (%s) has no host", s.role, u.Color)
		case strings.ContainsFunc(u.Host, func(c rune) bool { return c <= ' ' || c == 0x7f || c == '/' }):
			return bad("the %s slot (%s) has host %q, which is not a host name or address", s.role, u.Color, u.Host)
		case strings.Contains(u.Host, ":") && !strings.HasPrefix(u.Host, "["):
			return bad("the %s slot (%s) has host %q: an IPv6 address is written in brackets, e.g. [::1]", s.role, u.Color, u.Host)
		case u.Port < 1 || u.Port > 65535:
			return bad("the %s slot (%s) has port %d, not in 1-65535", s.role, u.Color, u.Port)
		case u.Weight < 0:
			return bad("the %s slot (%s) has weight %d: a weight is a percentage, 0-100", s.role, u.Color, u.Weight)
		}
	}
	if r.Active.Color == r.Standby.Color {
		return bad("the active and the standby slot are both %s", r.Active.Color)
	}
	if w := r.Active.Weight + r.Standby.Weight; w != 0 && w != 100 {
		return bad("weights %s %d%% and %s %d%% add up to %d%%, not 100%%",
			r.Active.Color, r.Active.Weight, r.Standby.Color, r.Standby.Weight, w)
	}
	if r.Splits() && r.Active.Weight == 0 {
		return bad("weights give the active slot (%s) nothing and the standby (%s) everything: that is a flip to %s",
			r.Active.Color, r.Standby.Color, r.Standby.Color)
	}
	if r.Pause < 0 {
		return bad("pause %s is negative", r.Pause)
	}
	if r.Pause > 0 && r.Maintenance {
		return bad("paused (%s) and in maintenance at once: maintenance answers 503 at once, so there is nothing to hold", r.Pause)
	}
	return nil
}

// SampleRoute is a route with the default slots (blue active on 5005, green
// on 5006): drivers render it once when built, so that a user template that
// does not render is refused at config load rather than at the first flip.
func SampleRoute(service string) Route {
	return Route{
		Service:    service,
		Active:     Upstream{Color: config.Blue, Host: LocalHost, Port: 5005},
		Standby:    Upstream{Color: config.Green, Host: LocalHost, Port: 5006},
		HealthPath: "/health",
		Generation: 1,
	}
}

// Feature is something a route can ask of a driver beyond today's flip.
type Feature string

// The features a driver may lack (Capabilities).
const (
	FeatureWeights     Feature = "weighted splits"
	FeaturePause       Feature = "pause"
	FeatureMaintenance Feature = "maintenance"
	FeatureRemoteHosts Feature = "remote slot hosts"
	FeatureShadow      Feature = "shadow traffic"
)

// Capabilities is what a driver can do beyond today's flip. The zero value
// supports exactly today's routes: all traffic to Active, not paused, not
// in maintenance, both slots on LocalHost.
type Capabilities struct {
	// Driver names the driver in errors: "builtin", "nginx", "haproxy".
	Driver string
	// Weights: the driver can split new requests between Active and
	// Standby by their Weight. false: it refuses a route that Splits.
	Weights bool
	// Pause: the driver can hold new requests during a flip (Route.Pause).
	Pause bool
	// Maintenance: the driver can answer 503 with Route.MaintenancePage
	// instead of routing (Route.Maintenance).
	Maintenance bool
	// RemoteHosts: the driver routes to a slot's Host whatever it is.
	// false: it reaches slots on LocalHost only and refuses any other host.
	RemoteHosts bool
	// Shadow: the driver can copy requests to Standby (Route.Shadow).
	Shadow bool
}

// Check is the one validation point of a route for a driver: r.Validate,
// then every feature r asks for that c lacks, as an *UnsupportedError
// (wrapping ErrUnsupported). Drivers call it at the top of Flip and Render.
func (c Capabilities) Check(r Route) error {
	if err := r.Validate(); err != nil {
		return err
	}
	no := func(f Feature, format string, args ...any) error {
		return &UnsupportedError{Driver: c.Driver, Feature: f, Service: r.Service, Detail: fmt.Sprintf(format, args...)}
	}
	if r.Splits() && !c.Weights {
		return no(FeatureWeights, "%s %d%%, %s %d%%: it sends every new request to the active slot",
			r.Active.Color, r.Active.Weight, r.Standby.Color, r.Standby.Weight)
	}
	if r.Pause > 0 && !c.Pause {
		return no(FeaturePause, "a pause of %s was asked: it cannot hold requests during a flip", r.Pause)
	}
	if r.Maintenance && !c.Maintenance {
		return no(FeatureMaintenance, "it cannot answer 503 instead of routing")
	}
	if r.Shadow && !c.Shadow {
		return no(FeatureShadow, "it cannot copy requests to the standby slot")
	}
	if !c.RemoteHosts {
		for _, u := range []Upstream{r.Active, r.Standby} {
			if u.Remote() {
				return no(FeatureRemoteHosts, "the %s slot is on %s: it reaches slots on %s only", u.Color, u.Host, LocalHost)
			}
		}
	}
	return nil
}

// UnsupportedError is a route refused because the driver lacks a feature.
// It matches ErrUnsupported with errors.Is.
type UnsupportedError struct {
	Driver  string
	Feature Feature
	Service string
	Detail  string // what the route asked for and why the driver cannot
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%v: the %s driver does not support %s (service %q: %s)",
		ErrUnsupported, e.Driver, e.Feature, e.Service, e.Detail)
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// Capable is a Balancer that declares its Capabilities; every bgd driver
// is, and says so at compile time with one line:
//
//	var _ lb.Capable = (*Balancer)(nil)
type Capable interface {
	Balancer
	Capabilities() Capabilities
}

// Supports checks r against b before anything is changed: b's CheckRoute
// (a RouteChecker), else its Capabilities().Check(r), or, for a Balancer that declares none, the zero
// Capabilities (today's routes only).
func Supports(b Balancer, r Route) error {
	if rc, ok := b.(RouteChecker); ok {
		return rc.CheckRoute(r)
	}
	if c, ok := b.(Capable); ok {
		return c.Capabilities().Check(r)
	}
	return Capabilities{Driver: fmt.Sprintf("%T", b)}.Check(r)
}

// RouteChecker is a driver that refuses more than its Capabilities say (the
// builtin proxy: slots on a host other than its own upstream host).
// CheckRoute includes the Capabilities' check.
type RouteChecker interface {
	CheckRoute(Route) error
}

// Balancer is one service's load balancer.
type Balancer interface {
	// Flip makes the load balancer route new requests to r.Active and
	// confirms it from the load balancer itself. On error the previous
	// routing is in force (restored if need be) and the error says which.
	// A route that is invalid (ErrInvalidRoute) or asks for more than the
	// driver's Capabilities (ErrUnsupported) is refused before anything
	// changes.
	Flip(ctx context.Context, r Route) error
	// Active asks the load balancer which colour it really routes to.
	Active(ctx context.Context) (config.Color, error)
	// Render returns the configuration a Flip to r would apply; it refuses
	// what Flip refuses.
	Render(r Route) ([]byte, error)
}

// Drainer is a Balancer that can say how much it has in flight to one
// slot: what bgd waits on before it stops a slot that served traffic
// (drain_timeout). A Balancer that is not a Drainer is never waited on:
// its old slot is stopped at once, and the slot's own SIGTERM handling
// (stop_grace) is all that lets in-flight requests end.
type Drainer interface {
	Balancer
	// InFlight is the number of requests the load balancer has in flight
	// to slot u, queued ones included (or, where it cannot count requests,
	// what it can count instead: the driver documents which). An error
	// means it could not be asked.
	InFlight(ctx context.Context, u Upstream) (int, error)
}

// SetDefault sets *v to def when it is zero or negative: how the drivers
// fill the options a caller left out (a string option takes cmp.Or).
func SetDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// OrDiscard is every driver's logger default: l, or, when l is nil, a
// logger that drops everything (bgd's commands always pass their own).
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
