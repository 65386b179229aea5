package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// setShadow writes shadow on or off into the state, as bgd shadow does,
// and has the balancer confirm it.
func setShadow(t testing.TB, store *state.Store, b *Balancer, on bool) {
	t.Helper()
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Shadow = on
	st.Generation++
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	if err := b.Flip(context.Background(), shadowRoute(st, on)); err != nil {
		t.Fatal(err)
	}
}

func shadowRoute(st *state.State, on bool) lb.Route {
	a, s := st.ActiveVersion, st.ActiveVersion.Other()
	return lb.Route{Service: "app", Generation: st.Generation, Shadow: on,
		Active:  lb.Upstream{Color: a, Host: lb.LocalHost, Port: st.Slot(a).Port},
		Standby: lb.Upstream{Color: s, Host: lb.LocalHost, Port: st.Slot(s).Port}}
}

// recorder is a standby that records what it receives.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	code int
}

type recorded struct {
	method, uri, host, shadow, xff string
	body                           []byte
}

func (rc *recorder) handler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.RequestURI(), r.Host, r.Header.Get(ShadowHeader), r.Header.Get("X-Forwarded-For"), body})
	code := rc.code
	rc.mu.Unlock()
	if code != 0 {
		w.WriteHeader(code)
	}
	fmt.Fprint(w, "green")
}

func (rc *recorder) got() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

// shadowCounts waits until the proxy's counts add up to n (or 5 s pass)
// and returns them.
func shadowCounts(t *testing.T, b *Balancer, n uint64) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ri, err := b.Route(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ri.Shadow == nil {
			t.Fatal("the proxy's route has no shadow part while shadow is on")
		}
		var sum uint64
		for _, v := range ri.Shadow.Counts {
			sum += v
		}
		if sum >= n || time.Now().After(deadline) {
			return ri.Shadow.Counts
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShadowCopiesEachRequest: with shadow on, each client request reaches
// the standby once, with its method, path, query, Host, body and the
// client's address, marked X-Bgd-Shadow: 1; the clients see only the
// active slot's answers; the counts say "same" for each.
func TestShadowCopiesEachRequest(t *testing.T) {
	rec := &recorder{}
	blue, green := backend(t, "blue", nil), backend(t, "green", rec.handler)
	p, store, b := startProxy(t, blue, green)
	setShadow(t, store, b, true)
	const n = 40
	for i := range n {
		var resp *http.Response
		var err error
		if i%2 == 0 {
			resp, err = http.Get(fmt.Sprintf("http://%s/get/%d?q=%d", p.Listen, i, i))
		} else {
			resp, err = http.Post(fmt.Sprintf("http://%s/post/%d", p.Listen, i), "text/plain", strings.NewReader(strings.Repeat("x", i*1000)))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "blue" || resp.Header.Get("X-Bgd-Slot") != "blue" {
			t.Fatalf("request %d: the client got %q from %q, want the active slot's answer (blue)", i, body, resp.Header.Get("X-Bgd-Slot"))
		}
	}
	counts := shadowCounts(t, b, n)
	if counts[ShadowSame] != n {
		t.Errorf("counts %v: want %d same", counts, n)
	}
	got := rec.got()
	if len(got) != n {
		t.Fatalf("the standby got %d requests for %d client requests", len(got), n)
	}
	seen := map[string]recorded{}
	for _, g := range got {
		seen[g.uri] = g
	}
	for i := range n {
		uri, method, body := fmt.Sprintf("/get/%d?q=%d", i, i), http.MethodGet, ""
		if i%2 == 1 {
			uri, method, body = fmt.Sprintf("/post/%d", i), http.MethodPost, strings.Repeat("x", i*1000)
		}
		g, ok := seen[uri]
		switch {
		case !ok:
			t.Errorf("no copy of %s %s", method, uri)
		case g.method != method || string(g.body) != body || g.shadow != "1" || g.host != p.Listen || g.xff != "127.0.0.1":
			t.Errorf("copy of %s %s: method %s, %d body bytes, X-Bgd-Shadow %q, Host %q, X-Forwarded-For %q; want %s, %d bytes, 1, %s, 127.0.0.1",
				method, uri, g.method, len(g.body), g.shadow, g.host, g.xff, method, len(body), p.Listen)
		}
	}
	// Off: no more copies, and the route says so.
	setShadow(t, store, b, false)
	get(t, p.Listen, "/after-off")
	if ri, _ := b.Route(context.Background()); ri.Shadow != nil {
		t.Errorf("route after shadow off still has %+v", ri.Shadow)
	}
	time.Sleep(50 * time.Millisecond)
	if len(rec.got()) != n {
		t.Errorf("the standby got %d requests after shadow off, want still %d", len(rec.got()), n)
	}
}

// TestShadowComparesAndRefusesLargeBodies: a standby answering another
// status class counts as differs; a body over ShadowBodyCap is not copied
// (too_large) while the client's request goes through whole; the metrics
// carry the same counts.
func TestShadowComparesAndRefusesLargeBodies(t *testing.T) {
	rec := &recorder{code: http.StatusInternalServerError}
	var blueBytes int
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		blueBytes = len(b)
		fmt.Fprint(w, "blue")
	})
	green := backend(t, "green", rec.handler)
	p, store, b := startProxy(t, blue, green)
	setShadow(t, store, b, true)
	get(t, p.Listen, "/one")
	// A small body without a length (chunked) is copied whole.
	resp, err := http.Post("http://"+p.Listen+"/chunked", "text/plain", io.MultiReader(strings.NewReader("small body")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	big := bytes.Repeat([]byte("y"), ShadowBodyCap+1)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(big)
		if chunked {
			body = io.MultiReader(bytes.NewReader(big)) // no length: sent chunked
		}
		resp, err := http.Post("http://"+p.Listen+"/big", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || blueBytes != len(big) {
			t.Fatalf("large body (chunked %v): status %d, the active slot read %d bytes of %d", chunked, resp.StatusCode, blueBytes, len(big))
		}
	}
	counts := shadowCounts(t, b, 4)
	if counts[ShadowDiffers] != 2 || counts[ShadowTooLarge] != 2 || counts[ShadowSame] != 0 {
		t.Errorf("counts %v: want differs 2, too_large 2", counts)
	}
	got := rec.got()
	uris := map[string]string{}
	for _, g := range got {
		uris[g.uri] = string(g.body)
	}
	if len(got) != 2 || uris["/chunked"] != "small body" || uris["/one"] != "" {
		t.Errorf("the standby got %d requests (%v), want /one and /chunked with its body", len(got), uris)
	}
	_, metrics := get(t, p.Listen, "/metrics")
	for _, want := range []string{
		`bgd_proxy_shadow_requests_total{result="differs",service="app"} 2`,
		`bgd_proxy_shadow_requests_total{result="too_large",service="app"} 2`,
		`bgd_proxy_shadow_duration_seconds_count{service="app"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestShadowNeverHoldsClients: a standby that never answers in time and
// one that is down cost the clients nothing: every answer is the active
// slot's, copies beyond the queue are dropped and counted, failed ones
// counted as errors.
func TestShadowNeverHoldsClients(t *testing.T) {
	release := make(chan struct{})
	stuck := backend(t, "green", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	blue := backend(t, "blue", nil)
	p, store, b := startProxy(t, blue, stuck)
	setShadow(t, store, b, true)
	n := ShadowQueue + ShadowWorkers + 100
	var slowest time.Duration
	for range n {
		start := time.Now()
		if code, body := get(t, p.Listen, "/"); code != 200 || body != "blue" {
			t.Fatalf("client got %d %q", code, body)
		}
		slowest = max(slowest, time.Since(start))
	}
	ri, _ := b.Route(context.Background())
	t.Logf("stuck standby: %d client requests, slowest %s; counts %v", n, slowest, ri.Shadow.Counts)
	if d := ri.Shadow.Counts[ShadowDropped]; d < 100 {
		t.Errorf("dropped %d copies, want at least 100 with %d requests for a queue of %d and %d stuck workers", d, n, ShadowQueue, ShadowWorkers)
	}
	close(release)

	// The standby down: connection refused for each copy.
	dead := freeAddr(t)
	var port int
	fmt.Sscanf(dead[strings.LastIndex(dead, ":")+1:], "%d", &port)
	st, _ := store.Load()
	st.GreenPort = port
	st.Generation++
	store.Save(st)
	if err := b.Flip(context.Background(), shadowRoute(st, true)); err != nil {
		t.Fatal(err)
	}
	before := shadowCounts(t, b, 0)[ShadowError]
	for range 50 {
		if code, body := get(t, p.Listen, "/"); code != 200 || body != "blue" {
			t.Fatalf("with the standby down, a client got %d %q", code, body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for shadowCounts(t, b, 0)[ShadowError]-before < 50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := shadowCounts(t, b, 0)[ShadowError] - before; got != 50 {
		t.Errorf("with the standby down, %d errors counted for 50 copies", got)
	}
}

// TestShadowFlipConfirmation: Flip confirms the shadow setting as it does
// the colour: a route asking for shadow that the state file does not hold
// is not confirmed, and the error says why; the copies follow a flip to the
// new standby.
func TestShadowFlipConfirmation(t *testing.T) {
	rec := &recorder{}
	blue, green := backend(t, "blue", rec.handler), backend(t, "green", nil)
	p, store, b := startProxy(t, blue, green)
	b.ConfirmTimeout = 200 * time.Millisecond
	st, _ := store.Load()
	st.Generation++
	store.Save(st)
	err := b.Flip(context.Background(), shadowRoute(st, true))
	if !errors.Is(err, lb.ErrNotConfirmed) || !strings.Contains(err.Error(), "does not say shadow") {
		t.Fatalf("Flip with shadow the state lacks: %v, want not confirmed naming the shadow", err)
	}
	if !b.Capabilities().Shadow {
		t.Fatal("Capabilities().Shadow = false")
	}
	setShadow(t, store, b, true)
	flipKeep := func(color config.Color) {
		st, _ := store.Load()
		st.ActiveVersion = color
		st.Generation++
		store.Save(st)
		if err := b.Flip(context.Background(), shadowRoute(st, true)); err != nil {
			t.Fatal(err)
		}
	}
	flipKeep(config.Green)
	if code, body := get(t, p.Listen, "/x"); code != 200 || body != "green" {
		t.Fatalf("after the flip the client got %d %q", code, body)
	}
	ri, _ := b.Route(context.Background())
	if ri.Shadow == nil || ri.Shadow.Standby != config.Blue {
		t.Fatalf("after the flip to green the shadow is %+v, want copies to blue", ri.Shadow)
	}
	shadowCounts(t, b, 1)
	if got := rec.got(); len(got) != 1 || got[0].uri != "/x" {
		t.Errorf("blue, the new standby, got %v", got)
	}
	out, err := b.Render(shadowRoute(st, true))
	if err != nil || !strings.Contains(string(out), "shadow copies to") {
		t.Errorf("Render: %q, %v", out, err)
	}
}

// TestShadowHeaderOnlyOnCopies: a client cannot pass its request off as a
// copy: the X-Bgd-Shadow it sends is removed, with shadow on or off, and
// only the copy carries it.
func TestShadowHeaderOnlyOnCopies(t *testing.T) {
	active, standby := &recorder{}, &recorder{}
	blue, green := backend(t, "blue", active.handler), backend(t, "green", standby.handler)
	p, store, b := startProxy(t, blue, green)
	send := func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.Listen+"/x", nil)
		req.Header.Set(ShadowHeader, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send()
	setShadow(t, store, b, true)
	send()
	shadowCounts(t, b, 1)
	for _, g := range active.got() {
		if g.shadow != "" {
			t.Errorf("the active slot got X-Bgd-Shadow %q from a client", g.shadow)
		}
	}
	if got := standby.got(); len(got) != 1 || got[0].shadow != "1" {
		t.Errorf("the standby got %v, want one copy marked X-Bgd-Shadow: 1", got)
	}
}

// BenchmarkServeHTTPShadow: no split, with a copy of each request queued
// for the standby (the workers' sending runs alongside; copies beyond the
// queue are dropped).
func BenchmarkServeHTTPShadow(b *testing.B) {
	benchServeHTTP(b, func(t testing.TB, store *state.Store, bal *Balancer) {
		setShadow(t, store, bal, true)
	}, "")
}
