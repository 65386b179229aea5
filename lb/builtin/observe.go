package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bgd-dev/bgd/lb"
)

var _ lb.Observer = (*Balancer)(nil)

// Observe reads the proxy's own Prometheus series for u's colour (on its
// admin /metrics): the requests it proxied and their status codes
// (bgd_proxy_requests_total; 5xx, including the proxy's own 502 when the
// slot did not answer, are errors; 499, a client that went away, is not a
// request the slot failed and is left out), and the latency histogram
// (bgd_proxy_request_duration_seconds). The counts start with the proxy.
func (b *Balancer) Observe(ctx context.Context, u lb.Upstream) (lb.Observation, error) {
	resp, err := b.get(ctx, MetricsPath)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		if old := b.oldProxy(ctx); old != nil {
			return lb.Observation{}, old
		}
	}
	if err != nil {
		return lb.Observation{}, fmt.Errorf("%w: builtin proxy on %s: %v", lb.ErrUnreachable, b.describeAdmin(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return lb.Observation{}, fmt.Errorf("%w: builtin proxy on %s: /metrics answers %s", lb.ErrUnreachable, b.describeAdmin(), resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return lb.Observation{}, fmt.Errorf("builtin proxy on %s: /metrics: %w", b.describeAdmin(), err)
	}
	return observation(families, u.Color.String()), nil
}

// observation is slot's part of the proxy's series.
func observation(families map[string]*dto.MetricFamily, slot string) lb.Observation {
	var o lb.Observation
	if f := families["bgd_proxy_requests_total"]; f != nil {
		for _, m := range f.GetMetric() {
			if label(m, "slot") != slot {
				continue
			}
			code, _ := strconv.Atoi(label(m, "code"))
			if code == statusClientClosed {
				continue
			}
			n := uint64(m.GetCounter().GetValue())
			o.Requests += n
			if code >= 500 {
				o.Errors += n
			}
		}
	}
	if f := families["bgd_proxy_request_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			if label(m, "slot") != slot {
				continue
			}
			for _, bk := range m.GetHistogram().GetBucket() {
				o.Buckets = append(o.Buckets, lb.Bucket{LE: seconds(bk.GetUpperBound()), Count: bk.GetCumulativeCount()})
			}
			o.Sum += time.Duration(m.GetHistogram().GetSampleSum() * float64(time.Second))
			if n := len(o.Buckets); n == 0 || o.Buckets[n-1].LE != math.MaxInt64 {
				o.Buckets = append(o.Buckets, lb.Bucket{LE: math.MaxInt64, Count: m.GetHistogram().GetSampleCount()})
			}
		}
	}
	return o
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func seconds(s float64) time.Duration {
	if math.IsInf(s, 1) {
		return math.MaxInt64
	}
	return time.Duration(s * float64(time.Second))
}
