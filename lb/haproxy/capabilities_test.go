package haproxy

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestHAProxyRefusesWhatOneMapEntryCannotDo: HAProxy cannot hold requests,
// and answers only the maintenance page its configuration loaded, so a
// pause, or maintenance with a page other than maintenance_page, is
// refused by Flip before any runtime API command, and by Render.
func TestHAProxyRefusesWhatOneMapEntryCannotDo(t *testing.T) {
	cases := []struct {
		feature lb.Feature
		mutate  func(*lb.Route)
	}{
		{lb.FeaturePause, func(r *lb.Route) { r.Pause = time.Second }},
		{lb.FeatureMaintenance, func(r *lb.Route) { r.Maintenance, r.MaintenancePage = true, "<h1>not maintenance_page</h1>" }},
	}
	for _, c := range cases {
		t.Run(string(c.feature), func(t *testing.T) {
			b, f, mapFile := setup(t, Options{})
			before := fileText(t, mapFile)
			r := route("green")
			c.mutate(&r)
			lbtest.Refuses(t, b, r, "haproxy", c.feature)
			if cmds := f.commands(); len(cmds) != 0 {
				t.Errorf("runtime API commands sent for a refused route: %q", cmds)
			}
			if v, _ := f.value(mapFile, "app"); v != "app_blue" {
				t.Errorf("runtime entry %q, want app_blue kept", v)
			}
			if got := fileText(t, mapFile); got != before {
				t.Errorf("map file changed:\n%s", got)
			}
		})
	}
	b, _, _ := setup(t, Options{})
	if c := b.Capabilities(); !c.Weights || c.Pause || !c.Maintenance || !c.RemoteHosts {
		t.Errorf("Capabilities() = %+v, want weights, maintenance and remote hosts", c)
	}
	r := route("blue")
	r.Standby.Host = ""
	if _, err := b.Render(r); !errors.Is(err, lb.ErrInvalidRoute) {
		t.Errorf("Render of a standby without a host = %v, want lb.ErrInvalidRoute", err)
	}
}

// TestHAProxyTakesTodaysRoutesAndRemoteHosts: weights written as 100/0
// render exactly as today's route and flip; slots on other hosts are
// written as the backends' servers.
func TestHAProxyTakesTodaysRoutesAndRemoteHosts(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	base, err := b.Render(route("green"))
	if err != nil {
		t.Fatal(err)
	}
	r := route("green")
	r.Active.Weight = 100
	if out, err := b.Render(r); err != nil || !bytes.Equal(out, base) {
		t.Errorf("explicit 100/0: Render = %v, want today's snippet byte for byte:\n%s", err, out)
	}
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatalf("Flip with explicit 100/0: %v", err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_green" {
		t.Errorf("runtime entry %q, want app_green", v)
	}
	remote := route("blue")
	remote.Active.Host, remote.Standby.Host = "10.0.0.7", "[fd00::8]"
	out, err := b.Render(remote)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server blue 10.0.0.7:5005 check", "server green [fd00::8]:5006 check"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("remote render lacks %q:\n%s", want, out)
		}
	}
	if err := b.Flip(context.Background(), remote); err != nil {
		t.Fatalf("Flip to a remote slot: %v", err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_blue" {
		t.Errorf("runtime entry %q, want app_blue", v)
	}
}
