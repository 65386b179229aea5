package lb_test

import (
	"math"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb"
)

func buckets(counts ...uint64) []lb.Bucket {
	les := []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second, math.MaxInt64}
	out := make([]lb.Bucket, len(counts))
	for i, c := range counts {
		out[i] = lb.Bucket{LE: les[i], Count: c}
	}
	return out
}

func TestObservationSince(t *testing.T) {
	prev := lb.Observation{Requests: 100, Errors: 1, Buckets: buckets(90, 99, 100, 100)}
	// 200 more requests, 10 of them errors; 150 fast, 48 under 100ms, 2 slower than 1s.
	cur := lb.Observation{Requests: 300, Errors: 11, Buckets: buckets(240, 297, 298, 300)}
	w := cur.Since(prev)
	if w.Requests != 200 || w.Errors != 10 || w.ErrorRate() != 0.05 {
		t.Errorf("window = %+v (rate %v), want 200 requests, 10 errors, 0.05", w, w.ErrorRate())
	}
	// The 99th percentile of the window: rank 198 of 200, beyond the
	// 198th-of-window bucket (under 100ms: 198) -> 100ms.
	if w.P99 != 100*time.Millisecond {
		t.Errorf("p99 = %s, want 100ms", w.P99)
	}
	if d, name := w.Latency(); d != 100*time.Millisecond || name != "p99" {
		t.Errorf("Latency = %s %q", d, name)
	}
	if got := w.String(); got != "200 requests, 10 failed (5.00%), p99 100ms" {
		t.Errorf("String = %q", got)
	}

	// Counters that went down: the load balancer restarted; cur alone counts.
	if w := (lb.Observation{Requests: 5, Errors: 1}).Since(prev); w.Requests != 5 || w.Errors != 1 {
		t.Errorf("after a restart: %+v, want the new counts", w)
	}
	// No histogram: the driver's mean.
	w = lb.Observation{Requests: 10, Mean: 40 * time.Millisecond}.Since(lb.Observation{})
	if d, name := w.Latency(); d != 40*time.Millisecond || name != "mean" || w.P99 != 0 {
		t.Errorf("mean only: %s %q p99 %s", d, name, w.P99)
	}
	// No request: no latency, no error rate.
	w = prev.Since(prev)
	if w.ErrorRate() != 0 || w.P99 != 0 {
		t.Errorf("empty window: %+v", w)
	}
	// Everything slower than the last finite bound.
	w = lb.Observation{Requests: 10, Buckets: buckets(0, 0, 0, 10)}.Since(lb.Observation{})
	if w.P99 != math.MaxInt64 || w.String() != "10 requests, 0 failed (0.00%), p99 beyond the last bucket" {
		t.Errorf("slow window: %s", w)
	}
}

func TestQuantile(t *testing.T) {
	b := buckets(50, 90, 99, 100)
	for q, want := range map[float64]time.Duration{0.5: 10 * time.Millisecond, 0.9: 100 * time.Millisecond, 0.99: time.Second, 1: math.MaxInt64} {
		if got := lb.Quantile(b, q); got != want {
			t.Errorf("Quantile(%v) = %s, want %s", q, got, want)
		}
	}
	if lb.Quantile(nil, 0.99) != 0 || lb.Quantile(buckets(0, 0, 0, 0), 0.99) != 0 {
		t.Error("Quantile of nothing is not 0")
	}
}
