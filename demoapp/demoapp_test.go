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
