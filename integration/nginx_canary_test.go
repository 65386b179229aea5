package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/nginx"
)

// nginxSplitRoute is nginxRoute with the standby as a canary getting
// canary percent of new requests.
func nginxSplitRoute(active string, ports map[string]int, gen uint64, canary int, sticky bool) lb.Route {
	r := nginxRoute(active, ports, gen)
	r.Active.Weight, r.Standby.Weight, r.Sticky = 100-canary, canary, sticky
	return r
}

// nginxCanaryCount is what a batch of requests through nginx saw.
type nginxCanaryCount struct {
	slots      map[string]int // 200 answers by the demo app's X-Slot
	failures   int
	mislabeled int      // answers whose X-Bgd-Slot is not the X-Slot of the slot that served
	cookies    int      // answers carrying a Set-Cookie
	samples    []string // the first few failures and mislabels
}

func (c *nginxCanaryCount) note(format string, args ...any) {
	if len(c.samples) < 5 {
		c.samples = append(c.samples, fmt.Sprintf(format, args...))
	}
}

// nginxCanaryRequests sends n GETs to url from clients goroutines, each on
// its own keep-alive connection, with the cookie header cookie ("" for
// none), and counts who answered.
func nginxCanaryRequests(t *testing.T, url string, n, clients int, cookie string) nginxCanaryCount {
	t.Helper()
	var (
		mu   sync.Mutex
		c    = nginxCanaryCount{slots: map[string]int{}}
		left atomic.Int64
		wg   sync.WaitGroup
	)
	left.Store(int64(n))
	for range clients {
		wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1, Proxy: nil}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Timeout: 5 * time.Second, Transport: tr}
			for left.Add(-1) >= 0 {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				resp, err := hc.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				switch {
				case err != nil:
					c.failures++
					c.note("%v", err)
				case resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "demo app: color="+resp.Header.Get("X-Slot")):
					c.failures++
					c.note("status %d, X-Slot %q, body %q", resp.StatusCode, resp.Header.Get("X-Slot"), body)
				default:
					slot := resp.Header.Get("X-Slot")
					c.slots[slot]++
					if got := resp.Header.Get(nginx.SlotHeader); got != slot {
						c.mislabeled++
						c.note("served by %s, %s %q", slot, nginx.SlotHeader, got)
					}
					if resp.Header.Get("Set-Cookie") != "" {
						c.cookies++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return c
}

// TestNginxCanarySplit: a split at 10% and at 50% through a real nginx with
// two workers and real demo-app slots, measured over 10 000 keep-alive
// requests from 8 clients: the canary's share is within 2 points of its
// weight, every answer's X-Bgd-Slot names the slot that really served it,
// and Active still names the stable colour.
func TestNginxCanarySplit(t *testing.T) {
	t.Parallel()
	const requests, clients = 10000, 8
	n, ports := nginxPair(t, nginxSetup{})
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatalf("flip to blue: %v\nerror log:\n%s", err, n.errorLog())
	}
	for i, weight := range []int{10, 50} {
		r := nginxSplitRoute("blue", ports, uint64(i+2), weight, false)
		start := time.Now()
		if err := b.Flip(ctx, r); err != nil {
			t.Fatalf("flip to blue with green at %d%%: %v\nerror log:\n%s", weight, err, n.errorLog())
		}
		t.Logf("split blue %d%% / green %d%% confirmed in %s", 100-weight, weight, time.Since(start).Round(time.Millisecond))
		if active, err := b.Active(ctx); err != nil || active != config.Blue {
			t.Fatalf("Active during the split = %q, %v; want blue (the stable colour)", active, err)
		}
		start = time.Now()
		c := nginxCanaryRequests(t, n.url(), requests, clients, "")
		share := 100 * float64(c.slots["green"]) / float64(requests)
		t.Logf("weight %d%%: %d requests in %s: blue %d, green %d: canary share %.2f%% (%+.2f points), %d failed, %d mislabeled",
			weight, requests, time.Since(start).Round(time.Millisecond), c.slots["blue"], c.slots["green"], share, share-float64(weight), c.failures, c.mislabeled)
		if c.failures != 0 || c.mislabeled != 0 {
			t.Errorf("weight %d%%: %d failed, %d answers name the wrong slot: %q", weight, c.failures, c.mislabeled, c.samples)
		}
		if share < float64(weight)-2 || share > float64(weight)+2 {
			t.Errorf("weight %d%%: the canary got %.2f%% of the requests, not within 2 points", weight, share)
		}
		if c.cookies != 0 {
			t.Errorf("weight %d%%: %d answers of a split that is not sticky set a cookie", weight, c.cookies)
		}
		nginxCanaryWindows(t, n.url(), weight)
	}
}

// nginxCanaryWindows sends 500 GETs one after the other, each on a new
// connection (so that both workers take some), and checks that every 100
// consecutive answers include exactly weight from the canary (green): the
// weighted round-robin is one sequence for all the workers, not one per
// worker.
func nginxCanaryWindows(t *testing.T, url string, weight int) {
	t.Helper()
	var seq []bool
	for range 500 {
		slot, err := testsupport.AnsweredBy(url)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, slot == "green")
	}
	lo, hi := 100, 0
	for i := 0; i+100 <= len(seq); i++ {
		k := 0
		for _, g := range seq[i : i+100] {
			if g {
				k++
			}
		}
		lo, hi = min(lo, k), max(hi, k)
	}
	t.Logf("weight %d%%: canary answers per 100 consecutive new connections: %d-%d", weight, lo, hi)
	if lo != weight || hi != weight {
		t.Errorf("weight %d%%: 100 consecutive new connections got %d-%d answers from the canary, not exactly %d", weight, lo, hi, weight)
	}
}

// nginxStickyGet is one GET on a new connection with the cookie header
// cookie: the slot that answered, the slot header, and the Set-Cookie.
func nginxStickyGet(t *testing.T, url, cookie string) (slot, slotHeader, setCookie string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s with cookie %q: status %d", url, cookie, resp.StatusCode)
	}
	return resp.Header.Get("X-Slot"), resp.Header.Get(nginx.SlotHeader), resp.Header.Get("Set-Cookie")
}

// TestNginxCanarySticky: during a sticky 50/50 split a client without the
// cookie is told which colour served it; a client with it stays on its
// colour for 200 consecutive requests (on one keep-alive connection, and on
// new ones) and gets no new cookie; a cookie naming no colour counts as
// none. Once the split ends the cookie is ignored.
func TestNginxCanarySticky(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{})
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	name := lb.StickyCookie("app")
	if err := b.Flip(ctx, nginxSplitRoute("blue", ports, 1, 50, true)); err != nil {
		t.Fatalf("flip to a sticky split: %v\nerror log:\n%s", err, n.errorLog())
	}
	seen := map[string]int{}
	for _, cookie := range []string{"", name + "=red", "other=green"} {
		for range 20 {
			slot, header, set := nginxStickyGet(t, n.url(), cookie)
			if want := name + "=" + slot + "; Path=/; HttpOnly"; set != want || header != slot {
				t.Fatalf("cookie %q: served by %s with %s %q and Set-Cookie %q; want Set-Cookie %q", cookie, slot, nginx.SlotHeader, header, set, want)
			}
			seen[slot]++
		}
	}
	t.Logf("clients without a colour's cookie were served by %v and each told so", seen)
	if seen["blue"] == 0 || seen["green"] == 0 {
		t.Errorf("a 50/50 split sent 60 new clients to %v only", seen)
	}
	for _, col := range []string{"blue", "green"} {
		cookie := name + "=" + col
		c := nginxCanaryRequests(t, n.url(), 200, 1, cookie)
		if c.slots[col] != 200 || c.cookies != 0 || c.mislabeled != 0 {
			t.Errorf("200 keep-alive requests with %s: answered by %v, %d set a cookie, %d mislabeled, %d failed %q", cookie, c.slots, c.cookies, c.mislabeled, c.failures, c.samples)
		}
		for range 20 {
			if slot, _, set := nginxStickyGet(t, n.url(), cookie); slot != col || set != "" {
				t.Fatalf("new connection with %s: served by %s, Set-Cookie %q", cookie, slot, set)
			}
		}
	}
	// Promote: a plain flip to green. The cookie no longer matters.
	promote := nginxRoute("green", ports, 2)
	promote.Sticky = true
	if err := b.Flip(ctx, promote); err != nil {
		t.Fatalf("promote: %v\nerror log:\n%s", err, n.errorLog())
	}
	c := nginxCanaryRequests(t, n.url(), 200, 2, name+"=blue")
	if c.slots["green"] != 200 || c.cookies != 0 {
		t.Errorf("after the promote, 200 requests with %s=blue: answered by %v, %d set a cookie (%q)", name, c.slots, c.cookies, c.samples)
	}
}

// TestNginxCanaryPromoteAbort: from a split, a plain flip to the canary
// (promote) and a plain flip to the stable colour alone (abort) are both
// confirmed by nginx, after which every new request goes to that one
// colour and Active names it.
func TestNginxCanaryPromoteAbort(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{})
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	steps := []struct {
		what   string
		route  lb.Route
		only   string // "": a split, both colours must answer
		active config.Color
	}{
		{"start on blue", nginxRoute("blue", ports, 1), "blue", config.Blue},
		{"canary green at 30%", nginxSplitRoute("blue", ports, 2, 30, true), "", config.Blue},
		{"promote green", nginxRoute("green", ports, 3), "green", config.Green},
		{"canary blue at 20%", nginxSplitRoute("green", ports, 4, 20, false), "", config.Green},
		{"abort: green alone", nginxRoute("green", ports, 5), "green", config.Green},
	}
	for _, s := range steps {
		start := time.Now()
		if err := b.Flip(ctx, s.route); err != nil {
			t.Fatalf("%s: %v\nerror log:\n%s", s.what, err, n.errorLog())
		}
		took := time.Since(start)
		if active, err := b.Active(ctx); err != nil || active != s.active {
			t.Fatalf("%s: Active = %q, %v; want %s", s.what, active, err, s.active)
		}
		c := nginxCanaryRequests(t, n.url(), 400, 4, "")
		t.Logf("%s: confirmed in %s; 400 requests: %v", s.what, took.Round(time.Millisecond), c.slots)
		if c.failures != 0 || c.mislabeled != 0 {
			t.Fatalf("%s: %d failed, %d mislabeled: %q", s.what, c.failures, c.mislabeled, c.samples)
		}
		if s.only != "" && c.slots[s.only] != 400 {
			t.Fatalf("%s: answered by %v, want %s alone", s.what, c.slots, s.only)
		}
		if s.only == "" && (c.slots["blue"] == 0 || c.slots["green"] == 0) {
			t.Fatalf("%s: a split answered by %v", s.what, c.slots)
		}
		if got := nginxGet(t, n.url()).Generation; got != fmt.Sprint(s.route.Generation) {
			t.Fatalf("%s: answers under generation %q", s.what, got)
		}
	}
}

// TestNginxCanaryWeightsUnderLoad changes the weights 12 times (10, 25, 50,
// a promote, then a canary of the other colour and an abort, twice) under
// load through a real nginx. Clients that open a new connection per request
// must see zero failures; keep-alive clients (POST, never retried by Go's
// transport) lose requests on the connections each reload closes: counted
// and printed, not asserted to be zero (see TestNginxLoad).
func TestNginxCanaryWeightsUnderLoad(t *testing.T) {
	// Not parallel: the numbers should not depend on the other tests.
	const newConnClients, keepAliveClients = 4, 4
	n, ports := nginxPair(t, nginxSetup{})
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxRoute("blue", ports, 1)); err != nil {
		t.Fatal(err)
	}
	var routes []lb.Route
	gen := uint64(1)
	next := func() uint64 { gen++; return gen }
	for _, stable := range []string{"blue", "green"} {
		canary := config.Color(stable).Other().String()
		for _, w := range []int{10, 25, 50} {
			routes = append(routes, nginxSplitRoute(stable, ports, next(), w, w == 25))
		}
		routes = append(routes, nginxRoute(canary, ports, next())) // promote
	}
	routes = append(routes, nginxSplitRoute("blue", ports, next(), 10, false), nginxRoute("blue", ports, next())) // abort
	routes = append(routes, nginxSplitRoute("blue", ports, next(), 50, true), nginxRoute("blue", ports, next()))  // abort
	l := startNginxLoad(n.url(), newConnClients, keepAliveClients)
	time.Sleep(200 * time.Millisecond)
	var took []time.Duration
	for _, r := range routes {
		start := time.Now()
		if err := b.Flip(ctx, r); err != nil {
			l.stop()
			t.Fatalf("flip to %s %d%% / %s %d%%: %v\nerror log:\n%s", r.Active.Color, r.Active.Weight, r.Standby.Color, r.Standby.Weight, err, n.errorLog())
		}
		took = append(took, time.Since(start))
		time.Sleep(100 * time.Millisecond) // traffic between flips
	}
	nc, ka := l.stop()
	t.Logf("%d weight changes under load, confirmed in %v", len(routes), took)
	t.Logf("new-connection clients (%d): %s", newConnClients, nc)
	t.Logf("keep-alive clients (%d, POST): %s", keepAliveClients, ka)
	if nc.Failures != 0 {
		t.Errorf("%d requests on new connections failed while the weights changed", nc.Failures)
	}
	if nc.Slots["blue"] == 0 || nc.Slots["green"] == 0 {
		t.Errorf("traffic did not reach both slots: %v", nc.Slots)
	}
	if ka.Failures != ka.ReusedFailures {
		t.Errorf("%d keep-alive requests failed on fresh connections", ka.Failures-ka.ReusedFailures)
	}
}

// TestNginxCanaryDocsExample: the documented upstream-only template and
// site of docs/nginx.md split too: a 20% canary through the site is within
// 2 points over 2000 requests, Active names the stable colour, and a sticky
// split, which that template cannot route, is refused before anything is
// written.
func TestNginxCanaryDocsExample(t *testing.T) {
	t.Parallel()
	n, ports := nginxPair(t, nginxSetup{})
	sitePort := freePort(t)
	site := strings.Replace(docsBlock(t, "site"), "listen 80;", "listen 127.0.0.1:"+fmt.Sprint(sitePort)+";", 1)
	if err := os.WriteFile(filepath.Join(filepath.Dir(n.file), "shop.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := filepath.Join(t.TempDir(), "app-upstream.conf.tmpl")
	if err := os.WriteFile(tmpl, []byte(docsBlock(t, "upstream-template")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := n.cfg()
	cfg.Template = tmpl
	b := newNginxBalancer(t, cfg, nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxSplitRoute("blue", ports, 1, 20, false)); err != nil {
		t.Fatalf("flip to a split: %v\nerror log:\n%s", err, n.errorLog())
	}
	if active, err := b.Active(ctx); err != nil || active != config.Blue {
		t.Fatalf("Active = %q, %v; want blue", active, err)
	}
	const requests = 2000
	c := nginxCanaryRequests(t, fmt.Sprintf("http://127.0.0.1:%d/", sitePort), requests, 4, "")
	// The site sets no X-Bgd-Slot: count only who served.
	share := 100 * float64(c.slots["green"]) / requests
	t.Logf("documented template, 20%% canary: %v over %d requests: %.2f%%, %d failed", c.slots, requests, share, c.failures)
	if c.failures != 0 || share < 18 || share > 22 {
		t.Errorf("through the documented site: %v, %d failed (%q); want green within 2 points of 20%%", c.slots, c.failures, c.samples)
	}
	before, _ := os.ReadFile(n.file)
	if err := b.Flip(ctx, nginxSplitRoute("blue", ports, 2, 20, true)); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "$cookie_bgd_app") {
		t.Fatalf("sticky split through a template that reads no cookie = %v; want config.ErrInvalid naming $cookie_bgd_app", err)
	}
	if after, _ := os.ReadFile(n.file); !bytes.Equal(after, before) {
		t.Fatalf("a refused split changed %s", n.file)
	}
}

// TestNginxCanaryDown: when the canary's process is gone, nginx retries each
// request that the canary refused on the active slot, so neither clients of
// the split nor clients pinned to the canary by their cookie see a failure;
// the pinned ones keep their cookie (no new one is set).
func TestNginxCanaryDown(t *testing.T) {
	t.Parallel()
	n := newNginx(t, nginxSetup{})
	ports := map[string]int{"blue": freePort(t), "green": freePort(t)}
	startDemoApp(t, ports["blue"], "blue", "v1")
	green := startDemoApp(t, ports["green"], "green", "v2")
	b := newNginxBalancer(t, n.cfg(), nginx.Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, nginxSplitRoute("blue", ports, 1, 50, true)); err != nil {
		t.Fatalf("flip to a split: %v\nerror log:\n%s", err, n.errorLog())
	}
	green.Process.Kill()
	green.Wait()
	c := nginxCanaryRequests(t, n.url(), 400, 4, "")
	t.Logf("50%% canary down: 400 requests without a cookie: %v, %d failed", c.slots, c.failures)
	if c.slots["blue"] != 400 || c.mislabeled != 0 {
		t.Errorf("with the canary down: %v, %d failed, %d mislabeled (%q); want all 400 answered by blue", c.slots, c.failures, c.mislabeled, c.samples)
	}
	if a := nginxGet(t, n.url()); a.Status != http.StatusOK || a.Slot != "blue" {
		t.Errorf("with the canary down: status %d from %q", a.Status, a.Slot)
	}
	pinned := nginxCanaryRequests(t, n.url(), 100, 2, lb.StickyCookie("app")+"=green")
	t.Logf("100 requests pinned to the dead canary: %v, %d failed, %d set a cookie", pinned.slots, pinned.failures, pinned.cookies)
	if pinned.slots["blue"] != 100 || pinned.mislabeled != 0 || pinned.cookies != 0 {
		t.Errorf("pinned to the dead canary: %v, %d failed, %d mislabeled, %d set a cookie (%q); want all 100 answered by blue, no cookie",
			pinned.slots, pinned.failures, pinned.mislabeled, pinned.cookies, pinned.samples)
	}
	if err := b.Flip(ctx, nginxRoute("blue", ports, 2)); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if c := nginxCanaryRequests(t, n.url(), 100, 2, lb.StickyCookie("app")+"=green"); c.slots["blue"] != 100 {
		t.Errorf("after the abort, clients pinned to green: %v, %d failed (%q)", c.slots, c.failures, c.samples)
	}
}
