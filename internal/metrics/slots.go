package metrics

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgd-dev/bgd/lb"
)

// DefaultObserveTimeout bounds a scrape's wait for the load balancers.
const DefaultObserveTimeout = 2 * time.Second

var (
	slotLabels   = []string{"service", "slot"}
	slotRequests = prometheus.NewDesc("bgd_slot_requests_total",
		"Requests the load balancer sent to the slot that ended (answered or failed), since its counters started.", slotLabels, nil)
	slotErrors = prometheus.NewDesc("bgd_slot_errors_total",
		"Requests to the slot that failed: a 5xx answer, or none (the load balancer's own 502/504).", slotLabels, nil)
	slotDuration = prometheus.NewDesc("bgd_slot_request_duration_seconds",
		"Answer time of the slot's requests as the load balancer saw them (builtin proxy, nginx access log).", slotLabels, nil)
	slotMean = prometheus.NewDesc("bgd_slot_response_time_mean_seconds",
		"Mean answer time of the slot's last requests, for a load balancer without a histogram (HAProxy: rtime of its last 1024).", slotLabels, nil)
	slotObserved = prometheus.NewDesc("bgd_slot_observe_success",
		"1 when the load balancer answered this scrape's question about the slot in time, else 0 (and no other slot series).", slotLabels, nil)
)

// SlotCollector is the load balancers' counts of the slots of services.
type SlotCollector struct {
	services []Service
	timeout  time.Duration
}

// NewSlotCollector collects, at each scrape, one Observe per slot of each
// service that has an Observer (in parallel, each bounded by timeout;
// DefaultObserveTimeout when timeout <= 0): requests and errors as
// counters, and the latency as a histogram (builtin, nginx) or the
// driver's mean as a gauge (HAProxy). A slot its load balancer did not
// answer for has bgd_slot_observe_success 0 and no other series.
//
// The counts are the load balancer's: they start again when it restarts
// (Prometheus's rate() takes that as a counter reset), and nginx's start
// at this collector's first scrape of the service.
func NewSlotCollector(services []Service, timeout time.Duration) *SlotCollector {
	lb.SetDefault(&timeout, DefaultObserveTimeout)
	return &SlotCollector{services: services, timeout: timeout}
}

// Describe sends the slot series' descriptors.
func (c *SlotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{slotRequests, slotErrors, slotDuration, slotMean, slotObserved} {
		ch <- d
	}
}

// Collect observes every slot and sends its series.
func (c *SlotCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(context.Background(), ch)
}

type slotResult struct {
	service, slot string
	obs           lb.Observation
	err           error
}

func (c *SlotCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var results []*slotResult
	var wg sync.WaitGroup
	for _, s := range c.services {
		if s.Observer == nil {
			continue
		}
		for _, u := range s.Slots {
			r := &slotResult{service: s.Name, slot: u.Color.String()}
			results = append(results, r)
			wg.Go(func() { r.obs, r.err = observe(ctx, s.Observer, u) })
		}
	}
	wg.Wait()
	for _, r := range results {
		emitSlot(ch, r)
	}
}

// observe is one Observe that returns when ctx ends even if the driver
// does not heed it (reading a file, say); its late result is dropped.
func observe(ctx context.Context, ob lb.Observer, u lb.Upstream) (lb.Observation, error) {
	type res struct {
		o   lb.Observation
		err error
	}
	done := make(chan res, 1)
	go func() {
		o, err := ob.Observe(ctx, u)
		done <- res{o, err}
	}()
	select {
	case r := <-done:
		return r.o, r.err
	case <-ctx.Done():
		return lb.Observation{}, ctx.Err()
	}
}

func emitSlot(ch chan<- prometheus.Metric, r *slotResult) {
	labels := []string{r.service, r.slot}
	if r.err != nil {
		ch <- prometheus.MustNewConstMetric(slotObserved, prometheus.GaugeValue, 0, labels...)
		return
	}
	ch <- prometheus.MustNewConstMetric(slotObserved, prometheus.GaugeValue, 1, labels...)
	o := r.obs
	ch <- prometheus.MustNewConstMetric(slotRequests, prometheus.CounterValue, float64(o.Requests), labels...)
	ch <- prometheus.MustNewConstMetric(slotErrors, prometheus.CounterValue, float64(o.Errors), labels...)
	if len(o.Buckets) == 0 {
		ch <- prometheus.MustNewConstMetric(slotMean, prometheus.GaugeValue, seconds(o.Mean), labels...)
		return
	}
	ch <- histogram(o, labels)
}

// histogram is o's buckets as a Prometheus histogram: its count is the
// +Inf bucket's (the requests answered; or the last bucket's, when the
// driver gave no +Inf one).
func histogram(o lb.Observation, labels []string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(o.Buckets))
	count := o.Buckets[len(o.Buckets)-1].Count
	for _, b := range o.Buckets {
		if b.LE == math.MaxInt64 {
			count = b.Count
			continue
		}
		buckets[seconds(b.LE)] = b.Count
	}
	return prometheus.MustNewConstHistogram(slotDuration, count, seconds(o.Sum), buckets, labels...)
}
