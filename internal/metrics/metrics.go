// Package metrics exposes bgd in Prometheus terms: what each service's load
// balancer counted of its slots (NewSlotCollector, over lb.Observer, for
// every driver) and bgd's own record of its deploys (NewDeployCollector,
// from the state file). Both are prometheus.Collectors that read at scrape
// time, so any HTTP handler can serve them (promhttp.HandlerFor on a
// registry); WriteTextfile leaves them for node_exporter's textfile
// collector instead.
package metrics

import (
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
)

// Service is one service as the collectors see it.
type Service struct {
	Name string
	// State reads the service's state file (never locks or writes it).
	State func() (*state.State, error)
	// Observer is the service's load balancer, nil when it cannot count
	// the slots' answers (nginx without lb.nginx.access_log): then the
	// service has no slot metrics.
	Observer lb.Observer
	// Slots are the two slots as the load balancer knows them.
	Slots []lb.Upstream
	// Cumulative: the Observer's counts outlive the process that asks
	// (builtin, HAProxy: they start with the load balancer), so a one-shot
	// command can report them. nginx's start at this process's first
	// Observe: only a long-running scraper has them.
	Cumulative bool
}

// FromOrchestrator is the Service of an orchestrator's service: its state
// file, its load balancer driver, its slots on their configured ports.
func FromOrchestrator(o *orchestrator.Orchestrator) Service {
	svc := o.Service()
	store := &state.Store{Path: o.StatePath(), BluePort: svc.Blue.Port, GreenPort: svc.Green.Port}
	s := Service{Name: svc.Name, State: store.Load}
	if ob, ok := o.Balancer().(lb.Observer); ok && !(svc.LB.Driver == "nginx" && svc.LB.Nginx.AccessLog == "") {
		s.Observer = ob
		s.Cumulative = svc.LB.Driver != "nginx"
	}
	for _, c := range config.Colors {
		s.Slots = append(s.Slots, lb.Upstream{Color: c, Host: lb.LocalHost, Port: svc.Port(c)})
	}
	return s
}

// seconds is d in seconds, Prometheus's unit of time.
func seconds(d time.Duration) float64 { return d.Seconds() }

// fileName is the textfile of a service: bgd_<service>.prom (service
// names are letters, digits, '.', '-' and '_': config.ValidName).
func fileName(service string) string { return fmt.Sprintf("bgd_%s.prom", service) }
