package lbtest

import (
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

func TestRoute(t *testing.T) {
	if got, want := Route(config.Blue, 1), lb.SampleRoute("app"); got != want {
		t.Errorf("Route(blue, 1) = %+v, want lb.SampleRoute: %+v", got, want)
	}
	g := Route(config.Green, 7, func(r *lb.Route) { r.Pause = 1 }, func(r *lb.Route) { r.Pause++ })
	if g.Active.Color != config.Green || g.Active.Port != 5006 || g.Standby.Color != config.Blue || g.Standby.Port != 5005 ||
		g.Generation != 7 || g.Pause != 2 || g.Validate() != nil {
		t.Errorf("Route(green, 7, two changes) = %+v", g)
	}
}
