// Package lb defines what bgd needs of a load balancer. The drivers live in
// lb/builtin (bgd's own proxy), lb/nginx and lb/haproxy; all three give a
// flip the same meaning: once Flip returns nil, every new request of the
// service goes to the target slot, and the load balancer itself has said so.
package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// ErrUnreachable: the load balancer could not be asked (no process, no
// socket, connection refused). Nothing was changed.
var ErrUnreachable = errors.New("load balancer unreachable")

// ErrNotConfirmed: the change was applied but the load balancer never
// confirmed it; the driver restored the previous routing.
var ErrNotConfirmed = errors.New("flip not confirmed by the load balancer")

// Upstream is one slot as the load balancer sees it.
type Upstream struct {
	Color string // "blue" or "green"
	Host  string // "127.0.0.1"
	Port  int
}

// Addr is host:port.
func (u Upstream) Addr() string { return fmt.Sprintf("%s:%d", u.Host, u.Port) }

// Route is what a flip asks for: send the service's traffic to Active.
type Route struct {
	Service string
	// Active is the slot to route to; Standby is the other one.
	Active, Standby Upstream
	// HealthPath is the slots' health endpoint (for LB-side checks).
	HealthPath string
	// Generation increases with every flip; drivers that can echo it back
	// (builtin, nginx) use it to confirm that the new routing is live.
	Generation uint64
}

// SampleRoute is a route with the default slots (blue active on 5005, green
// on 5006): drivers render it once when built, so that a user template that
// does not render is refused at config load rather than at the first flip.
func SampleRoute(service string) Route {
	return Route{
		Service:    service,
		Active:     Upstream{Color: "blue", Host: "127.0.0.1", Port: 5005},
		Standby:    Upstream{Color: "green", Host: "127.0.0.1", Port: 5006},
		HealthPath: "/health",
		Generation: 1,
	}
}

// Balancer is one service's load balancer.
type Balancer interface {
	// Flip makes the load balancer route new requests to r.Active and
	// confirms it from the load balancer itself. On error the previous
	// routing is in force (restored if need be) and the error says which.
	Flip(ctx context.Context, r Route) error
	// Active asks the load balancer which colour it really routes to.
	Active(ctx context.Context) (string, error)
	// Render returns the configuration a Flip to r would apply.
	Render(r Route) ([]byte, error)
}

// OrDiscard is every driver's logger default: l, or, when l is nil, a
// logger that drops everything (bgd's commands always pass their own).
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
