package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/bgd-dev/bgd/internal/dashboard"
	"github.com/bgd-dev/bgd/internal/metrics"
	"github.com/bgd-dev/bgd/internal/serve"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
)

// dashboardCommand is bgd dashboard: the live page of both slots of the
// selected service (every service when none is selected).
func dashboardCommand(e *env) *cli.Command {
	var (
		listen   string
		interval time.Duration
	)
	return &cli.Command{
		Name:  "dashboard",
		Usage: "serve a live page of both slots (requests, errors, latency, flips) of every service until interrupted",
		Description: "Every --interval bgd asks the load balancer what it counted of each slot and keeps 15 minutes of it.\n" +
			"It needs a driver that counts the slots' answers: builtin and haproxy always do; nginx only with\n" +
			"lb.nginx.access_log set (the default template then logs what bgd reads).\n" +
			"The page has no external scripts; ?format=json returns its data; /metrics the same services'\n" +
			"series for Prometheus (each slot's requests, errors, latency; bgd's deploy counters).\n\n" +
			"Example: bgd dashboard --listen 127.0.0.1:5007",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5007", Destination: &listen, Usage: "address to serve the page on"},
			&cli.DurationFlag{Name: "interval", Value: dashboard.DefaultInterval, Destination: &interval, Usage: "time between samples (at least 100ms)"},
		},
		Before: noArgs,
		Action: func(c *cli.Context) error { return e.dashboard(c, listen, interval) },
	}
}

func (e *env) dashboard(c *cli.Context, listen string, interval time.Duration) error {
	if interval < 100*time.Millisecond {
		return usagef("--interval %s is too short: at least 100ms", interval)
	}
	orchs, err := e.selectedAll(c)
	if err != nil {
		return err
	}
	var sources []dashboard.Source
	var refused []string
	for _, o := range orchs {
		svc := o.Service()
		ob, ok := o.Balancer().(lb.Observer)
		switch {
		case !ok:
			refused = append(refused, fmt.Sprintf("service %s: the %s driver does not count the slots' answers", svc.Name, svc.LB.Driver))
			continue
		case svc.LB.Driver == "nginx" && svc.LB.Nginx.AccessLog == "":
			refused = append(refused, fmt.Sprintf("service %s: nginx counts the slots' answers only in a JSON access log: set lb.nginx.access_log "+
				"(e.g. /var/log/nginx/bgd-%s.json.log) and run a flip or `bgd up` so that nginx writes it", svc.Name, svc.Name))
			continue
		}
		store := &state.Store{Path: o.StatePath(), BluePort: svc.Blue.Port, GreenPort: svc.Green.Port}
		sources = append(sources, dashboard.Source{Service: svc.Name, Driver: svc.LB.Driver, Observe: ob.Observe, State: store.Load})
	}
	if len(refused) > 0 {
		what := "the dashboard cannot show "
		if len(orchs) > 1 {
			what += "every service (select others with --service)"
		} else {
			what += "this service"
		}
		return usagef("%s: %s", what, strings.Join(refused, "; "))
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return usagef("dashboard: cannot listen on %s (--listen): %v", listen, err)
	}
	s := dashboard.NewSampler(dashboard.Options{Interval: interval}, sources...)
	go s.Run(c.Context)
	url := "http://" + ln.Addr().String() + "/"
	names := s.Services()
	out := newPrinter(e)
	text := fmt.Sprintf("dashboard of %s on %s (a sample every %s; interrupt to stop)\n", strings.Join(names, ", "), url, interval)
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !isLoopbackHost(host) {
		text += "note: the page shows releases, pids and history to anyone who reaches " + ln.Addr().String() + "\n"
	}
	if err := out.emit(map[string]any{"ok": true, "listen": ln.Addr().String(), "url": url, "services": names,
		"interval_ns": interval}, text); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: dashboardMux(s, orchs), ReadHeaderTimeout: 10 * time.Second}
	return serve.Until(c.Context, srv, ln, 2*time.Second)
}

// dashboardMux serves the page, and on /metrics the Prometheus series of
// the same services: each slot's requests, errors and latency (collected
// from the load balancer at each scrape) and bgd's deploy counters.
func dashboardMux(s *dashboard.Sampler, orchs []*orchestrator.Orchestrator) http.Handler {
	var svcs []metrics.Service
	for _, o := range orchs {
		svcs = append(svcs, metrics.FromOrchestrator(o))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry(svcs, 2*time.Second, false), promhttp.HandlerOpts{}))
	mux.Handle("/", dashboard.Handler(s))
	return mux
}

func isLoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
