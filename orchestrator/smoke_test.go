package orchestrator

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// previewLB is a split-capable test driver with a preview route: an HTTP
// server standing for the load balancer, which answers a request with
// X-Bgd-Preview: 1 as the standby of the last prepared (or flipped) route
// would, with status[path] (default 200), and any other request as the
// active slot. noRule makes it ignore the header, like a configuration
// without bgd's preview rule.
type previewLB struct {
	splitLB
	srv *httptest.Server

	mu       sync.Mutex
	standby  config.Color
	routed   config.Color // the active colour
	status   map[string]int
	noRule   bool
	seen     []string // "preview /path" or "plain /path"
	prepared int
}

func newPreviewLB(t *testing.T) *previewLB {
	b := &previewLB{splitLB: splitLB{testLB{active: "blue"}}, standby: "green", routed: "blue", status: map[string]int{}}
	b.onFlip = func(r lb.Route) {
		b.mu.Lock()
		b.routed, b.standby = r.Active.Color, r.Standby.Color
		b.mu.Unlock()
	}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		preview := r.Header.Get(lb.PreviewHeader) == "1" && !b.noRule
		kind, slot := "plain ", b.routed
		if preview {
			kind, slot = "preview ", b.standby
		}
		b.seen = append(b.seen, kind+r.URL.RequestURI())
		w.Header().Set(lb.SlotHeader, slot.String())
		code := http.StatusOK
		if c, ok := b.status[r.URL.Path]; ok && preview {
			code = c
		}
		w.WriteHeader(code)
		if code >= 500 {
			w.Write([]byte("demo app: failing as told\nsecond line"))
		}
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *previewLB) PreviewURL(path string) (string, error) { return b.srv.URL + path, nil }

func (b *previewLB) PreparePreview(ctx context.Context, r lb.Route) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prepared++
	b.standby, b.routed = r.Standby.Color, r.Active.Color
	return nil
}

func (b *previewLB) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

func smokeRig(t *testing.T, paths ...string) (*rig, *previewLB) {
	t.Helper()
	b := newPreviewLB(t)
	r := newRig(t, b, func(s *config.Service) { s.Health.Smoke = paths })
	r.slot("blue", "v1")
	return r, b
}

// TestSmokePassesThenFlips: every path is asked through the preview route
// with the header, before the one flip.
func TestSmokePassesThenFlips(t *testing.T) {
	r, b := smokeRig(t, "/", "/api/ping?deep=1")
	b.onFlip = func(lb.Route) {
		if got := len(b.requests()); got != 2 {
			t.Errorf("flip after %d smoke requests, want 2", got)
		}
	}
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.requests(), ", "); got != "preview /, preview /api/ping?deep=1" {
		t.Errorf("smoke requests: %s", got)
	}
	if b.prepared != 1 || len(b.flips) != 1 || r.state().ActiveVersion != "green" {
		t.Errorf("prepared %d, flips %d, active %s; want 1, 1, green", b.prepared, len(b.flips), r.state().ActiveVersion)
	}
}

// TestSmokeRefusesTheDeploy: a smoke path answering 500 fails the deploy
// before any flip; the new slot is stopped and the failure recorded.
func TestSmokeRefusesTheDeploy(t *testing.T) {
	r, b := smokeRig(t, "/", "/api/ping")
	b.status["/api/ping"] = http.StatusInternalServerError
	_, err := r.o.Deploy(ctx, DeployOptions{Release: "bad"})
	want := "smoke check of green (release bad) failed: GET /api/ping answered 500 Internal Server Error: demo app: failing as told (a smoke path must answer 2xx); traffic stays on blue; green stopped"
	if !errors.Is(err, ErrFailed) || err == nil || err.Error() != want {
		t.Fatalf("deploy = %v\nwant %s", err, want)
	}
	st := r.state()
	if len(b.flips) != 0 || st.ActiveVersion != "blue" {
		t.Errorf("flips %d, active %s: want no flip, blue", len(b.flips), st.ActiveVersion)
	}
	if r.o.running(st, "green") {
		t.Errorf("green still runs after a failed smoke check")
	}
	if e := lastEvent(st); e.Action != "deploy" || e.Status != state.StatusFailed || e.Release != "bad" || !strings.Contains(e.Reason, "GET /api/ping answered 500") {
		t.Errorf("history: %+v", e)
	}
}

// TestSmokeNeedsTheStandbyToAnswer: a load balancer that routes the
// header to the active slot (no preview rule) fails the check, naming why.
func TestSmokeNeedsTheStandbyToAnswer(t *testing.T) {
	r, b := smokeRig(t, "/")
	b.noRule = true
	_, err := r.o.Deploy(ctx, DeployOptions{Release: "v2"})
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "was answered by blue, not by green: the load balancer's configuration lacks bgd's preview rule") {
		t.Fatalf("deploy = %v", err)
	}
	if len(b.flips) != 0 {
		t.Errorf("%d flips", len(b.flips))
	}
}

// TestSmokeBeforeSwitchCanaryAndPromote: the check guards every flip that
// sends traffic to the standby for the first time; --no-switch, a later
// canary weight and rollback run none.
func TestSmokeBeforeSwitchCanaryAndPromote(t *testing.T) {
	r, b := smokeRig(t, "/ready")
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", NoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.requests()); n != 0 {
		t.Errorf("deploy --no-switch made %d smoke requests", n)
	}
	b.status["/ready"] = http.StatusServiceUnavailable
	if _, err := r.o.Switch(ctx, "green", false); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "GET /ready answered 503") {
		t.Errorf("switch = %v", err)
	}
	if e := lastEvent(r.state()); e.Action != "switch" || e.Status != state.StatusFailed {
		t.Errorf("history after the refused switch: %+v", e)
	}
	n0 := len(b.requests())
	if _, err := r.o.Switch(ctx, "green", true); err != nil || len(b.requests()) != n0 || r.state().ActiveVersion != "green" {
		t.Fatalf("switch --force: %v, %d smoke requests, active %s; want no check and green", err, len(b.requests())-n0, r.state().ActiveVersion)
	}
	if _, err := r.o.Switch(ctx, "blue", true); err != nil {
		t.Fatal(err)
	}
	b.flips = nil
	if _, err := r.o.Canary(ctx, 10); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "GET /ready answered 503") {
		t.Errorf("canary 10 = %v", err)
	}
	if len(b.flips) != 0 || r.state().Canary != nil {
		t.Fatalf("flips %d, canary %+v after refused flips", len(b.flips), r.state().Canary)
	}
	delete(b.status, "/ready")
	if _, err := r.o.Canary(ctx, 10); err != nil {
		t.Fatal(err)
	}
	n := len(b.requests())
	if _, err := r.o.Canary(ctx, 30); err != nil {
		t.Fatal(err)
	}
	if len(b.requests()) != n {
		t.Errorf("a later canary weight ran the smoke check again")
	}
	b.status["/ready"] = http.StatusInternalServerError
	if _, err := r.o.Promote(ctx); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "traffic stays on blue, with 30% to the canary green") {
		t.Errorf("promote = %v", err)
	}
	if c := r.state().Canary; c == nil || c.Weight != 30 || lastFlip(&b.splitLB) != "blue 70 green 30" {
		t.Errorf("after the refused promote: canary %+v, lb %s", c, lastFlip(&b.splitLB))
	}
	n = len(b.requests())
	if _, err := r.o.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if len(b.requests()) != n {
		t.Errorf("rollback ran the smoke check")
	}
}

// TestSmokeOffAndUnsupported: without health.smoke nothing is asked; a
// driver without a preview route refuses health.smoke (exit 2).
func TestSmokeOffAndUnsupported(t *testing.T) {
	r, b := smokeRig(t)
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2"}); err != nil || len(b.requests()) != 0 || b.prepared != 0 {
		t.Errorf("deploy without health.smoke: %v, %d requests, %d prepared", err, len(b.requests()), b.prepared)
	}
	plain := &testLB{active: "blue"}
	r2 := newRig(t, plain, func(s *config.Service) { s.Health.Smoke = []string{"/"} })
	r2.slot("blue", "v1")
	_, err := r2.o.Deploy(ctx, DeployOptions{Release: "v2"})
	if !errors.Is(err, lb.ErrUnsupported) || !strings.Contains(err.Error(), "leave health.smoke out") || len(plain.flips) != 0 {
		t.Errorf("deploy through a driver without preview = %v (%d flips)", err, len(plain.flips))
	}
	if len(r2.host.started) != 0 {
		t.Errorf("deploy through a driver without preview started %d processes before refusing", len(r2.host.started))
	}
}

// TestSmokeBeforeACanaryDeploy: deploy --canary runs the smoke check
// before its first weight; a failure routes nothing and stops the slot.
func TestSmokeBeforeACanaryDeploy(t *testing.T) {
	r, b := smokeRig(t, "/")
	b.status["/"] = http.StatusBadGateway
	_, err := r.o.Deploy(ctx, DeployOptions{Release: "bad", Canary: 10})
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "GET / answered 502 Bad Gateway") || !strings.Contains(err.Error(), "green stopped") {
		t.Fatalf("deploy --canary 10 = %v", err)
	}
	if st := r.state(); len(b.flips) != 0 || st.Canary != nil || r.o.running(st, "green") {
		t.Errorf("after the refused canary: flips %d, canary %+v, green running %v", len(b.flips), st.Canary, r.o.running(st, "green"))
	}
	delete(b.status, "/")
	if _, err := r.o.Deploy(ctx, DeployOptions{Release: "v2", Canary: 10}); err != nil || lastFlip(&b.splitLB) != "blue 90 green 10" {
		t.Errorf("deploy --canary 10 of a good release: %v, lb %s", err, lastFlip(&b.splitLB))
	}
}

// TestSmokeDuringMaintenanceOrPause: the preview route answers 503 in
// maintenance and holds during a pause, so the smoke check says so at
// once instead of failing on a 503 or waiting for the pause.
func TestSmokeDuringMaintenanceOrPause(t *testing.T) {
	for name, set := range map[string]func(st *state.State){
		"maintenance": func(st *state.State) { st.Maintenance = true },
		"pause":       func(st *state.State) { st.Paused = &state.Pause{Since: state.Now(), Until: state.Now().Add(time.Hour)} },
	} {
		t.Run(name, func(t *testing.T) {
			r, b := smokeRig(t, "/")
			r.slot("green", "v2")
			set(r.store.st)
			_, err := r.o.Switch(ctx, "green", false)
			if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "smoke check of green (release v2): ") ||
				len(b.requests()) != 0 || len(b.flips) != 0 || r.state().ActiveVersion != "blue" {
				t.Fatalf("switch with %s = %v (%d smoke requests, %d flips)", name, err, len(b.requests()), len(b.flips))
			}
		})
	}
}
