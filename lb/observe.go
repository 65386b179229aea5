package lb

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Observer is a Balancer that can say what it has seen of one slot's
// answers: what bgd's analysis judges a new release by after a flip or a
// canary step (analysis:), and rolls it back on.
type Observer interface {
	Balancer
	// Observe returns the load balancer's counts for slot u: cumulative
	// since the counters started (the load balancer's start, or the
	// Observer's first call, as the driver documents), so that two
	// observations make a window (Observation.Since). An error means it
	// could not be asked.
	Observe(ctx context.Context, u Upstream) (Observation, error)
}

// Observation is what a load balancer has counted for one slot.
type Observation struct {
	// Requests is how many requests to the slot ended: answered, or failed
	// to get an answer.
	Requests uint64
	// Errors is how many of them failed: a 5xx answer, or no answer from
	// the slot (the load balancer's own 502 or 504).
	Errors uint64
	// Buckets is the latency histogram when the driver has one: for each
	// upper bound, in increasing order, how many requests were answered
	// within it (cumulative, as Prometheus buckets). nil: none.
	Buckets []Bucket
	// Sum is the total answer time of the requests the histogram counts
	// (a Prometheus histogram's _sum); 0 without Buckets.
	Sum time.Duration
	// Mean is the driver's average answer time when it has no histogram
	// (HAProxy: the mean of the last 1 024 answers); 0: unknown.
	Mean time.Duration
}

// Bucket is one bound of a latency histogram: Count requests took at most LE.
type Bucket struct {
	LE    time.Duration // math.MaxInt64 stands for +Inf
	Count uint64
}

// Window is what a load balancer saw of a slot between two observations.
type Window struct {
	Requests, Errors uint64
	// P99 is the upper bound of the histogram bucket that holds the 99th
	// percentile answer (so at most one bucket too high, never too low);
	// 0 when unknown (no histogram, no request), math.MaxInt64 when it is
	// beyond the last finite bound.
	P99 time.Duration
	// Mean is the driver's mean answer time at the end of the window
	// (Observation.Mean), when it has no histogram.
	Mean time.Duration
}

// Since is the window from prev to o. A counter lower than prev's (the
// load balancer restarted) counts from zero: o alone is the window.
func (o Observation) Since(prev Observation) Window {
	if o.Requests < prev.Requests || o.Errors < prev.Errors {
		prev = Observation{}
	}
	w := Window{Requests: o.Requests - prev.Requests, Errors: o.Errors - prev.Errors, Mean: o.Mean}
	if len(o.Buckets) == 0 || w.Requests == 0 {
		return w
	}
	before := map[time.Duration]uint64{}
	for _, b := range prev.Buckets {
		before[b.LE] = b.Count
	}
	diff := make([]Bucket, len(o.Buckets))
	for i, b := range o.Buckets {
		c := b.Count
		if p := before[b.LE]; p <= c {
			c -= p
		}
		diff[i] = Bucket{LE: b.LE, Count: c}
	}
	w.P99 = Quantile(diff, 0.99)
	return w
}

// Quantile is the upper bound of the bucket of cumulative buckets that
// holds quantile q (0-1); 0 when the buckets count nothing.
func Quantile(buckets []Bucket, q float64) time.Duration {
	if len(buckets) == 0 {
		return 0
	}
	total := buckets[len(buckets)-1].Count
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	for _, b := range buckets {
		if b.Count >= rank {
			return b.LE
		}
	}
	return buckets[len(buckets)-1].LE
}

// ErrorRate is Errors / Requests (0 without requests).
func (w Window) ErrorRate() float64 {
	if w.Requests == 0 {
		return 0
	}
	return float64(w.Errors) / float64(w.Requests)
}

// Latency is the window's latency figure and its name: the p99 when the
// driver has a histogram, else its mean; 0 and "" when it has neither.
func (w Window) Latency() (time.Duration, string) {
	switch {
	case w.P99 > 0:
		return w.P99, "p99"
	case w.Mean > 0:
		return w.Mean, "mean"
	}
	return 0, ""
}

func (w Window) String() string {
	s := fmt.Sprintf("%d requests, %d failed (%.2f%%)", w.Requests, w.Errors, 100*w.ErrorRate())
	if d, name := w.Latency(); name != "" {
		if d == math.MaxInt64 {
			return s + ", " + name + " beyond the last bucket"
		}
		s += fmt.Sprintf(", %s %s", name, d)
	}
	return s
}
