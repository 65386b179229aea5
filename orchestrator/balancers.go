package orchestrator

import (
	"fmt"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/lb/nginx"
)

// newBalancer builds the service's load balancer driver.
func newBalancer(cfg *config.Config, svc *config.Service, opts Options) (lb.Balancer, error) {
	switch svc.LB.Driver {
	case "builtin":
		return &builtin.Balancer{Listen: svc.LB.Builtin.Listen, Admin: cfg.AdminListen(svc.Name), StatePath: cfg.StatePath(svc.Name), Spawn: opts.SpawnProxy,
			UpstreamHost: svc.Host(config.Blue)}, nil
	case "nginx":
		b, err := nginx.New(svc.Name, svc.LB.Nginx, nginx.Options{Logger: opts.Logger})
		if err != nil {
			return nil, err
		}
		return b, nil
	case "haproxy":
		b, err := haproxy.New(svc.Name, svc.LB.HAProxy, haproxy.Options{UpTimeout: svc.Health.Timeout.D(), Sticky: svc.Canary.Sticky, Logger: opts.Logger,
			MaintenancePage: absOrEmpty(svc.MaintenancePage)})
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: lb.driver %q is not available", config.ErrInvalid, svc.LB.Driver)
}
