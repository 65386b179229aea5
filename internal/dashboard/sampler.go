// Package dashboard is bgd's live view of both slots of a service: a
// sampler that asks the load balancer (an lb.Observer) for each slot's
// cumulative counts every few seconds and keeps the last 15 minutes of
// rates, error shares and latencies in a ring buffer, with the state
// (active colour, canary weight, recorded health, history); and an HTTP
// handler that renders them as one page per service with server-side SVG
// charts (no external scripts; a few lines of embedded JavaScript poll the
// page's own fragment for live updates).
//
// `bgd dashboard --listen ADDR` serves it for any driver; the builtin
// proxy's /monitoring serves the same page from its own series, read in
// its process.
package dashboard

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// Defaults of Options.
const (
	DefaultInterval = 2 * time.Second
	DefaultKeep     = 15 * time.Minute
)

// Source is one service the sampler watches.
type Source struct {
	// Service names it (pages, the index, ?service=).
	Service string
	// Driver names its load balancer driver, shown on the page.
	Driver string
	// Observe returns the load balancer's cumulative counts of slot u
	// (lb.Observer.Observe).
	Observe func(ctx context.Context, u lb.Upstream) (lb.Observation, error)
	// State returns the service's state as recorded (its ports, health,
	// canary and history). It must return a copy the sampler may keep.
	State func() (*state.State, error)
}

// Options tune a Sampler.
type Options struct {
	// Interval between samples. Default DefaultInterval.
	Interval time.Duration
	// Keep is how much history the ring buffer holds. Default DefaultKeep.
	Keep time.Duration
}

// SlotPoint is what one slot did during one interval.
type SlotPoint struct {
	// Observed: the load balancer answered at both ends of the interval.
	// False: a gap in the series (Err of the service says why).
	Observed bool `json:"observed"`
	// Requests and Errors ended during the interval (errors: 5xx answers
	// and requests the slot never answered).
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// Rate is Requests per second; ErrorShare is Errors / Requests (0
	// without requests).
	Rate       float64 `json:"rate"`
	ErrorShare float64 `json:"error_share"`
	// P50 and P99 are the upper bounds of the histogram buckets holding
	// the interval's median and 99th percentile answers (0: no histogram
	// or no request). Beyond: the p99 is past the last finite bound, which
	// P99 then holds.
	P50    time.Duration `json:"p50_ns,omitempty"`
	P99    time.Duration `json:"p99_ns,omitempty"`
	Beyond bool          `json:"beyond,omitempty"`
	// Mean is the driver's own mean answer time when it has no histogram
	// (HAProxy).
	Mean time.Duration `json:"mean_ns,omitempty"`
}

// Point is one sample: both slots' intervals ending at At.
type Point struct {
	At    time.Time `json:"at"`
	Blue  SlotPoint `json:"blue"`
	Green SlotPoint `json:"green"`
}

// Slot returns c's part of the point.
func (p *Point) Slot(c config.Color) *SlotPoint {
	if c == config.Green {
		return &p.Green
	}
	return &p.Blue
}

// series is one service's ring buffer and what its next sample needs.
type series struct {
	src   Source
	ring  []Point
	head  int // index of the oldest point
	n     int
	prev  [2]*lb.Observation // last observation of blue, green
	prevT time.Time
	st    *state.State
	errs  []string
	// sampled counts samples, for tests and the page.
	sampled uint64
}

// Sampler samples its sources every Interval.
type Sampler struct {
	interval time.Duration
	keep     time.Duration
	mu       sync.Mutex
	order    []string
	series   map[string]*series
	// now is the clock (time.Now).
	now func() time.Time
}

// NewSampler returns a sampler of sources; Run starts it.
func NewSampler(o Options, sources ...Source) *Sampler {
	lb.SetDefault(&o.Interval, DefaultInterval)
	lb.SetDefault(&o.Keep, DefaultKeep)
	s := &Sampler{interval: o.Interval, keep: o.Keep, series: map[string]*series{}, now: time.Now}
	size := int(o.Keep / o.Interval)
	size = max(2, min(size, 100000))
	for _, src := range sources {
		s.order = append(s.order, src.Service)
		s.series[src.Service] = &series{src: src, ring: make([]Point, size)}
	}
	return s
}

// Interval is the time between samples.
func (s *Sampler) Interval() time.Duration { return s.interval }

// Services are the sources' names, in the order given.
func (s *Sampler) Services() []string { return append([]string(nil), s.order...) }

// Run samples every Interval until ctx ends (the first sample at once).
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample of every source: its state, then each slot's
// counts. The first sample of a service only sets the baseline; each next
// one appends a point.
func (s *Sampler) Sample(ctx context.Context) {
	for _, name := range s.order {
		s.sampleOne(ctx, s.series[name])
	}
}

func (s *Sampler) sampleOne(ctx context.Context, sr *series) {
	ctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	var errs []string
	st, err := sr.src.State()
	if err != nil {
		errs = append(errs, fmt.Sprintf("state: %v", err))
	}
	var obs [2]*lb.Observation
	if st != nil {
		for i, c := range config.Colors {
			u := lb.Upstream{Color: c, Host: lb.LocalHost, Port: st.Slot(c).Port}
			o, err := sr.src.Observe(ctx, u)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", c, err))
				continue
			}
			obs[i] = &o
		}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st != nil {
		sr.st = st
	}
	sr.errs = errs
	sr.sampled++
	if !sr.prevT.IsZero() {
		p := Point{At: now}
		secs := now.Sub(sr.prevT).Seconds()
		for i, c := range config.Colors {
			if obs[i] != nil && sr.prev[i] != nil {
				*p.Slot(c) = interval(*sr.prev[i], *obs[i], secs)
			}
		}
		sr.push(p)
	}
	sr.prev, sr.prevT = obs, now
}

// interval is what happened between two observations secs apart. A
// counter lower than before (the load balancer restarted) counts from 0.
func interval(prev, cur lb.Observation, secs float64) SlotPoint {
	if cur.Requests < prev.Requests || cur.Errors < prev.Errors {
		prev = lb.Observation{}
	}
	sp := SlotPoint{Observed: true, Requests: cur.Requests - prev.Requests, Errors: cur.Errors - prev.Errors, Mean: cur.Mean}
	if secs > 0 {
		sp.Rate = float64(sp.Requests) / secs
	}
	if sp.Requests > 0 {
		sp.ErrorShare = float64(sp.Errors) / float64(sp.Requests)
	}
	if len(cur.Buckets) == 0 || sp.Requests == 0 {
		return sp
	}
	before := make(map[time.Duration]uint64, len(prev.Buckets))
	for _, b := range prev.Buckets {
		before[b.LE] = b.Count
	}
	diff := make([]lb.Bucket, len(cur.Buckets))
	lastFinite := time.Duration(0)
	for i, b := range cur.Buckets {
		c := b.Count
		if p := before[b.LE]; p <= c {
			c -= p
		}
		diff[i] = lb.Bucket{LE: b.LE, Count: c}
		if b.LE != math.MaxInt64 {
			lastFinite = b.LE
		}
	}
	sp.P50, sp.P99 = lb.Quantile(diff, 0.5), lb.Quantile(diff, 0.99)
	if sp.P50 == math.MaxInt64 {
		sp.P50 = lastFinite
	}
	if sp.P99 == math.MaxInt64 {
		sp.P99, sp.Beyond = lastFinite, true
	}
	return sp
}

func (sr *series) push(p Point) {
	if sr.n < len(sr.ring) {
		sr.ring[(sr.head+sr.n)%len(sr.ring)] = p
		sr.n++
		return
	}
	sr.ring[sr.head] = p
	sr.head = (sr.head + 1) % len(sr.ring)
}

// points returns the ring's points, oldest first.
func (sr *series) points() []Point {
	out := make([]Point, sr.n)
	for i := range sr.n {
		out[i] = sr.ring[(sr.head+i)%len(sr.ring)]
	}
	return out
}
