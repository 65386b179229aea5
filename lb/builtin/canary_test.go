package builtin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// demoSlot is a slot that answers as bgd's demo app does: X-Slot names its
// colour and the body starts with "demo app: color=<colour>", which is
// what testsupport's load clients check.
func demoSlot(t testing.TB, color config.Color) int {
	return backend(t, color.String(), func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Slot", color.String())
		fmt.Fprintf(w, "demo app: color=%s", color)
	})
}

// writeRouting writes the state the orchestrator would (active colour, and a canary
// of the other colour at weight when weight > 0), bumps the generation and
// returns the matching route, without asking the proxy.
func writeRouting(t testing.TB, store *state.Store, active config.Color, weight int, sticky bool) lb.Route {
	t.Helper()
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	standby := active.Other()
	st.ActiveVersion = active
	st.Generation++
	st.Canary = nil
	r := lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: active, Host: lb.LocalHost, Port: st.Slot(active).Port},
		Standby:    lb.Upstream{Color: standby, Host: lb.LocalHost, Port: st.Slot(standby).Port},
		Generation: st.Generation,
	}
	if weight > 0 {
		st.Canary = &state.Canary{Color: standby, Weight: weight, Sticky: sticky, Started: state.Now()}
		r.Active.Weight, r.Standby.Weight, r.Sticky = 100-weight, weight, sticky
	}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	return r
}

// split writes the routing and has Balancer.Flip confirm it.
func split(t testing.TB, store *state.Store, b *Balancer, active config.Color, weight int, sticky bool) lb.Route {
	t.Helper()
	r := writeRouting(t, store, active, weight, sticky)
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatalf("Flip to %s with canary weight %d (sticky %v): %v", active, weight, sticky, err)
	}
	return r
}

// tally is what drive saw.
type tally struct {
	mu       sync.Mutex
	slots    map[string]int // 200 answers by the colour that served them
	codes    map[int]int    // every status
	failures []string       // transport errors and bodies that name another colour than X-Bgd-Slot
	cookies  int            // answers that carried a Set-Cookie
}

func (c *tally) String() string {
	return fmt.Sprintf("by slot %v, by status %v, %d Set-Cookie, failures %d %q", c.slots, c.codes, c.cookies, len(c.failures), first(c.failures, 5))
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// drive sends n GETs to the proxy from workers keep-alive clients (one
// connection each) and counts which colour served each: X-Bgd-Slot, which
// must agree with the demo app's body.
func drive(t *testing.T, addr string, n, workers int, prepare func(*http.Request)) *tally {
	t.Helper()
	c := &tally{slots: map[string]int{}, codes: map[int]int{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for next.Add(1) <= int64(n) {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
				if prepare != nil {
					prepare(req)
				}
				resp, err := client.Do(req)
				if err != nil {
					c.mu.Lock()
					c.failures = append(c.failures, err.Error())
					c.mu.Unlock()
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				slot := resp.Header.Get("X-Bgd-Slot")
				c.mu.Lock()
				c.codes[resp.StatusCode]++
				if len(resp.Header.Values("Set-Cookie")) > 0 {
					c.cookies++
				}
				switch {
				case err != nil:
					c.failures = append(c.failures, "read body: "+err.Error())
				case resp.StatusCode == http.StatusOK && string(body) != "demo app: color="+slot:
					c.failures = append(c.failures, fmt.Sprintf("X-Bgd-Slot %q on body %q", slot, body))
				case resp.StatusCode == http.StatusOK:
					c.slots[slot]++
				}
				c.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return c
}

// TestSplitShareMatchesWeight: over 10 000 requests through the proxy, the
// canary's share is its weight within 2 percentage points, at 10 and at
// 50, and the metrics count what the clients saw, per colour.
func TestSplitShareMatchesWeight(t *testing.T) {
	p, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	const n = 10000
	before := map[string]float64{}
	for _, weight := range []int{10, 50} {
		split(t, store, b, config.Blue, weight, false)
		start := time.Now()
		c := drive(t, p.Listen, n, 8, nil)
		took := time.Since(start)
		if len(c.failures) > 0 || c.codes[http.StatusOK] != n {
			t.Fatalf("weight %d: not every request was answered 200 by the colour it names: %s", weight, c)
		}
		share := 100 * float64(c.slots["green"]) / n
		t.Logf("weight %d: green (canary) served %d of %d = %.2f%%, blue %d, in %s (%.0f req/s)",
			weight, c.slots["green"], n, share, c.slots["blue"], took.Round(time.Millisecond), n/took.Seconds())
		if share < float64(weight)-2 || share > float64(weight)+2 {
			t.Errorf("weight %d: the canary served %.2f%% of %d requests, want %d±2%%", weight, share, n, weight)
		}
		if c.cookies != 0 {
			t.Errorf("weight %d, not sticky: %d answers carried a Set-Cookie, want none", weight, c.cookies)
		}
		_, m := get(t, p.Listen, "/metrics")
		for _, color := range []string{"blue", "green"} {
			got := metricValue(t, m, `bgd_proxy_requests_total{code="200",service="app",slot="`+color+`"}`)
			if got-before[color] != float64(c.slots[color]) {
				t.Errorf("weight %d: /metrics counts %v more 200s for %s, the clients saw %d", weight, got-before[color], color, c.slots[color])
			}
			before[color] = got
		}
		if w := metricValue(t, m, `bgd_proxy_slot_weight{service="app",slot="green"}`); w != float64(weight) {
			t.Errorf("bgd_proxy_slot_weight of green = %v, want %d", w, weight)
		}
	}
}

// metricValue is the value of the series line in a Prometheus text page (0
// when absent).
func metricValue(t *testing.T, page, series string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(page, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("metric %s: %q: %v", series, line, err)
			}
			return v
		}
	}
	return 0
}

// TestRouteInfoShowsTheSplit: /_bgd/route names both weights and the
// stickiness only while the proxy splits.
func TestRouteInfoShowsTheSplit(t *testing.T) {
	_, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	ctx := context.Background()
	split(t, store, b, config.Blue, 25, true)
	ri, err := b.Route(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ri.Active != config.Blue || len(ri.Weights) != 2 || ri.Weights[config.Blue] != 75 || ri.Weights[config.Green] != 25 || !ri.Sticky {
		t.Fatalf("split blue 75 + green 25 sticky: route info %+v", ri)
	}
	if _, page := get(t, b.Listen, "/monitoring"); !strings.Contains(page, "Canary: <b>green</b> gets 25% of new requests (sticky") {
		t.Errorf("/monitoring does not show the canary green at 25%% (sticky):\n%s", page)
	}
	split(t, store, b, config.Blue, 0, false)
	if ri, err = b.Route(ctx); err != nil {
		t.Fatal(err)
	}
	if ri.Active != config.Blue || ri.Weights != nil || ri.Sticky {
		t.Fatalf("no split: route info %+v, want blue without weights or sticky", ri)
	}
}

// cookieGet sends one GET with the cookie name=value ("" none) on client
// and returns the colour that served it and its Set-Cookie headers.
func cookieGet(t *testing.T, client *http.Client, addr, name, value string) (string, []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if value != "" {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	slot := resp.Header.Get("X-Bgd-Slot")
	if resp.StatusCode != http.StatusOK || string(body) != "demo app: color="+slot {
		t.Fatalf("GET with cookie %s=%q: %d %q, X-Bgd-Slot %q", name, value, resp.StatusCode, body, slot)
	}
	return slot, resp.Header.Values("Set-Cookie")
}

// TestStickySplit: in a sticky split a client without the cookie gets a
// Set-Cookie naming the colour that served it, and a client whose cookie
// names a colour gets that colour on 200 consecutive requests without a
// new cookie; a cookie naming no colour counts as none. A split that is not
// sticky, and a route without a split, ignore the cookie and set none.
func TestStickySplit(t *testing.T) {
	p, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	name := lb.StickyCookie("app")
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	split(t, store, b, config.Blue, 10, true)

	seen := map[string]int{}
	for range 200 {
		slot, cookies := cookieGet(t, client, p.Listen, name, "")
		want := name + "=" + slot + "; Path=/; HttpOnly; SameSite=Lax"
		if len(cookies) != 1 || cookies[0] != want {
			t.Fatalf("a client without the cookie, served by %s, got Set-Cookie %q, want %q", slot, cookies, want)
		}
		seen[slot]++
	}
	t.Logf("200 clients without the cookie at weight 10: %v", seen)
	if seen["blue"] == 0 || seen["green"] == 0 {
		t.Errorf("200 clients without the cookie were all served by one colour: %v", seen)
	}
	for _, color := range []string{"green", "blue"} {
		for i := range 200 {
			slot, cookies := cookieGet(t, client, p.Listen, name, color)
			if slot != color || len(cookies) != 0 {
				t.Fatalf("request %d with cookie %s=%s: served by %s with Set-Cookie %q, want %s and no cookie", i+1, name, color, slot, cookies, color)
			}
		}
	}
	if slot, cookies := cookieGet(t, client, p.Listen, name, "purple"); len(cookies) != 1 || !strings.HasPrefix(cookies[0], name+"="+slot+";") {
		t.Errorf("a cookie naming no colour: served by %s with Set-Cookie %q, want a cookie naming %s", slot, cookies, slot)
	}
	if slot, cookies := cookieGet(t, client, p.Listen, "bgd_other", "green"); len(cookies) != 1 || !strings.HasPrefix(cookies[0], name+"="+slot+";") {
		t.Errorf("another service's cookie: served by %s with Set-Cookie %q, want a cookie %s naming %s", slot, cookies, name, slot)
	}

	// Not sticky: the cookie is ignored, the weight decides.
	split(t, store, b, config.Blue, 10, false)
	c := drive(t, p.Listen, 1000, 4, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: name, Value: "green"}) })
	if len(c.failures) > 0 || c.cookies != 0 || c.slots["blue"] < 800 || c.slots["green"] == 0 {
		t.Errorf("non-sticky split at 10 with cookie green on 1000 requests: %s; want about 900 blue, no Set-Cookie", c)
	}
	// No split: everything to the active colour, whatever the cookie.
	split(t, store, b, config.Blue, 0, false)
	for range 50 {
		if slot, cookies := cookieGet(t, client, p.Listen, name, "green"); slot != "blue" || len(cookies) != 0 {
			t.Fatalf("no split, cookie green: served by %s with Set-Cookie %q, want blue and no cookie", slot, cookies)
		}
	}
}

// TestSlotSetCookieIsKept: the sticky cookie is added beside the slot's own
// cookies, never in their place.
func TestSlotSetCookieIsKept(t *testing.T) {
	slot := func(color config.Color) int {
		return backend(t, color.String(), func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "s1"})
			w.Header().Set("X-Slot", color.String())
			fmt.Fprintf(w, "demo app: color=%s", color)
		})
	}
	p, store, b := startProxy(t, slot(config.Blue), slot(config.Green))
	split(t, store, b, config.Blue, 50, true)
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(client.CloseIdleConnections)
	served, cookies := cookieGet(t, client, p.Listen, lb.StickyCookie("app"), "")
	if len(cookies) != 2 || !strings.Contains(strings.Join(cookies, "\n"), "session=s1") ||
		!strings.Contains(strings.Join(cookies, "\n"), lb.StickyCookie("app")+"="+served) {
		t.Fatalf("Set-Cookie %q, want the slot's session=s1 and %s=%s", cookies, lb.StickyCookie("app"), served)
	}
}

// TestWeightsChangeUnderLoad: keep-alive clients (POSTs, which Go's
// transport never replays, so every failure is seen) run while the split
// goes 10, 25, 50, 90, then promote (all to green) and back through a split
// to an abort (all to green again, the canary blue dropped): no request
// fails, and both colours serve while the split lasts.
func TestWeightsChangeUnderLoad(t *testing.T) {
	p, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	load := testsupport.StartLoad("http://"+p.Listen+"/", testsupport.LoadOptions{Clients: 8, KeepAlive: true})
	t.Cleanup(func() { load.Stop() })
	steps := []struct {
		active config.Color
		weight int
	}{{config.Blue, 10}, {config.Blue, 25}, {config.Blue, 50}, {config.Blue, 90}, {config.Green, 0},
		{config.Green, 30}, {config.Green, 0}, {config.Green, 5}, {config.Green, 60}, {config.Green, 0}}
	start := time.Now()
	for _, s := range steps {
		time.Sleep(150 * time.Millisecond)
		split(t, store, b, s.active, s.weight, false)
	}
	time.Sleep(150 * time.Millisecond)
	c := load.Stop()
	t.Logf("%d routing changes in %s under load: %s", len(steps), time.Since(start).Round(time.Millisecond), c)
	if c.Failures != 0 {
		t.Fatalf("requests failed while the weights changed: %s", c)
	}
	if c.Requests < 1000 || c.Slots["blue"] == 0 || c.Slots["green"] == 0 {
		t.Fatalf("the load did not run through both colours: %s", c)
	}
}

// TestPromoteAndAbortAreConfirmed: from a split, a plain flip to the canary
// (promote) and a plain flip back to only the active colour (abort) are
// confirmed by Flip from the proxy, which then sends everything to one
// colour. A route that ends the split while the state file still holds the
// canary, and a split the state file does not hold, are not confirmed.
func TestPromoteAndAbortAreConfirmed(t *testing.T) {
	p, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	b.ConfirmTimeout = 300 * time.Millisecond
	all := func(color string) {
		t.Helper()
		c := drive(t, p.Listen, 500, 4, nil)
		if len(c.failures) > 0 || c.slots[color] != 500 {
			t.Fatalf("want all 500 requests served by %s: %s", color, c)
		}
	}
	split(t, store, b, config.Blue, 20, true)
	// Abort: back to blue only.
	split(t, store, b, config.Blue, 0, false)
	all("blue")
	// Promote: green, the canary, takes everything.
	split(t, store, b, config.Blue, 20, false)
	split(t, store, b, config.Green, 0, false)
	all("green")
	if ri, _ := b.Route(context.Background()); ri.Weights != nil || ri.Active != config.Green {
		t.Fatalf("after the promote: route info %+v", ri)
	}

	// The state says green with a canary blue at 20; a route without the
	// split for that generation is not what the proxy serves.
	r := writeRouting(t, store, config.Green, 20, false)
	r.Active.Weight, r.Standby.Weight = 0, 0
	err := b.Flip(context.Background(), r)
	if !errors.Is(err, lb.ErrNotConfirmed) || !strings.Contains(err.Error(), "still holds a canary") {
		t.Fatalf("Flip without the split the state holds = %v, want not confirmed, naming the canary", err)
	}
	// And a split at 40 while the state says 20.
	r = writeRouting(t, store, config.Green, 20, false)
	r.Active.Weight, r.Standby.Weight = 60, 40
	err = b.Flip(context.Background(), r)
	if !errors.Is(err, lb.ErrNotConfirmed) || !strings.Contains(err.Error(), "green 80% + blue 20%") || !strings.Contains(err.Error(), "want green 60% + blue 40%") {
		t.Fatalf("Flip of a split the state does not hold = %v, want not confirmed naming both splits", err)
	}
}

// TestSplitWithCanarySlotDown: a canary whose slot does not listen costs
// only the requests routed to it: those are answered 502 by the proxy
// (counted for the canary's colour, with no sticky cookie, so the client
// draws again), every other one is served by the active slot.
func TestSplitWithCanarySlotDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p, store, b := startProxy(t, demoSlot(t, config.Blue), deadPort)
	split(t, store, b, config.Blue, 20, true)
	const n = 2000
	c := drive(t, p.Listen, n, 4, nil)
	bad := c.codes[http.StatusBadGateway]
	t.Logf("canary green down at weight 20: %s", c)
	if len(c.failures) > 0 || c.codes[http.StatusOK]+bad != n || c.slots["blue"] != c.codes[http.StatusOK] {
		t.Fatalf("want every request answered 200 by blue or 502: %s", c)
	}
	// Each request is drawn on its own: at 20% over 2 000 requests one
	// standard deviation is 0.9 points; ±4.5 (five of them) keeps a fair
	// draw from failing the test by chance (a ±3 band did, once in CI).
	if share := 100 * float64(bad) / n; share < 15.5 || share > 24.5 {
		t.Errorf("%d of %d requests (%.1f%%) answered 502, want about 20%% (the canary's weight)", bad, n, share)
	}
	if c.cookies != c.slots["blue"] {
		t.Errorf("%d answers carried a Set-Cookie, want exactly the %d that blue served (none on a 502)", c.cookies, c.slots["blue"])
	}
	_, m := get(t, p.Listen, "/metrics")
	if got := metricValue(t, m, `bgd_proxy_requests_total{code="502",service="app",slot="green"}`); got != float64(bad) {
		t.Errorf("/metrics counts %v 502s for green, the clients saw %d", got, bad)
	}
	if got := metricValue(t, m, `bgd_proxy_requests_total{code="502",service="app",slot="blue"}`); got != 0 {
		t.Errorf("/metrics counts %v 502s for blue, want 0", got)
	}
}

// connCounter is a slot that counts the connections it accepted and the
// ones that were closed.
type connCounter struct {
	port           int
	opened, closed atomic.Int32
}

func countingSlot(t *testing.T, color config.Color) *connCounter {
	c := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Slot", color.String())
		fmt.Fprintf(w, "demo app: color=%s", color)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			c.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			c.closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return c
}

// TestCanaryKeepsItsConnectionsWhileInTheSplit: a weight change leaves the
// proxy's idle connections to the canary open (they are reused); ending the
// split closes them.
func TestCanaryKeepsItsConnectionsWhileInTheSplit(t *testing.T) {
	blue, green := countingSlot(t, config.Blue), countingSlot(t, config.Green)
	p, store, b := startProxy(t, blue.port, green.port)
	split(t, store, b, config.Blue, 50, false)
	if c := drive(t, p.Listen, 200, 1, nil); len(c.failures) > 0 || c.slots["green"] == 0 {
		t.Fatalf("split at 50: %s", c)
	}
	opened := green.opened.Load()
	for _, w := range []int{30, 60, 40} {
		split(t, store, b, config.Blue, w, false)
		if c := drive(t, p.Listen, 200, 1, nil); len(c.failures) > 0 || c.slots["green"] == 0 {
			t.Fatalf("split at %d: %s", w, c)
		}
	}
	if o, cl := green.opened.Load(), green.closed.Load(); o != opened || cl != 0 {
		t.Fatalf("after 3 weight changes the canary green saw %d new connections and %d closed, want its one connection kept", o-opened, cl)
	}
	split(t, store, b, config.Blue, 0, false)
	deadline := time.Now().Add(2 * time.Second)
	for green.closed.Load() < green.opened.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the split ended, but the proxy keeps %d idle connections to green open", green.opened.Load()-green.closed.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if blue.closed.Load() != 0 {
		t.Errorf("ending the split closed %d connections to blue, which keeps all traffic", blue.closed.Load())
	}
}

// TestStickyColorReadsTheCookieHeader: the sticky cookie is found among
// other cookies and Cookie lines, in quotes or not; a value naming no
// colour, or a cookie of another name, is no colour.
func TestStickyColorReadsTheCookieHeader(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  config.Color
	}{
		{nil, ""},
		{[]string{"bgd_app=green"}, config.Green},
		{[]string{"a=1; bgd_app=blue; b=2"}, config.Blue},
		{[]string{"a=1", "bgd_app=green"}, config.Green},
		{[]string{`bgd_app="green"`}, config.Green},
		{[]string{"bgd_app=purple"}, ""},
		{[]string{"bgd_app=purple; bgd_app=blue"}, config.Blue},
		{[]string{"bgd_app2=green; xbgd_app=green"}, ""},
		{[]string{"bgd_app"}, ""},
		{[]string{"bgd_app=Green"}, ""},
	} {
		if got := stickyColor(tc.lines, "bgd_app"); got != tc.want {
			t.Errorf("Cookie %q: stickyColor = %q, want %q", tc.lines, got, tc.want)
		}
	}
}
