package nginx

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestNginxRefusesWhatItsTemplateCannotSay: the template has no variable
// for a weight, a pause or a maintenance page, so Flip refuses such a route
// before it writes the file or runs a command, and Render refuses it too.
func TestNginxRefusesWhatItsTemplateCannotSay(t *testing.T) {
	cases := []struct {
		feature lb.Feature
		mutate  func(*lb.Route)
	}{
		{lb.FeatureWeights, func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 90, 10 }},
		{lb.FeatureWeights, func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 1, 99 }},
		{lb.FeaturePause, func(r *lb.Route) { r.Pause = time.Second }},
		{lb.FeatureMaintenance, func(r *lb.Route) { r.Maintenance, r.MaintenancePage = true, "<h1>later</h1>" }},
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
