package builtin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// sample is lb.SampleRoute("app") changed by f.
func sample(f func(*lb.Route)) lb.Route { return lbtest.Route(config.Blue, 1, f) }

// TestBuiltinRefusesWhatTheProxyCannotDo: the proxy routes to the state
// file's slots on 127.0.0.1 (the active one, or a weighted split with the
// canary), so any other host is refused by Flip (before it asks the proxy
// anything) and by Render. (Pause and maintenance it does: pause_test.go.)
func TestBuiltinRefusesWhatTheProxyCannotDo(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	b := &Balancer{Listen: srv.Listener.Addr().String()}
	cases := []struct {
		feature lb.Feature
		route   lb.Route
	}{
		{lb.FeatureRemoteHosts, sample(func(r *lb.Route) { r.Active.Host = "10.0.0.7" })},
		{lb.FeatureRemoteHosts, sample(func(r *lb.Route) { r.Active.Host = "localhost" })},
		{lb.FeatureRemoteHosts, sample(func(r *lb.Route) { r.Standby.Host = "10.0.0.8" })},
	}
	for _, c := range cases {
		t.Run(string(c.feature), func(t *testing.T) {
			lbtest.Refuses(t, b, c.route, "builtin", c.feature)
		})
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the proxy was asked %d times for routes refused up front", n)
	}
	if err := b.Flip(context.Background(), sample(func(r *lb.Route) { r.Active.Host = "" })); !errors.Is(err, lb.ErrInvalidRoute) {
		t.Errorf("Flip of a route without a host = %v, want lb.ErrInvalidRoute", err)
	}
}

// TestBuiltinTakesTodaysRoutes: a flip to green, weights left 0 or written
// as 100/0, is confirmed by a running proxy, and renders as before.
func TestBuiltinTakesTodaysRoutes(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	_, store, b := startProxy(t, blue, green)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.ActiveVersion, st.Generation = "green", st.Generation+1
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	for _, weight := range []int{0, 100} {
		r := lb.Route{
			Service:    "app",
			Active:     lb.Upstream{Color: "green", Host: lb.LocalHost, Port: green, Weight: weight},
			Standby:    lb.Upstream{Color: "blue", Host: lb.LocalHost, Port: blue},
			Generation: st.Generation,
		}
		if err := b.Flip(context.Background(), r); err != nil {
			t.Fatalf("Flip (active weight %d) = %v", weight, err)
		}
		out, err := b.Render(r)
		if err != nil || !strings.Contains(string(out), "upstream green 127.0.0.1:") {
			t.Fatalf("Render (active weight %d) = %q, %v", weight, out, err)
		}
	}
	if code, body := get(t, b.Listen, "/"); code != http.StatusOK || body != "green" {
		t.Fatalf("after the flip: %d %q, want 200 from green", code, body)
	}
}

// TestBuiltinTakesWeightedSplits: the driver declares weights; a split
// route renders both slots with their weights (and the sticky cookie), and
// a split with a remote canary is still refused.
func TestBuiltinTakesWeightedSplits(t *testing.T) {
	b := &Balancer{Listen: "127.0.0.1:1"}
	if !b.Capabilities().Weights {
		t.Fatal("Capabilities().Weights = false, want true")
	}
	r := sample(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight, r.Sticky = 90, 10, true })
	out, err := b.Render(r)
	if err != nil {
		t.Fatalf("Render of a split = %v", err)
	}
	for _, want := range []string{"upstream blue 127.0.0.1:5005 weight 90%", "upstream green 127.0.0.1:5006 weight 10% (canary)", "sticky cookie bgd_app="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Render of blue 90 + green 10 sticky:\n%s\nlacks %q", out, want)
		}
	}
	lbtest.Refuses(t, b, sample(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight, r.Standby.Host = 90, 10, "10.0.0.8" }), "builtin", lb.FeatureRemoteHosts)
}
