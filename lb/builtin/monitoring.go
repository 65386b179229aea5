package builtin

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bgd-dev/bgd/internal/dashboard"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// monitor is the proxy's dashboard: a sampler of its own series, read in
// its process from the collectors the request path already feeds (never
// from the request path itself), and the page that shows them.
type monitor struct {
	sampler *dashboard.Sampler
	handler http.Handler
}

// startMonitoring starts sampling the proxy's own series every
// dashboard.DefaultInterval until ctx ends.
func (p *Proxy) startMonitoring(ctx context.Context) {
	s := dashboard.NewSampler(dashboard.Options{}, p.selfSource())
	p.monitor = &monitor{sampler: s, handler: dashboard.Handler(s)}
	go s.Run(ctx)
}

// selfSource is the proxy's own series and state, read in its process:
// the same counts as Balancer.Observe reads on /metrics, without HTTP.
func (p *Proxy) selfSource() dashboard.Source {
	// A registry of the two series the dashboard reads, apart from the one
	// /metrics serves: gathering it gathers nothing else.
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.metrics.requests, p.metrics.latency)
	return dashboard.Source{
		Service: p.Service,
		Driver:  "builtin",
		Observe: func(_ context.Context, u lb.Upstream) (lb.Observation, error) {
			families, err := reg.Gather()
			if err != nil {
				return lb.Observation{}, err
			}
			byName := make(map[string]*dto.MetricFamily, len(families))
			for _, f := range families {
				byName[f.GetName()] = f
			}
			return observation(byName, u.Color.String()), nil
		},
		State: p.stateSnapshot,
	}
}

// errNoState: the proxy has not read its state file yet.
var errNoState = errors.New("the proxy has not read its state file yet")

// stateSnapshot is a copy of the state the proxy serves.
func (p *Proxy) stateSnapshot() (*state.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.snap == nil {
		return nil, errNoState
	}
	return p.snap.Clone(), nil
}

// serveMonitoring answers /monitoring: the dashboard of the service
// (?format=json for its data).
func (p *Proxy) serveMonitoring(w http.ResponseWriter, r *http.Request) {
	if p.monitor == nil {
		http.Error(w, "the proxy is not running (Proxy.Run starts its dashboard)", http.StatusServiceUnavailable)
		return
	}
	p.monitor.handler.ServeHTTP(w, r)
}
