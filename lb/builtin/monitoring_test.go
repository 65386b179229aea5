package builtin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/dashboard"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// recordEvent appends e to the state file's history, as the orchestrator
// would with a flip.
func recordEvent(t testing.TB, store *state.Store, e state.Event) {
	t.Helper()
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Record(e)
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
}

// TestMonitoringSamplesTheProxysOwnSeries: the dashboard's in-process
// source reads exactly what the proxy counted (the same numbers as
// Balancer.Observe reads on /metrics); one sample after 40 requests to a
// good blue and 20 to a green answering 500 shows each slot's interval:
// counts, error share, p50 and p99; /monitoring serves the page, its JSON
// and the fragment the page's script polls.
func TestMonitoringSamplesTheProxysOwnSeries(t *testing.T) {
	blue := backend(t, "blue", nil)
	green := backend(t, "green", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "failing", http.StatusInternalServerError) })
	p, store, b := startProxy(t, blue, green)
	ctx := context.Background()
	src := p.selfSource()
	s := dashboard.NewSampler(dashboard.Options{Interval: time.Second}, src)
	s.Sample(ctx) // the baseline
	for range 40 {
		get(t, p.Listen, "/")
	}
	recordEvent(t, store, state.Event{Action: "deploy", From: config.Blue, To: config.Green, Status: state.StatusSuccess, Release: "bad"})
	flip(t, store, b, config.Green)
	for range 20 {
		if code, _ := get(t, p.Listen, "/"); code != http.StatusInternalServerError {
			t.Fatalf("green answered %d, want its 500", code)
		}
	}
	s.Sample(ctx)
	v, ok := s.View("app")
	if !ok || len(v.Points) != 1 {
		t.Fatalf("View after two samples: %v, %d points, want 1", ok, len(v.Points))
	}
	pt := v.Points[0]
	if bl := pt.Blue; !bl.Observed || bl.Requests != 40 || bl.Errors != 0 || bl.Rate <= 0 || bl.P50 <= 0 || bl.P99 < bl.P50 {
		t.Errorf("blue's interval = %+v, want 40 requests, 0 errors, a rate and p50 <= p99", bl)
	}
	if gr := pt.Green; gr.Requests != 20 || gr.Errors != 20 || gr.ErrorShare != 1 {
		t.Errorf("green's interval = %+v, want 20 requests, all errors", gr)
	}
	if len(v.Markers) != 1 || v.Markers[0].Action != "deploy" || v.Active != config.Green {
		t.Errorf("markers %+v, active %s: want the deploy, green", v.Markers, v.Active)
	}
	for _, c := range config.Colors {
		u := lb.Upstream{Color: c, Host: lb.LocalHost, Port: map[config.Color]int{config.Blue: blue, config.Green: green}[c]}
		in, err := src.Observe(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		over, err := b.Observe(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if in.Requests != over.Requests || in.Errors != over.Errors || len(in.Buckets) != len(over.Buckets) ||
			in.Buckets[len(in.Buckets)-1] != over.Buckets[len(over.Buckets)-1] {
			t.Errorf("%s: in-process %+v, /metrics %+v: the dashboard must read the proxy's own counts", c, in, over)
		}
	}

	code, page := get(t, p.Listen, "/monitoring")
	for _, want := range []string{"Active slot: <b>green</b>", `id="chart-rate"`, `id="chart-errors"`, `id="chart-latency"`,
		`data-slot="blue" data-series="rate"`, `data-slot="green" data-series="errors"`, "<script>", "Recent history"} {
		if code != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("/monitoring: %d, no %q in\n%s", code, want, page)
			break
		}
	}
	code, frag := get(t, p.Listen, "/monitoring?part=main")
	if code != http.StatusOK || strings.Contains(frag, "<html") || !strings.Contains(frag, `id="chart-rate"`) {
		t.Errorf("/monitoring?part=main: %d, want the charts without the page around them:\n%s", code, frag)
	}
	code, js := get(t, p.Listen, "/monitoring?format=json")
	var jv dashboard.View
	if err := json.Unmarshal([]byte(js), &jv); code != http.StatusOK || err != nil || jv.Service != "app" || len(jv.Slots) != 2 ||
		jv.Active != config.Green || jv.Interval != dashboard.DefaultInterval {
		t.Errorf("/monitoring?format=json: %d %v: %s", code, err, js)
	}
	if code, body := get(t, p.Listen, "/monitoring?service=other"); code != http.StatusNotFound || !strings.Contains(body, `no service "other" here`) {
		t.Errorf("/monitoring?service=other: %d %q", code, body)
	}
}

// benchSource readies a proxy in front of two real slots with traffic
// counted on both (so that the histograms have buckets to read).
func benchSource(b *testing.B) (*Proxy, *Balancer) {
	p, store, bal := startProxy(b, demoSlot(b, config.Blue), demoSlot(b, config.Green))
	split(b, store, bal, config.Blue, 50, false)
	client := &http.Client{}
	for range 200 {
		resp, err := client.Get("http://" + p.Listen + "/")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	return p, bal
}

// BenchmarkMonitoringSample: one sample of both slots by the proxy's own
// dashboard, in its process (what /monitoring costs the proxy every 2 s).
func BenchmarkMonitoringSample(b *testing.B) {
	p, _ := benchSource(b)
	s := dashboard.NewSampler(dashboard.Options{}, p.selfSource())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.Sample(ctx)
	}
}

// BenchmarkDashboardSampleOverHTTP: one sample of both slots as `bgd
// dashboard` takes it from a builtin proxy: two scrapes of its /metrics.
func BenchmarkDashboardSampleOverHTTP(b *testing.B) {
	p, bal := benchSource(b)
	store := &state.Store{Path: p.StatePath}
	s := dashboard.NewSampler(dashboard.Options{}, dashboard.Source{Service: "app", Driver: "builtin", Observe: bal.Observe, State: store.Load})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.Sample(ctx)
	}
}
