package demoapp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHealthFollowsReadyAndFailAfter: /health answers 503 before
// ReadyAfter, 200 between, 503 again from FailAfter, always naming colour
// and release.
func TestHealthFollowsReadyAndFailAfter(t *testing.T) {
	o := Options{Color: "green", Release: "r7", ReadyAfter: time.Minute, FailAfter: 2 * time.Minute}
	for _, c := range []struct {
		name string
		age  time.Duration
		code int
	}{
		{"starting", 0, http.StatusServiceUnavailable},
		{"ready", 90 * time.Second, http.StatusOK},
		{"failed", 3 * time.Minute, http.StatusServiceUnavailable},
	} {
		rec := httptest.NewRecorder()
		Handler(o, time.Now().Add(-c.age)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		var body struct {
			OK             bool
			Color, Release string
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: /health body %q: %v", c.name, rec.Body, err)
		}
		if rec.Code != c.code || body.OK != (c.code == http.StatusOK) || body.Color != "green" || body.Release != "r7" ||
			rec.Header().Get("X-Slot") != "green" {
			t.Errorf("%s: /health = %d %+v (X-Slot %q), want %d for green r7", c.name, rec.Code, body, rec.Header().Get("X-Slot"), c.code)
		}
	}
}

// TestRootNamesTheSlot: / answers one line naming colour and release (what
// the load tests check every answer against), after Delay.
func TestRootNamesTheSlot(t *testing.T) {
	h := Handler(Options{Color: "blue", Release: "r1", Delay: 30 * time.Millisecond}, time.Now())
	rec := httptest.NewRecorder()
	t0 := time.Now()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"order": 42}`)))
	if got := rec.Body.String(); rec.Code != http.StatusOK || got != "demo app: color=blue release=r1\n" || rec.Header().Get("X-Slot") != "blue" {
		t.Errorf("/ = %d %q (X-Slot %q)", rec.Code, got, rec.Header().Get("X-Slot"))
	}
	if d := time.Since(t0); d < 30*time.Millisecond {
		t.Errorf("answered after %s, want the 30ms Delay", d)
	}
}

// TestRunRefusesBadPorts: a port outside 1-65535 is an error naming it,
// before anything listens.
func TestRunRefusesBadPorts(t *testing.T) {
	for _, port := range []int{0, -1, 65536} {
		err := Run(context.Background(), Options{Port: port})
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Run with port %d = %v, want out of range", port, err)
		}
	}
}

// TestRequestDelay: /?delay= holds that one answer; a delay that is not a
// duration, negative or above MaxDelay is refused with 400.
func TestRequestDelay(t *testing.T) {
	h := Handler(Options{Color: "blue"}, time.Now())
	for _, c := range []struct {
		query   string
		code    int
		minTook time.Duration
		body    string
	}{
		{"", http.StatusOK, 0, "color=blue"},
		{"?delay=80ms", http.StatusOK, 80 * time.Millisecond, "color=blue"},
		{"?delay=soon", http.StatusBadRequest, 0, `delay="soon": want a duration from 0s to 30s`},
		{"?delay=-1s", http.StatusBadRequest, 0, "want a duration"},
		{"?delay=31s", http.StatusBadRequest, 0, "want a duration"},
	} {
		rec := httptest.NewRecorder()
		began := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+c.query, nil))
		took := time.Since(began)
		if rec.Code != c.code || took < c.minTook || took > c.minTook+2*time.Second || !strings.Contains(rec.Body.String(), c.body) {
			t.Errorf("/%s = %d %q after %s, want %d with %q after %s", c.query, rec.Code, rec.Body, took, c.code, c.body, c.minTook)
		}
	}
}

// TestErrorRateOver1000Requests: from BadAfter on, ErrorRate of the
// answers to paths other than /health are 500s (within ±3 points over
// 1000 requests; the spread is exact, so it is the rate itself), /health
// stays 200 throughout, and before BadAfter every answer is a 200.
func TestErrorRateOver1000Requests(t *testing.T) {
	for _, rate := range []float64{0, 0.05, 0.1, 0.25, 0.5, 1} {
		h := Handler(Options{Color: "green", ErrorRate: rate}, time.Now())
		failed := 0
		for i := range 1000 {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/orders", nil))
			switch rec.Code {
			case http.StatusInternalServerError:
				failed++
				if !strings.Contains(rec.Body.String(), "failing as told") || rec.Header().Get("X-Slot") != "green" {
					t.Fatalf("rate %v: 500 %q (X-Slot %q), want it to say it fails as told", rate, rec.Body, rec.Header().Get("X-Slot"))
				}
			case http.StatusOK:
			default:
				t.Fatalf("rate %v: request %d answered %d", rate, i, rec.Code)
			}
			if i%100 == 0 {
				hr := httptest.NewRecorder()
				h.ServeHTTP(hr, httptest.NewRequest(http.MethodGet, "/health", nil))
				if hr.Code != http.StatusOK {
					t.Fatalf("rate %v: /health = %d, want 200: a bad release passes its health checks", rate, hr.Code)
				}
			}
		}
		if got := float64(failed) / 1000; got < rate-0.03 || got > rate+0.03 {
			t.Errorf("--error-rate %v: %d of 1000 requests failed (%.1f%%), want %.1f%% ±3 points", rate, failed, got*100, rate*100)
		}
		t.Logf("--error-rate %v: %d of 1000 answered 500", rate, failed)
	}
}

// TestBadAfterGatesErrorsAndLatency: before BadAfter the app answers 200
// at once; from BadAfter on, Latency is added to every answer (the 500s
// included) and ErrorRate applies.
func TestBadAfterGatesErrorsAndLatency(t *testing.T) {
	o := Options{Color: "blue", ErrorRate: 1, Latency: 40 * time.Millisecond, BadAfter: time.Minute}
	serve := func(age time.Duration) (int, time.Duration) {
		rec := httptest.NewRecorder()
		began := time.Now()
		Handler(o, time.Now().Add(-age)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code, time.Since(began)
	}
	if code, took := serve(0); code != http.StatusOK || took >= 40*time.Millisecond {
		t.Errorf("before --bad-after: %d after %s, want 200 without the latency", code, took)
	}
	if code, took := serve(2 * time.Minute); code != http.StatusInternalServerError || took < 40*time.Millisecond {
		t.Errorf("after --bad-after: %d after %s, want 500 after at least 40ms", code, took)
	}
}

// TestFailsNthIsExact: over any first N requests the count of failures is
// floor(N*rate).
func TestFailsNthIsExact(t *testing.T) {
	for _, rate := range []float64{0.01, 0.1, 1.0 / 3, 0.5, 0.99} {
		failed := 0
		for n := uint64(1); n <= 777; n++ {
			if failsNth(n, rate) {
				failed++
			}
			if want := int(float64(n) * rate); failed != want {
				t.Fatalf("rate %v: %d failures in the first %d requests, want %d", rate, failed, n, want)
			}
		}
	}
}

// TestRunRefusesBadMisbehaviour: an error rate outside 0-1 and negative
// durations are refused, naming the flag, before anything listens.
func TestRunRefusesBadMisbehaviour(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Port: 1, ErrorRate: 1.5}, "--error-rate 1.5 is not a fraction from 0 to 1"},
		{Options{Port: 1, ErrorRate: -0.1}, "--error-rate -0.1"},
		{Options{Port: 1, Latency: -time.Second}, "--latency -1s"},
		{Options{Port: 1, BadAfter: -time.Second}, "may not be negative"},
	} {
		if err := Run(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Run(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
}
