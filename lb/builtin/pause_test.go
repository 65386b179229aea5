package builtin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// setHold writes a pause (until > 0: paused for that long from now; 0:
// not paused) or maintenance (page: its file) to the state file with a
// flip to active, and has Balancer.Flip confirm it.
func setHold(t *testing.T, store *state.Store, b *Balancer, active config.Color, until time.Duration, maint bool, page string) lb.Route {
	t.Helper()
	r := writeRouting(t, store, active, 0, false)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Paused, st.Maintenance, st.MaintenancePage = nil, maint, page
	if until > 0 {
		now := state.Now()
		st.Paused = &state.Pause{Since: now, Until: now.Add(until)}
		r.Pause = until
	}
	r.Maintenance = maint
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatalf("Flip (pause %s, maintenance %v): %v", until, maint, err)
	}
	return r
}

// heldResult is one request sent while the proxy pauses.
type heldResult struct {
	code  int
	body  string
	err   error
	ended time.Time
}

// sendHeld sends n concurrent GETs and waits until the proxy says it holds
// all of them; the results arrive on the channel.
func sendHeld(t *testing.T, b *Balancer, n int) <-chan heldResult {
	t.Helper()
	out := make(chan heldResult, n)
	for range n {
		go func() {
			resp, err := http.Get("http://" + b.Listen + "/")
			if err != nil {
				out <- heldResult{err: err, ended: time.Now()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- heldResult{code: resp.StatusCode, body: string(body), ended: time.Now()}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ri, err := b.Route(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ri.Held == int64(n) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy holds %d requests after 5s, want %d (route %+v)", ri.Held, n, ri)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPauseHoldsUntilResume: while paused, the proxy holds every new
// request (none is answered, none reaches a slot); a flip made meanwhile
// (blue to green) takes them, and the resume releases all of them to the
// new routing: 0 failed.
func TestPauseHoldsUntilResume(t *testing.T) {
	var slotHits sync.Map
	count := func(color string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			slotHits.Store(color, true)
			io.WriteString(w, color)
		}
	}
	blue, green := backend(t, "blue", count("blue")), backend(t, "green", count("green"))
	_, store, b := startProxy(t, blue, green)
	setHold(t, store, b, config.Blue, 30*time.Second, false, "")
	paused := time.Now()
	const n = 20
	results := sendHeld(t, b, n)
	if _, ok := slotHits.Load("blue"); ok {
		t.Fatal("a held request reached blue")
	}
	// A flip while paused: the routing changes, the requests stay held.
	setHold(t, store, b, config.Green, 30*time.Second, false, "")
	if ri, _ := b.Route(context.Background()); ri.Held != n || ri.Active != config.Green {
		t.Fatalf("after a flip while paused: %+v, want green holding %d", ri, n)
	}
	resumed := time.Now()
	setHold(t, store, b, config.Green, 0, false, "")
	var failed int
	var last time.Time
	for range n {
		r := <-results
		if r.err != nil || r.code != http.StatusOK || r.body != "green" {
			failed++
			t.Errorf("held request: %d %q %v, want 200 from green", r.code, r.body, r.err)
		}
		if r.ended.Before(resumed) {
			t.Errorf("a held request was answered before the resume")
		}
		if r.ended.After(last) {
			last = r.ended
		}
	}
	if _, ok := slotHits.Load("blue"); ok {
		t.Error("a held request went to blue, the routing before the flip")
	}
	t.Logf("%d requests held %s (pause to resume), all answered %s after the resume; %d failed",
		n, resumed.Sub(paused).Round(time.Millisecond), last.Sub(resumed).Round(time.Millisecond), failed)
	if code, body := get(t, b.Listen, "/"); code != http.StatusOK || body != "green" {
		t.Errorf("after resume: %d %q, want 200 green", code, body)
	}
}

// TestPauseTimeoutReleases: a pause whose deadline passes releases its
// requests by itself, without a resume, and the proxy no longer pauses.
func TestPauseTimeoutReleases(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	_, store, b := startProxy(t, blue, green)
	const timeout = 700 * time.Millisecond
	setHold(t, store, b, config.Blue, timeout, false, "")
	paused := time.Now()
	results := sendHeld(t, b, 5)
	for range 5 {
		r := <-results
		if r.err != nil || r.code != http.StatusOK || r.body != "blue" {
			t.Errorf("request held until the timeout: %d %q %v, want 200 blue", r.code, r.body, r.err)
		}
		t.Logf("released %s after the pause began (timeout %s)", r.ended.Sub(paused).Round(time.Millisecond), timeout)
	}
	ri, err := b.Route(context.Background())
	if err != nil || ri.Paused || ri.Held != 0 {
		t.Errorf("after the timeout: %+v, %v; want not paused, nothing held", ri, err)
	}
}

// TestPausedClientLeaves: a held request whose client gives up is dropped
// without reaching a slot, and no longer counts as held.
func TestPausedClientLeaves(t *testing.T) {
	var reached sync.Map
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) { reached.Store("blue", true) })
	_, store, b := startProxy(t, blue, backend(t, "green", nil))
	setHold(t, store, b, config.Blue, 30*time.Second, false, "")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.Listen+"/", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for ri, _ := b.Route(context.Background()); ri == nil || ri.Held != 1; ri, _ = b.Route(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatal("the request was never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("the cancelled request got an answer")
	}
	for ri, _ := b.Route(context.Background()); ri.Held != 0; ri, _ = b.Route(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatalf("still %d held after the client left", ri.Held)
		}
		time.Sleep(5 * time.Millisecond)
	}
	setHold(t, store, b, config.Blue, 0, false, "")
	if _, ok := reached.Load("blue"); ok {
		t.Error("the request of a client that left reached the slot")
	}
}

// TestMaintenanceAnswers503: in maintenance every request is answered 503
// with Retry-After and the page (no slot is asked); off, routing is back.
func TestMaintenanceAnswers503(t *testing.T) {
	var reached sync.Map
	blue := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) { reached.Store("blue", true); io.WriteString(w, "blue") })
	_, store, b := startProxy(t, blue, backend(t, "green", nil))
	// The operator's page, and its copy beside the state file (what bgd
	// maintenance on makes): the proxy answers the copy, never the file
	// the state names.
	page := filepath.Join(t.TempDir(), "maint.html")
	const html = "<html><body>back soon</body></html>\n"
	if err := os.WriteFile(page, []byte("not the copy"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(PagePath(store.Path), []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		page, body, ctype string
	}{{page, html, "text/html; charset=utf-8"}, {"", lb.DefaultMaintenancePage, "text/plain; charset=utf-8"}} {
		// Off first: Flip confirms maintenance by its flag, and a page
		// change alone could be confirmed before the proxy read it.
		setHold(t, store, b, config.Blue, 0, false, "")
		setHold(t, store, b, config.Blue, 0, true, c.page)
		for _, path := range []string{"/", "/api/x", "/health"} {
			resp, err := http.Get("http://" + b.Listen + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != lb.MaintenanceRetryAfter ||
				string(body) != c.body || resp.Header.Get("Content-Type") != c.ctype {
				t.Errorf("maintenance (page %q) GET %s: %d Retry-After %q %q %q", c.page, path, resp.StatusCode,
					resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), body)
			}
		}
	}
	if ri, _ := b.Route(context.Background()); !ri.Maintenance {
		t.Errorf("route info %+v does not say maintenance", ri)
	}
	if _, ok := reached.Load("blue"); ok {
		t.Error("a request reached the slot during maintenance")
	}
	setHold(t, store, b, config.Blue, 0, false, "")
	if code, body := get(t, b.Listen, "/"); code != http.StatusOK || body != "blue" {
		t.Errorf("after maintenance off: %d %q, want 200 blue", code, body)
	}
}

// TestBuiltinRendersHolds: Render says when a route pauses or is in
// maintenance.
func TestBuiltinRendersHolds(t *testing.T) {
	b := &Balancer{Listen: "127.0.0.1:1"}
	if c := b.Capabilities(); !c.Pause || !c.Maintenance {
		t.Fatalf("Capabilities = %+v, want pause and maintenance", c)
	}
	out, err := b.Render(sample(func(r *lb.Route) { r.Pause = 5 * time.Second }))
	if err != nil || !contains(out, "paused: new requests are held for at most 5s") {
		t.Errorf("Render of a pause = %q, %v", out, err)
	}
	out, err = b.Render(sample(func(r *lb.Route) { r.Maintenance = true }))
	if err != nil || !contains(out, "maintenance: every request is answered 503") {
		t.Errorf("Render of maintenance = %q, %v", out, err)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// TestPauseReleasedAtShutdown: a proxy that stops while paused releases its
// held requests, which are forwarded and answered within the graceful
// shutdown, rather than dropped.
func TestPauseReleasedAtShutdown(t *testing.T) {
	blue, green := backend(t, "blue", nil), backend(t, "green", nil)
	store := &state.Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	st := state.New(blue, green)
	now := state.Now()
	st.Paused = &state.Pause{Since: now, Until: now.Add(30 * time.Second)}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Service: "app", Listen: freeAddr(t), StatePath: store.Path, BluePort: blue, GreenPort: green}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(cancel)
	b := &Balancer{Listen: p.Listen}
	deadline := time.Now().Add(5 * time.Second)
	for ri, err := b.Route(ctx); err != nil || !ri.Paused; ri, err = b.Route(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never paused: %+v %v", ri, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	held := sendHeld(t, b, 3)
	stopped := time.Now()
	cancel()
	for range 3 {
		r := <-held
		if r.err != nil || r.code != http.StatusOK || r.body != "blue" {
			t.Errorf("a request held at shutdown: %d %q %v, want 200 from blue", r.code, r.body, r.err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	t.Logf("3 held requests answered and the proxy stopped %s after its context ended", time.Since(stopped).Round(time.Millisecond))
}

// TestFlipNotConfirmedWithoutTheHold: a route asking for a pause the state
// file does not hold is not confirmed, and the error says what to check.
func TestFlipNotConfirmedWithoutTheHold(t *testing.T) {
	_, store, b := startProxy(t, backend(t, "blue", nil), backend(t, "green", nil))
	b.ConfirmTimeout = 200 * time.Millisecond
	r := writeRouting(t, store, config.Blue, 0, false)
	r.Pause = time.Minute
	err := b.Flip(context.Background(), r)
	if !errors.Is(err, lb.ErrNotConfirmed) || !strings.Contains(err.Error(), "does not say paused") {
		t.Errorf("Flip of a pause the state does not hold = %v", err)
	}
}

// TestMaintenancePageNamedByAHostileState: a state file that names
// /dev/zero (or any file) as the maintenance page makes the proxy neither
// hang nor serve that file: it reads only the copy beside the state file,
// and without one answers the default text.
func TestMaintenancePageNamedByAHostileState(t *testing.T) {
	_, store, b := startProxy(t, backend(t, "blue", nil), backend(t, "green", nil))
	for _, named := range []string{"/dev/zero", "/etc/hostname"} {
		setHold(t, store, b, config.Blue, 0, true, named)
		code, body := get(t, b.Listen, "/")
		if code != http.StatusServiceUnavailable || body != lb.DefaultMaintenancePage {
			t.Errorf("maintenance page %s named by the state: %d %q, want 503 with the default text", named, code, body)
		}
		setHold(t, store, b, config.Blue, 0, false, "")
	}
}
