package builtin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bgd-dev/bgd/config"
)

// metrics are the proxy's Prometheus series, on a registry of its own.
type metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	active     *prometheus.GaugeVec
	weight     *prometheus.GaugeVec
	generation prometheus.Gauge
	flips      prometheus.Counter
	// shadowResults and shadowLatency count the copies of shadow traffic.
	shadowResults *prometheus.CounterVec
	shadowLatency prometheus.Histogram
	handler       http.Handler
}

// newMetrics builds the series of service; inFlight reads the proxy's
// count of requests in flight to a colour (bgd_proxy_in_flight_requests).
func newMetrics(service string, inFlight func(config.Color) int64) *metrics {
	labels := prometheus.Labels{"service": service}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgd_proxy_requests_total", Help: "Requests proxied, by slot and status code.", ConstLabels: labels,
		}, []string{"slot", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bgd_proxy_request_duration_seconds", Help: "Time to proxy a request, by slot.", ConstLabels: labels,
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"slot"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgd_proxy_active_slot", Help: "1 for the slot receiving traffic, 0 for the other.", ConstLabels: labels,
		}, []string{"slot"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgd_proxy_slot_weight", Help: "Percentage of new requests routed to the slot (100 and 0 without a canary split).", ConstLabels: labels,
		}, []string{"slot"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bgd_proxy_generation", Help: "State generation (flip count) the proxy serves.", ConstLabels: labels,
		}),
		flips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bgd_proxy_flips_total", Help: "Changes of the active slot seen by this proxy.", ConstLabels: labels,
		}),
	}
	m.shadowResults, m.shadowLatency = newShadowMetrics(labels)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.requests, m.latency, m.active, m.weight, m.generation, m.flips, m.shadowResults, m.shadowLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range config.Colors {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bgd_proxy_in_flight_requests", Help: "Requests being forwarded to the slot now (what a drain waits on).",
			ConstLabels: prometheus.Labels{"service": service, "slot": c.String()},
		}, func() float64 { return float64(inFlight(c)) }))
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return m
}

// setRouting shows u: its active colour, each colour's percentage of new
// requests and its generation.
func (m *metrics) setRouting(u *upstream) {
	for _, c := range config.Colors {
		active, weight := 0.0, 0.0
		switch {
		case c == u.color:
			active, weight = 1, float64(100-u.weight)
		case u.canary != nil && c == u.canary.color:
			weight = float64(u.weight)
		}
		m.active.WithLabelValues(c.String()).Set(active)
		m.weight.WithLabelValues(c.String()).Set(weight)
	}
	m.generation.Set(float64(u.generation))
}

func (m *metrics) observe(slot config.Color, code int, d time.Duration) {
	m.requests.WithLabelValues(slot.String(), strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(slot.String()).Observe(d.Seconds())
}
