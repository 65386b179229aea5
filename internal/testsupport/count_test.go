package testsupport

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCountSlots(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch {
		case i%10 == 0:
			w.WriteHeader(http.StatusInternalServerError)
		case i%10 < 4:
			w.Header().Set("X-Slot", "green")
		default:
			w.Header().Set("X-Slot", "blue")
		}
	}))
	t.Cleanup(srv.Close)
	c := CountSlots(srv.URL, 1000, 4)
	if c.Requests != 1000 || c.Failures != 100 || c.Slots["green"] != 300 || c.Slots["blue"] != 600 || c.Share("green") != 30 {
		t.Errorf("CountSlots = %+v (green share %.1f), want 1000 requests: 100 failed, 300 green, 600 blue", c, c.Share("green"))
	}
	if got := (SlotCount{}).Share("blue"); got != 0 {
		t.Errorf("Share of no requests = %v", got)
	}
}

func TestWaitAnswer(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 3 {
			w.Header().Set("X-Slot", "green")
		} else {
			w.Header().Set("X-Slot", "blue")
		}
	}))
	t.Cleanup(srv.Close)
	if err := WaitAnswer(srv.URL, "green", 5*time.Second, time.Millisecond); err != nil || n.Load() != 4 {
		t.Errorf("WaitAnswer green: %v after %d requests, want nil after 4", err, n.Load())
	}
	err := WaitAnswer(srv.URL, "blue", 20*time.Millisecond, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `answers from "green"`) {
		t.Errorf("WaitAnswer blue from a green server: %v", err)
	}
}
