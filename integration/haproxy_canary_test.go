package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

// canarySetup says how to build the HAProxy of a canary test.
type canarySetup struct {
	// sticky renders the split backend with the sticky cookie.
	sticky bool
	// noSplit leaves the split backend out of the configuration.
	noSplit bool
	// splitExtra is appended to the split backend's section.
	splitExtra string
	// globalExtra is appended to the snippet's global section.
	globalExtra string
}

// newCanaryHAProxy is newHAProxy with the split backend as the driver
// renders it (sticky or not, or left out): a real HAProxy in master-worker
// mode, with the map file saying "app app_blue".
func newCanaryHAProxy(t *testing.T, bluePort, greenPort int, s canarySetup) *testHAProxy {
	t.Helper()
	return newHAProxy(t, bluePort, greenPort, haSetup{sticky: s.sticky, edit: func(t *testing.T, snippet []byte) []byte {
		const splitStart = "\n# both colours"
		if !bytes.Contains(snippet, []byte(splitStart+", for a canary")) || !bytes.Contains(snippet, []byte("\nbackend app_split\n")) {
			t.Fatalf("the rendered snippet has no split backend app_split:\n%s", snippet)
		}
		if s.noSplit {
			snippet = snippet[:bytes.Index(snippet, []byte(splitStart))]
		}
		if s.splitExtra != "" {
			snippet = append(snippet, []byte("    "+s.splitExtra+"\n")...)
		}
		if s.globalExtra != "" {
			snippet = bytes.Replace(snippet, []byte(" level admin\n"), []byte(" level admin\n    "+s.globalExtra+"\n"), 1)
		}
		return snippet
	}})
}

// canaryRoute keeps active and gives the other colour weight percent.
func canaryRoute(active string, weight int, sticky bool, bluePort, greenPort int) lb.Route {
	r := haRoute(active, bluePort, greenPort)
	r.Active.Weight, r.Standby.Weight, r.Sticky = 100-weight, weight, sticky
	return r
}

// waitSplitUp waits until HAProxy's checks see both servers of the split
// backend UP.
func (h *testHAProxy) waitSplitUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rows, err := admin.New(h.sock).ShowStat(context.Background(), "app_split")
		up := 0
		for _, r := range rows {
			if r.Up() {
				up++
			}
		}
		if err == nil && up == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy never saw both servers of app_split UP: %+v %v", rows, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tally is what count saw.
type tally struct {
	slots    map[string]int
	failures int
	samples  []string
	cookies  map[string]int // Set-Cookie values received
}

func (c tally) share(color string) float64 {
	n := 0
	for _, v := range c.slots {
		n += v
	}
	return 100 * float64(c.slots[color]) / float64(max(n, 1))
}

// count sends n GETs through HAProxy from clients keep-alive Go clients
// (one connection each, n/clients requests each), each request with the
// cookie header when it is not "", and counts the answering colours.
func count(url string, n, clients int, cookie string) tally {
	var mu sync.Mutex
	c := tally{slots: map[string]int{}, cookies: map[string]int{}}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Timeout: 5 * time.Second, Transport: tr}
			for range n / clients {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				resp, err := hc.Do(req)
				var slot, setCookie string
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					slot, setCookie = resp.Header.Get("X-Slot"), resp.Header.Get("Set-Cookie")
					if err == nil && (resp.StatusCode != 200 || slot == "") {
						err = fmt.Errorf("status %d, X-Slot %q", resp.StatusCode, slot)
					}
				}
				mu.Lock()
				if err != nil {
					c.failures++
					if len(c.samples) < 5 {
						c.samples = append(c.samples, err.Error())
					}
				} else {
					c.slots[slot]++
					if setCookie != "" {
						c.cookies[setCookie]++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return c
}

// TestHAProxyCanarySplit: at 10% and 50%, 10 000 requests from keep-alive
// clients through a real HAProxy reach the canary in that share (±2
// points), none fails, the map names the split backend, HAProxy's weights
// are the percentages and Active names the stable colour (or says an even
// split cannot tell).
func TestHAProxyCanarySplit(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newCanaryHAProxy(t, bluePort, greenPort, canarySetup{})
	h.waitUp(t, "blue", "green")
	h.waitSplitUp(t)
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	for _, w := range []int{10, 50} {
		if err := b.Flip(ctx, canaryRoute("blue", w, false, bluePort, greenPort)); err != nil {
			t.Fatalf("canary of green at %d%%: %v", w, err)
		}
		if v := h.mapValue(t); v != "app_split" {
			t.Fatalf("map entry %q, want app_split", v)
		}
		if data, _ := os.ReadFile(h.mapFile); string(data) != "app app_split\napp@preview app_green\n" {
			t.Errorf("map file %q, want app app_split and the preview entry app_green", data)
		}
		for color, want := range map[string]int{"blue": 100 - w, "green": w} {
			if got, err := admin.New(h.sock).GetWeight(ctx, "app_split", color); err != nil || got.Current != want {
				t.Errorf("HAProxy's weight of app_split/%s: %+v, %v; want %d", color, got, err, want)
			}
		}
		start := time.Now()
		c := count(h.url(), 10000, 8, "")
		share := c.share("green")
		t.Logf("canary green at %d%%: %d requests in %s, by slot %v: green %.2f%%, %d failed %q",
			w, c.slots["blue"]+c.slots["green"], time.Since(start).Round(time.Millisecond), c.slots, share, c.failures, c.samples)
		if c.failures != 0 {
			t.Errorf("%d requests failed: %q", c.failures, c.samples)
		}
		if math.Abs(share-float64(w)) > 2 {
			t.Errorf("canary share %.2f%%, want %d%% ± 2", share, w)
		}
		if len(c.cookies) != 0 {
			t.Errorf("a split that is not sticky set cookies: %v", c.cookies)
		}
		got, err := b.Active(ctx)
		switch {
		case w < 50 && (err != nil || got != config.Blue):
			t.Errorf("Active at %d%%: %q, %v; want blue", w, got, err)
		case w == 50 && !errors.Is(err, haproxy.ErrEvenSplit):
			t.Errorf("Active at 50%%: %q, %v; want ErrEvenSplit", got, err)
		}
	}
}

// TestHAProxyCanaryPromoteAndAbort: promote is a plain flip to the canary,
// abort a plain flip back to the stable colour; each is confirmed, seen by
// new requests at once and written to the map file.
func TestHAProxyCanaryPromoteAndAbort(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newCanaryHAProxy(t, bluePort, greenPort, canarySetup{})
	h.waitUp(t, "blue", "green")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	step := func(what string, r lb.Route, routes, file string) {
		t.Helper()
		if err := b.Flip(ctx, r); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if data, _ := os.ReadFile(h.mapFile); string(data) != "app "+file+"\napp@preview app_"+r.Standby.Color.String()+"\n" {
			t.Fatalf("%s: map file %q, want app %s and the preview entry of %s", what, data, file, r.Standby.Color)
		}
		if routes != "" {
			h.assertRoutesTo(t, routes)
			if got, err := b.Active(ctx); err != nil || got != config.Color(routes) {
				t.Fatalf("%s: Active %q, %v; want %s", what, got, err, routes)
			}
		}
	}
	step("canary of green at 10%", canaryRoute("blue", 10, false, bluePort, greenPort), "", "app_split")
	step("promote green", haRoute("green", bluePort, greenPort), "green", "app_green")
	step("canary of blue at 30%", canaryRoute("green", 30, false, bluePort, greenPort), "", "app_split")
	if got, err := b.Active(ctx); err != nil || got != config.Green {
		t.Fatalf("Active during blue's canary: %q, %v; want green", got, err)
	}
	if c := count(h.url(), 1000, 4, ""); c.slots["blue"] == 0 || c.failures != 0 {
		t.Fatalf("blue's canary at 30%%: %v, %d failed", c.slots, c.failures)
	}
	step("abort blue's canary", haRoute("green", bluePort, greenPort), "green", "app_green")
	if c := count(h.url(), 1000, 4, ""); c.slots["blue"] != 0 || c.failures != 0 {
		t.Errorf("after the abort blue still answered: %v, %d failed", c.slots, c.failures)
	}
}

// TestHAProxyCanaryWeightsUnderLoad: weights change (10, 25, 50, 75, 5%),
// then promote, a new canary and an abort, while keep-alive POST clients
// and new-connection clients send requests through HAProxy: none fails.
func TestHAProxyCanaryWeightsUnderLoad(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newCanaryHAProxy(t, bluePort, greenPort, canarySetup{})
	h.waitUp(t, "blue", "green")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	alive := startHALoad(h.url(), "keep-alive clients", true, 4)
	fresh := startHALoad(h.url(), "new-connection clients", false, 2)
	steps := []lb.Route{}
	for range 3 {
		for _, w := range []int{10, 25, 50, 75, 5} {
			steps = append(steps, canaryRoute("blue", w, false, bluePort, greenPort))
		}
		steps = append(steps, haRoute("green", bluePort, greenPort), // promote
			canaryRoute("green", 20, false, bluePort, greenPort), haRoute("green", bluePort, greenPort), // abort
			haRoute("blue", bluePort, greenPort))
	}
	var lat []time.Duration
	for i, r := range steps {
		time.Sleep(40 * time.Millisecond)
		start := time.Now()
		if err := b.Flip(ctx, r); err != nil {
			alive.stop()
			fresh.stop()
			t.Fatalf("step %d (%s %d%%, %s %d%%): %v", i+1, r.Active.Color, r.Active.Weight, r.Standby.Color, r.Standby.Weight, err)
		}
		lat = append(lat, time.Since(start))
	}
	time.Sleep(100 * time.Millisecond)
	alive.stop()
	fresh.stop()
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	t.Logf("%d weight changes and flips, mean %s each", len(steps), total/time.Duration(len(steps)))
	for _, l := range []*haLoad{alive, fresh} {
		t.Logf("%s", l)
		if l.c.Failures != 0 {
			t.Errorf("%s: %d failed requests", l.name, l.c.Failures)
		}
		if l.c.Slots["blue"] == 0 || l.c.Slots["green"] == 0 || l.c.Requests < 300 {
			t.Errorf("%s: %d requests by slot %v: too light to mean anything", l.name, l.c.Requests, l.c.Slots)
		}
	}
	if alive.c.Reused < alive.c.Requests/2 {
		t.Errorf("keep-alive clients reused a connection for only %d of %d requests", alive.c.Reused, alive.c.Requests)
	}
}

// TestHAProxyCanarySticky: with the cookie in the split backend, a client
// without it gets Set-Cookie naming the colour that served it; a client
// with it gets its colour on 200 consecutive requests; a split that is not
// sticky is refused on that backend; once promoted the cookie is ignored
// and none is set.
func TestHAProxyCanarySticky(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	h := newCanaryHAProxy(t, bluePort, greenPort, canarySetup{sticky: true})
	h.waitUp(t, "blue", "green")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	name := lb.StickyCookie("app")

	err := b.Flip(ctx, canaryRoute("blue", 10, false, bluePort, greenPort))
	if !errors.Is(err, haproxy.ErrSticky) || !strings.Contains(err.Error(), `inserts cookie "bgd_app"`) {
		t.Errorf("a split that is not sticky on a sticky backend: %v, want ErrSticky", err)
	}
	if v := h.mapValue(t); v != "app_blue" {
		t.Fatalf("after a refused split the entry is %q, want app_blue", v)
	}
	if err := b.Flip(ctx, canaryRoute("blue", 50, true, bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	// Without the cookie: a Set-Cookie naming whoever answered.
	fresh := count(h.url(), 200, 1, "")
	for v, n := range fresh.cookies {
		color := strings.TrimSuffix(strings.TrimPrefix(v, name+"="), "; path=/; HttpOnly")
		if color != "blue" && color != "green" || !strings.HasPrefix(v, name+"="+color+"; ") {
			t.Errorf("Set-Cookie %q (%d times): want %s=<colour>; path=/; HttpOnly", v, n, name)
		}
	}
	if fresh.failures != 0 || fresh.cookies[name+"=blue; path=/; HttpOnly"] != fresh.slots["blue"] ||
		fresh.cookies[name+"=green; path=/; HttpOnly"] != fresh.slots["green"] || fresh.slots["blue"] == 0 || fresh.slots["green"] == 0 {
		t.Errorf("clients without the cookie: by slot %v, Set-Cookie %v, %d failed; want one Set-Cookie per answer naming its colour",
			fresh.slots, fresh.cookies, fresh.failures)
	}
	t.Logf("200 requests without the cookie at 50%%: by slot %v, Set-Cookie %v", fresh.slots, fresh.cookies)
	// With the cookie: 200 consecutive requests on its colour, no new cookie.
	for _, color := range []string{"green", "blue"} {
		c := count(h.url(), 200, 1, name+"="+color)
		if c.slots[color] != 200 || c.failures != 0 || len(c.cookies) != 0 {
			t.Errorf("cookie %s: by slot %v, %d failed, Set-Cookie %v; want 200 answers by %s and no Set-Cookie", color, c.slots, c.failures, c.cookies, color)
		}
	}
	// Promoted: no split, the cookie is ignored and none is set.
	if err := b.Flip(ctx, haRoute("green", bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	if c := count(h.url(), 200, 1, name+"=blue"); c.slots["green"] != 200 || len(c.cookies) != 0 {
		t.Errorf("after promote, cookie blue: by slot %v, Set-Cookie %v; want all green and no Set-Cookie", c.slots, c.cookies)
	}
}

// TestHAProxyCanaryRefusals: without the split backend, or with a sticky
// split on a backend without the cookie, a canary is refused with an error
// saying what to add, and HAProxy still routes everything to blue.
func TestHAProxyCanaryRefusals(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	for _, tc := range []struct {
		name   string
		setup  canarySetup
		sticky bool
		is     error
		says   []string
	}{
		{"no split backend", canarySetup{noSplit: true}, false, haproxy.ErrNoBackend,
			[]string{`backend "app_split" (lb.haproxy.split_backend) is not in HAProxy's running configuration`, "`bgd render` prints it"}},
		{"sticky without the cookie", canarySetup{}, true, haproxy.ErrSticky,
			[]string{"cookie bgd_app insert indirect nocache httponly", "canary.sticky: true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCanaryHAProxy(t, bluePort, greenPort, tc.setup)
			h.waitUp(t, "blue", "green")
			b := h.balancer(t, 5*time.Second)
			err := b.Flip(context.Background(), canaryRoute("blue", 10, tc.sticky, bluePort, greenPort))
			if !errors.Is(err, tc.is) {
				t.Fatalf("Flip = %v, want %v", err, tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			t.Logf("refused: %v", err)
			if v := h.mapValue(t); v != "app_blue" {
				t.Errorf("entry %q after a refused canary, want app_blue", v)
			}
			if data, _ := os.ReadFile(h.mapFile); string(data) != "app app_blue\n" {
				t.Errorf("map file %q after a refused canary", data)
			}
			if c := count(h.url(), 500, 4, ""); c.slots["blue"] != 500 {
				t.Errorf("after a refused canary: by slot %v, %d failed; want all 500 on blue", c.slots, c.failures)
			}
		})
	}
}

// TestHAProxyCanaryAcrossReload: a reload during a canary keeps the map
// entry (the file names the split backend) but restores the configuration's
// weights (blue 100, green 0 as rendered): every new request goes to blue.
// With server-state-file and load-server-state-from-file, and the state
// dumped (`show servers state`) before the reload, the weights survive.
func TestHAProxyCanaryAcrossReload(t *testing.T) {
	bluePort, greenPort := freePort(t), freePort(t)
	startDemoApp(t, bluePort, "blue", "v1")
	startDemoApp(t, greenPort, "green", "v2")
	stateDir, err := os.MkdirTemp("", "bgd-hastate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	stateFile := filepath.Join(stateDir, "servers.state")
	h := newCanaryHAProxy(t, bluePort, greenPort, canarySetup{
		globalExtra: "server-state-file " + stateFile,
		splitExtra:  "load-server-state-from-file global",
	})
	h.waitUp(t, "blue", "green")
	b := h.balancer(t, 5*time.Second)
	ctx := context.Background()
	weight := func(color string) int {
		t.Helper()
		w, err := admin.New(h.sock).GetWeight(ctx, "app_split", color)
		if err != nil {
			t.Fatal(err)
		}
		return w.Current
	}
	if err := b.Flip(ctx, canaryRoute("blue", 10, false, bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	h.reload(t)
	h.waitSplitUp(t)
	if v := h.mapValue(t); v != "app_split" {
		t.Fatalf("after a reload the entry is %q, want app_split (from the map file)", v)
	}
	if weight("blue") != 100 || weight("green") != 0 {
		t.Errorf("after a reload without saved state: weights blue %d green %d, want the configuration's 100 and 0", weight("blue"), weight("green"))
	}
	if c := count(h.url(), 1000, 4, ""); c.slots["blue"] != 1000 {
		t.Errorf("after a reload without saved state: by slot %v, %d failed; want all on blue", c.slots, c.failures)
	}

	if err := b.Flip(ctx, canaryRoute("blue", 10, false, bluePort, greenPort)); err != nil {
		t.Fatal(err)
	}
	state, err := testsupport.HAProxyCommand(h.sock, "show servers state")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stateFile, []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	h.reload(t)
	h.waitSplitUp(t)
	if weight("blue") != 90 || weight("green") != 10 {
		t.Errorf("after a reload with saved state: weights blue %d green %d, want 90 and 10", weight("blue"), weight("green"))
	}
	c := count(h.url(), 10000, 8, "")
	t.Logf("after a reload with saved server state: by slot %v, green %.2f%%, %d failed", c.slots, c.share("green"), c.failures)
	if c.failures != 0 || math.Abs(c.share("green")-10) > 2 {
		t.Errorf("after a reload with saved state: green %.2f%%, %d failed; want 10%% ± 2, none failed", c.share("green"), c.failures)
	}
	if got, err := b.Active(ctx); err != nil || got != config.Blue {
		t.Errorf("Active after the reload: %q, %v", got, err)
	}
}
