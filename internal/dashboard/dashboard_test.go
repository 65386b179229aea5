package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

func buckets(counts ...uint64) []lb.Bucket {
	bounds := []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, math.MaxInt64}
	out := make([]lb.Bucket, len(counts))
	for i, c := range counts {
		out[i] = lb.Bucket{LE: bounds[i], Count: c}
	}
	return out
}

// TestIntervalIsTheDifference: an interval's rate, error share and
// percentiles come from the difference of two cumulative observations,
// never from the totals; a counter that went down (a restarted load
// balancer) counts from zero; a p99 past the last finite bound is that
// bound, flagged.
func TestIntervalIsTheDifference(t *testing.T) {
	prev := lb.Observation{Requests: 1000, Errors: 0, Buckets: buckets(1000, 1000, 1000, 1000)}
	// 100 more: 40 within 1ms, 59 within 10ms, 1 within 100ms; 10 failed.
	cur := lb.Observation{Requests: 1100, Errors: 10, Buckets: buckets(1040, 1099, 1100, 1100)}
	sp := interval(prev, cur, 2)
	if !sp.Observed || sp.Requests != 100 || sp.Errors != 10 || sp.Rate != 50 || sp.ErrorShare != 0.1 {
		t.Errorf("interval = %+v, want 100 requests at 50/s, 10%% errors", sp)
	}
	if sp.P50 != 10*time.Millisecond || sp.P99 != 10*time.Millisecond || sp.Beyond {
		t.Errorf("p50 %s, p99 %s (beyond %v), want both 10ms: the totals' p50 would be 1ms", sp.P50, sp.P99, sp.Beyond)
	}
	slow := lb.Observation{Requests: 1200, Errors: 10, Buckets: buckets(1040, 1099, 1100, 1200)}
	if sp := interval(cur, slow, 1); sp.P99 != 100*time.Millisecond || !sp.Beyond || sp.P50 != 100*time.Millisecond {
		t.Errorf("all 100 past the last finite bound: p50 %s, p99 %s, beyond %v; want 100ms, 100ms, true", sp.P50, sp.P99, sp.Beyond)
	}
	restarted := lb.Observation{Requests: 5, Errors: 1, Buckets: buckets(5, 5, 5, 5)}
	if sp := interval(cur, restarted, 1); sp.Requests != 5 || sp.Errors != 1 || sp.P99 != time.Millisecond {
		t.Errorf("after a restart: %+v, want the 5 requests since", sp)
	}
	haproxy := interval(lb.Observation{Requests: 10}, lb.Observation{Requests: 30, Mean: 3 * time.Millisecond}, 1)
	if haproxy.P99 != 0 || haproxy.Mean != 3*time.Millisecond || haproxy.Requests != 20 {
		t.Errorf("without a histogram: %+v, want the mean and no p99", haproxy)
	}
}

// fullSampler is a sampler of one service whose ring is full: 15 minutes
// of points every 2 s, with a history of 50 events spread over them.
func fullSampler(t *testing.T, now time.Time) *Sampler {
	t.Helper()
	st := state.New(5005, 5006)
	st.BlueRelease, st.GreenRelease, st.BlueHealthy, st.GreenHealthy = "v1", "v2", true, true
	st.Canary = &state.Canary{Color: config.Green, Weight: 10, Started: now.Add(-time.Minute)}
	actions := []string{"deploy", "switch", "rollback", "canary", "promote", "abort", "health_check"}
	for i := range state.MaxHistory {
		e := state.Event{Timestamp: now.Add(-time.Duration(50-i) * 17 * time.Second), Action: actions[i%len(actions)],
			From: config.Blue, To: config.Green, Status: state.StatusSuccess, Release: fmt.Sprintf("r%d", i)}
		if i == 40 {
			e.Status, e.Reason = state.StatusAutoRolledBack, "error rate 20% <is> above"
		}
		st.History = append(st.History, e)
	}
	s := NewSampler(Options{}, Source{Service: "app", Driver: "builtin",
		// Never called: the points are pushed below.
		Observe: func(context.Context, lb.Upstream) (lb.Observation, error) { return lb.Observation{}, nil },
		State:   func() (*state.State, error) { return st.Clone(), nil }})
	s.now = func() time.Time { return now }
	sr := s.series["app"]
	sr.st = st
	for i := range len(sr.ring) + 25 {
		at := now.Add(-time.Duration(len(sr.ring)+25-i) * DefaultInterval)
		sp := SlotPoint{Observed: true, Requests: uint64(1000 + i), Errors: uint64(i % 7), Rate: 500 + float64(i%13),
			ErrorShare: float64(i%7) / 1000, P50: time.Millisecond, P99: 25 * time.Millisecond}
		sr.push(Point{At: at, Blue: sp, Green: sp})
	}
	return s
}

// TestPageOfFifteenMinutes: with the ring full (its oldest points
// overwritten), the page holds 15 minutes of both slots' series, a marker
// for each marked event in range and none for other actions, escapes
// what the history says, and stays under 200 KB with no outside resource.
func TestPageOfFifteenMinutes(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := fullSampler(t, now)
	v, _ := s.View("app")
	if len(v.Points) != int(DefaultKeep/DefaultInterval) || v.Points[0].Blue.Requests != 1025 {
		t.Fatalf("%d points from %d requests: the ring should hold the last %d", len(v.Points), v.Points[0].Blue.Requests, DefaultKeep/DefaultInterval)
	}
	from, _ := v.timeRange()
	want := 0
	st, _ := s.series["app"].src.State()
	for _, e := range st.History {
		if !e.Timestamp.Before(from) && marked(e) {
			want++
		}
	}
	if len(v.Markers) != want || want < 30 {
		t.Errorf("%d markers, want %d (the marked events within 15 minutes)", len(v.Markers), want)
	}
	rec := httptest.NewRecorder()
	Handler(s).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	page := rec.Body.String()
	t.Logf("page of 15 minutes, %d markers: %d bytes", len(v.Markers), len(page))
	if len(page) > 200<<10 {
		t.Errorf("page is %d bytes, over 200 KB", len(page))
	}
	for _, want := range []string{`data-slot="blue" data-series="rate"`, `data-slot="green" data-series="p99"`,
		`class="marker auto_rolled_back" data-action="abort"`, "Canary: <b>green</b> gets 10% of new requests",
		"error rate 20% &lt;is&gt; above", `data-weight="90"`, `data-weight="10"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{`data-action="health_check"`, "<script src", "https://", "<is>"} {
		if strings.Contains(page, bad) {
			t.Errorf("page has %q", bad)
		}
	}
}

// TestHandlerServesIndexJSONAndFragment: with several services, / is an
// index linking each; ?service= picks one; ?format=json is its View;
// ?part=main is the fragment without the page; an unknown service is 404.
func TestHandlerServesIndexJSONAndFragment(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	one := fullSampler(t, now)
	src := one.series["app"].src
	web := src
	web.Service = "web"
	s := NewSampler(Options{}, src, web)
	s.now = one.now
	h := Handler(s)
	get := func(url string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="?service=app"`) || !strings.Contains(body, `href="?service=web"`) {
		t.Errorf("index: %d\n%s", code, body)
	}
	if code, body := get("/?service=web"); code != 200 || !strings.Contains(body, "<title>bgd: web</title>") || !strings.Contains(body, "all services") {
		t.Errorf("?service=web: %d\n%s", code, body)
	}
	code, body := get("/?service=web&format=json")
	var v View
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil || v.Service != "web" || len(v.Slots) != 2 || v.Slots[1].Weight != 10 {
		t.Errorf("?format=json: %d %v\n%s", code, err, body)
	}
	if code, body := get("/?service=app&part=main"); code != 200 || strings.Contains(body, "<html") || !strings.Contains(body, "chart-errors") {
		t.Errorf("?part=main: %d\n%s", code, body)
	}
	if code, body := get("/?service=nope"); code != 404 || !strings.Contains(body, "app, web") {
		t.Errorf("unknown service: %d %q", code, body)
	}
}
