package metrics

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// fakeObserver answers Observe from a table by colour; a colour missing
// from it is an error, and hang makes Observe wait until ctx ends.
type fakeObserver struct {
	obs  map[config.Color]lb.Observation
	hang bool
}

func (f *fakeObserver) Flip(context.Context, lb.Route) error         { return nil }
func (f *fakeObserver) Active(context.Context) (config.Color, error) { return config.Blue, nil }
func (f *fakeObserver) Render(lb.Route) ([]byte, error)              { return nil, nil }
func (f *fakeObserver) Observe(ctx context.Context, u lb.Upstream) (lb.Observation, error) {
	if f.hang {
		<-ctx.Done()
		return lb.Observation{}, ctx.Err()
	}
	o, ok := f.obs[u.Color]
	if !ok {
		return lb.Observation{}, errors.New("no such slot")
	}
	return o, nil
}

var slots = []lb.Upstream{{Color: config.Blue, Host: lb.LocalHost, Port: 5005}, {Color: config.Green, Host: lb.LocalHost, Port: 5006}}

// parse reads an exposition back as node_exporter and Prometheus would.
func parse(t *testing.T, data []byte) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, data)
	}
	return families
}

// lint fails on any of promlint's problems with the exposition.
func lint(t *testing.T, data []byte) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(string(data))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// value is the value of the series of family name whose labels include
// want; ok false when there is none.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func expose(t *testing.T, cs ...prometheus.Collector) []byte {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	data, err := exposition(reg)
	if err != nil {
		t.Fatal(err)
	}
	lint(t, data)
	return data
}

func TestSlotCollectorHistogramAndMean(t *testing.T) {
	builtinLike := &fakeObserver{obs: map[config.Color]lb.Observation{
		config.Blue: {Requests: 120, Errors: 3, Sum: 600 * time.Millisecond, Buckets: []lb.Bucket{
			{LE: 5 * time.Millisecond, Count: 100}, {LE: 50 * time.Millisecond, Count: 117}, {LE: math.MaxInt64, Count: 117}}},
		config.Green: {Requests: 0, Buckets: []lb.Bucket{{LE: 5 * time.Millisecond}, {LE: math.MaxInt64}}},
	}}
	haproxyLike := &fakeObserver{obs: map[config.Color]lb.Observation{
		config.Blue: {Requests: 40, Errors: 1, Mean: 12 * time.Millisecond},
		// green has no server in show stat: an error
	}}
	c := NewSlotCollector([]Service{
		{Name: "web", Observer: builtinLike, Slots: slots},
		{Name: "api", Observer: haproxyLike, Slots: slots},
		{Name: "static", Slots: slots}, // no observer: no slot series
	}, time.Second)
	fam := parse(t, expose(t, c))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bgd_slot_requests_total", map[string]string{"service": "web", "slot": "blue"}, 120},
		{"bgd_slot_errors_total", map[string]string{"service": "web", "slot": "blue"}, 3},
		{"bgd_slot_request_duration_seconds", map[string]string{"service": "web", "slot": "blue"}, 117},
		{"bgd_slot_requests_total", map[string]string{"service": "web", "slot": "green"}, 0},
		{"bgd_slot_requests_total", map[string]string{"service": "api", "slot": "blue"}, 40},
		{"bgd_slot_errors_total", map[string]string{"service": "api", "slot": "blue"}, 1},
		{"bgd_slot_response_time_mean_seconds", map[string]string{"service": "api", "slot": "blue"}, 0.012},
		{"bgd_slot_observe_success", map[string]string{"service": "api", "slot": "blue"}, 1},
		{"bgd_slot_observe_success", map[string]string{"service": "api", "slot": "green"}, 0},
	} {
		if got, ok := value(fam, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(fam, "bgd_slot_requests_total", map[string]string{"service": "api", "slot": "green"}); ok {
		t.Error("a slot that could not be observed has a request count")
	}
	if _, ok := value(fam, "bgd_slot_response_time_mean_seconds", map[string]string{"service": "web"}); ok {
		t.Error("a driver with a histogram also has a mean")
	}
	if _, ok := value(fam, "bgd_slot_observe_success", map[string]string{"service": "static"}); ok {
		t.Error("a service without an observer has slot series")
	}
	var h *dto.Histogram
	for _, m := range fam["bgd_slot_request_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "slot" && l.GetValue() == "blue" {
				h = m.GetHistogram()
			}
		}
	}
	if h == nil {
		t.Fatal("no histogram of blue")
	}
	if h.GetSampleSum() != 0.6 || h.GetBucket()[0].GetUpperBound() != 0.005 || h.GetBucket()[0].GetCumulativeCount() != 100 {
		t.Errorf("histogram = %v, want sum 0.6 and 100 within 5ms", h)
	}
}

// TestSlotCollectorTimeout: a load balancer that does not answer holds a
// scrape no longer than the timeout.
func TestSlotCollectorTimeout(t *testing.T) {
	c := NewSlotCollector([]Service{{Name: "web", Observer: &fakeObserver{hang: true}, Slots: slots}}, 200*time.Millisecond)
	began := time.Now()
	fam := parse(t, expose(t, c))
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the scrape took %s with a timeout of 200ms", took)
	}
	if v, ok := value(fam, "bgd_slot_observe_success", map[string]string{"slot": "green"}); !ok || v != 0 {
		t.Errorf("observe_success = %v (%v), want 0", v, ok)
	}
}

func stateWith(f func(*state.State)) func() (*state.State, error) {
	return func() (*state.State, error) {
		st := state.New(5005, 5006)
		f(st)
		return st, nil
	}
}

func TestDeployCollector(t *testing.T) {
	start := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	web := stateWith(func(st *state.State) {
		for range 60 { // more than the history keeps
			st.Record(state.Event{Action: "deploy", Status: state.StatusSuccess})
		}
		st.Record(state.Event{Action: "deploy", Status: state.StatusFailed})
		st.Record(state.Event{Action: "canary", Status: state.StatusSuccess, Weight: 10})
		st.Record(state.Event{Action: "promote", Status: state.StatusSuccess, Weight: 100}) // a canary went live
		st.Record(state.Event{Action: "rollback", Status: state.StatusRolledBack})
		st.Record(state.Event{Action: "rollback", Status: state.StatusAutoRolledBack})
		st.Record(state.Event{Action: "abort", Status: state.StatusAutoRolledBack})
		st.InProgress = &state.Operation{Command: "deploy", PID: os.Getpid(), Started: start}
		st.Record(state.Event{Action: "deploy", Status: state.StatusSuccess, Timestamp: start.Add(2500 * time.Millisecond)})
		st.InProgress = nil
		st.CountFlip()
		st.CountFlip()
		st.ActiveVersion = config.Green
		st.GreenHealthy = true
		st.Canary = &state.Canary{Color: config.Blue, Weight: 25}
	})
	fresh := stateWith(func(*state.State) {})
	data := expose(t, NewDeployCollector([]Service{{Name: "web", State: web}, {Name: "new", State: fresh}}))
	fam := parse(t, data)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bgd_deploys_total", map[string]string{"service": "web", "status": "success"}, 62},
		{"bgd_deploys_total", map[string]string{"service": "web", "status": "failed"}, 1},
		{"bgd_deploys_total", map[string]string{"service": "web", "status": "rolled_back"}, 1},
		{"bgd_deploys_total", map[string]string{"service": "web", "status": "auto_rolled_back"}, 2},
		{"bgd_auto_rollbacks_total", map[string]string{"service": "web"}, 2},
		{"bgd_flips_total", map[string]string{"service": "web"}, 2},
		{"bgd_last_deploy_duration_seconds", map[string]string{"service": "web"}, 2.5},
		{"bgd_last_deploy_timestamp_seconds", map[string]string{"service": "web"}, float64(start.Unix()) + 2.5},
		{"bgd_last_deploy_success", map[string]string{"service": "web"}, 1},
		{"bgd_active_slot", map[string]string{"service": "web", "slot": "green"}, 1},
		{"bgd_active_slot", map[string]string{"service": "web", "slot": "blue"}, 0},
		{"bgd_slot_healthy", map[string]string{"service": "web", "slot": "green"}, 1},
		{"bgd_canary_weight", map[string]string{"service": "web"}, 25},
		// A service that never deployed: zeros, so that rate() sees the first.
		{"bgd_deploys_total", map[string]string{"service": "new", "status": "failed"}, 0},
		{"bgd_flips_total", map[string]string{"service": "new"}, 0},
		{"bgd_canary_weight", map[string]string{"service": "new"}, 0},
		{"bgd_active_slot", map[string]string{"service": "new", "slot": "blue"}, 1},
	} {
		if got, ok := value(fam, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(fam, "bgd_last_deploy_timestamp_seconds", map[string]string{"service": "new"}); ok {
		t.Error("a service that never deployed has a last deploy")
	}
}

// TestDeployCollectorBadState: a state file that cannot be read is an
// error naming the service; the other services are still gathered.
func TestDeployCollectorBadState(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewDeployCollector([]Service{
		{Name: "broken", State: func() (*state.State, error) { return nil, errors.New("state file corrupt") }},
		{Name: "ok", State: stateWith(func(*state.State) {})},
	}))
	data, err := exposition(reg)
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("err = %v, want one naming service broken", err)
	}
	if _, ok := value(parse(t, data), "bgd_flips_total", map[string]string{"service": "ok"}); !ok {
		t.Error("the readable service is missing")
	}
}

func TestWriteTextfile(t *testing.T) {
	dir := t.TempDir()
	obs := &fakeObserver{obs: map[config.Color]lb.Observation{config.Blue: {Requests: 7, Mean: time.Millisecond}, config.Green: {Requests: 2}}}
	s := Service{Name: "web", State: stateWith(func(st *state.State) { st.Record(state.Event{Action: "deploy", Status: state.StatusFailed}) }),
		Observer: obs, Slots: slots, Cumulative: true}
	path, err := WriteTextfile(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "bgd_web.prom") {
		t.Errorf("path = %s", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (node_exporter reads it as another user)", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	lint(t, data)
	fam := parse(t, data)
	if v, _ := value(fam, "bgd_deploys_total", map[string]string{"status": "failed"}); v != 1 {
		t.Errorf("failed deploys = %v, want 1", v)
	}
	if v, _ := value(fam, "bgd_slot_requests_total", map[string]string{"slot": "blue"}); v != 7 {
		t.Errorf("blue requests = %v, want 7", v)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want only the .prom one (no temp file left)", len(entries))
	}
	// nginx's counts start with this process: not in a one-shot's file.
	s.Name, s.Cumulative = "ng", false
	path, err = WriteTextfile(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if strings.Contains(string(data), "bgd_slot_requests_total") {
		t.Error("a textfile has the slot counts of a load balancer whose counts start with this process")
	}
	_, err = WriteTextfile(filepath.Join(dir, "missing"), s)
	if err == nil || !strings.Contains(err.Error(), "does not exist: create it") {
		t.Errorf("missing dir: %v", err)
	}
}
