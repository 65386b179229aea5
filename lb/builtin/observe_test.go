package builtin

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestObservationFromMetrics(t *testing.T) {
	text := `# TYPE bgd_proxy_requests_total counter
bgd_proxy_requests_total{code="200",service="app",slot="green"} 90
bgd_proxy_requests_total{code="502",service="app",slot="green"} 7
bgd_proxy_requests_total{code="503",service="app",slot="green"} 2
bgd_proxy_requests_total{code="499",service="app",slot="green"} 5
bgd_proxy_requests_total{code="500",service="app",slot="blue"} 40
# TYPE bgd_proxy_request_duration_seconds histogram
bgd_proxy_request_duration_seconds_bucket{service="app",slot="green",le="0.01"} 80
bgd_proxy_request_duration_seconds_bucket{service="app",slot="green",le="0.1"} 100
bgd_proxy_request_duration_seconds_bucket{service="app",slot="green",le="+Inf"} 104
bgd_proxy_request_duration_seconds_sum{service="app",slot="green"} 1.5
bgd_proxy_request_duration_seconds_count{service="app",slot="green"} 104
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	o := observation(families, "green")
	// 499 (the client went away) is not a request the slot failed.
	if o.Requests != 99 || o.Errors != 9 {
		t.Errorf("green: %d requests, %d errors; want 99 and 9", o.Requests, o.Errors)
	}
	want := []struct {
		le time.Duration
		n  uint64
	}{{10 * time.Millisecond, 80}, {100 * time.Millisecond, 100}, {math.MaxInt64, 104}}
	if len(o.Buckets) != len(want) {
		t.Fatalf("buckets %+v", o.Buckets)
	}
	for i, w := range want {
		if o.Buckets[i].LE != w.le || o.Buckets[i].Count != w.n {
			t.Errorf("bucket %d = %+v, want %v %d", i, o.Buckets[i], w.le, w.n)
		}
	}
	if o.Sum != 1500*time.Millisecond {
		t.Errorf("sum = %s, want the histogram's 1.5s", o.Sum)
	}
	if b := observation(families, "blue"); b.Requests != 40 || b.Errors != 40 || b.Buckets != nil {
		t.Errorf("blue = %+v", b)
	}
}
