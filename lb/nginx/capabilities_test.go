package nginx

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestNginxRefusesWhatItsTemplateCannotSay: nginx cannot hold requests (a
// pause), and a split cannot tell which slot served when a slot's host is
// a name, so Flip refuses such a route before it writes the file or runs a
// command, and Render refuses it too. (Maintenance it renders:
// maintenance_test.go.)
func TestNginxRefusesWhatItsTemplateCannotSay(t *testing.T) {
	cases := []struct {
		feature lb.Feature
		mutate  func(*lb.Route)
	}{
		{lb.FeaturePause, func(r *lb.Route) { r.Pause = time.Second }},
		{lb.FeatureWeights, func(r *lb.Route) {
			r.Active.Weight, r.Standby.Weight, r.Standby.Host = 90, 10, "slot-b.internal"
		}},
	}
	for _, c := range cases {
		t.Run(string(c.feature), func(t *testing.T) {
			f, b := newFake(t)
			r := testRoute("green", 2)
			c.mutate(&r)
			lbtest.Refuses(t, b, r, "nginx", c.feature)
			if calls := f.callList(); calls != "" {
				t.Errorf("commands run for a refused route: %s", calls)
			}
			if _, err := os.Stat(f.file); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused route left %s behind (%v)", f.file, err)
			}
		})
	}
	_, b := newFake(t)
	r := testRoute("blue", 1)
	r.Pause, r.Maintenance = time.Second, true
	if _, err := b.Render(r); !errors.Is(err, lb.ErrInvalidRoute) {
		t.Errorf("Render of a paused route in maintenance = %v, want lb.ErrInvalidRoute", err)
	}
}

// TestNginxTakesTodaysRoutesAndRemoteHosts: weights written as 100/0 and a
// maintenance page without maintenance render exactly as today's route; a
// slot on another host is written into the upstream and flipped to.
func TestNginxTakesTodaysRoutesAndRemoteHosts(t *testing.T) {
	f, b := newFake(t)
	base, err := b.Render(testRoute("blue", 3))
	if err != nil {
		t.Fatal(err)
	}
	same := map[string]func(*lb.Route){
		"explicit 100/0":           func(r *lb.Route) { r.Active.Weight = 100 },
		"page without maintenance": func(r *lb.Route) { r.MaintenancePage = "<h1>later</h1>" },
		"sticky without a split":   func(r *lb.Route) { r.Sticky = true },
	}
	for name, mutate := range same {
		r := testRoute("blue", 3)
		mutate(&r)
		if out, err := b.Render(r); err != nil || !bytes.Equal(out, base) {
			t.Errorf("%s: Render = %v, want today's file byte for byte:\n%s", name, err, out)
		}
	}
	remote := testRoute("green", 4)
	remote.Active.Host, remote.Standby.Host = "10.0.0.7", "slot-b.internal"
	out, err := b.Render(remote)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server 10.0.0.7:5006;", "green (10.0.0.7:5006) is live, blue (slot-b.internal:5005) is standby"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("remote render lacks %q:\n%s", want, out)
		}
	}
	if err := b.Flip(context.Background(), remote); err != nil {
		t.Fatalf("Flip to a remote slot: %v", err)
	}
	if got, _ := os.ReadFile(f.file); !bytes.Equal(got, out) {
		t.Errorf("file after the flip:\n%s\nwant\n%s", got, out)
	}
	if calls := f.callList(); calls != "test,reload" {
		t.Errorf("commands %q, want test,reload", calls)
	}
}

// TestNginxTakesSplits: a weighted split (sticky or not) is flipped to:
// both slots in the upstream with their weights, and the sticky cookie
// routed by when asked. (integration/nginx_canary_test.go measures the
// split through a real nginx.)
func TestNginxTakesSplits(t *testing.T) {
	f, b := newFake(t)
	if !b.Capabilities().Weights {
		t.Fatal("Capabilities().Weights is false")
	}
	for _, sticky := range []bool{false, true} {
		r := testRoute("blue", 7)
		r.Active.Weight, r.Standby.Weight, r.Sticky = 90, 10, sticky
		out, err := b.Render(r)
		if err != nil {
			t.Fatalf("Render of a split (sticky %v): %v", sticky, err)
		}
		for _, want := range []string{"server 127.0.0.1:5005 weight=90;", "server 127.0.0.1:5006 weight=10;",
			"add_header X-Bgd-Active blue always;", `add_header X-Bgd-Weights "blue=90,green=10" always;`} {
			if !strings.Contains(string(out), want) {
				t.Errorf("split render (sticky %v) lacks %q:\n%s", sticky, want, out)
			}
		}
		if got := strings.Contains(string(out), "$cookie_bgd_app"); got != sticky {
			t.Errorf("split render (sticky %v) reads the cookie: %v\n%s", sticky, got, out)
		}
	}
	r := testRoute("green", 8)
	r.Active.Weight, r.Standby.Weight, r.Sticky = 75, 25, true
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatalf("Flip to a split: %v", err)
	}
	if calls := f.callList(); calls != "test,reload" {
		t.Errorf("commands %q, want test,reload", calls)
	}
}

// TestNginxUserTemplateWithoutSplit: a user template written before splits
// existed renders today's file; asked for a split it would send every
// request to the active slot, so the split is refused naming what to add,
// while today's routes still render with it.
func TestNginxUserTemplateWithoutSplit(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Template = dir + "/old.tmpl"
	old := "upstream {{.Upstream}} { server {{.Active.Addr}}; } # standby {{.Standby.Addr}}\n" +
		"server { listen {{.Listen}}; location / { proxy_pass http://{{.Upstream}}; add_header {{.GenerationHeader}} {{.Generation}} always; } }\n"
	os.WriteFile(cfg.Template, []byte(old), 0o644)
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Render(testRoute("green", 2)); err != nil {
		t.Fatalf("the old template no longer renders today's route: %v", err)
	}
	r := testRoute("green", 3)
	r.Active.Weight, r.Standby.Weight = 80, 20
	if _, err := b.Render(r); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "server 127.0.0.1:5005 weight=20;") {
		t.Fatalf("Render of a split with a template that cannot split = %v; want config.ErrInvalid naming the missing server line", err)
	}
	// Weights but no cookie: a sticky split is refused, a plain one is not.
	os.WriteFile(cfg.Template, []byte(old+"# {{if .Split}}server {{.Standby.Addr}} weight={{.Standby.Weight}};{{end}}\n"), 0o644)
	if b, err = New("app", cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Render(r); err != nil {
		t.Fatalf("Render of a split: %v", err)
	}
	r.Sticky = true
	if _, err := b.Render(r); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "$cookie_bgd_app") {
		t.Fatalf("Render of a sticky split with a template that reads no cookie = %v; want config.ErrInvalid naming $cookie_bgd_app", err)
	}
}
