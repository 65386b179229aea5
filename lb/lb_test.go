package lb_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// mutated returns lb.SampleRoute("app") changed by f.
func mutated(f func(*lb.Route)) lb.Route { return lbtest.Route(config.Blue, 1, f) }

// today is every route a flip makes today, in its forms: blue or green
// active, weights left 0 or written out as 100/0, a page that is ignored
// without maintenance.
var today = map[string]lb.Route{
	"sample (blue active)": lb.SampleRoute("app"),
	"green active":         mutated(func(r *lb.Route) { r.Active, r.Standby = r.Standby, r.Active }),
	"explicit 100/0":       mutated(func(r *lb.Route) { r.Active.Weight = 100 }),
	"page without maintenance": mutated(func(r *lb.Route) {
		r.MaintenancePage = "<h1>back soon</h1>"
	}),
	"no service, generation 0": mutated(func(r *lb.Route) { r.Service, r.Generation, r.HealthPath = "", 0, "" }),
}

func TestValidateAcceptsTodaysRoutesAndWellFormedRequests(t *testing.T) {
	ok := map[string]lb.Route{
		"canary 90/10":     mutated(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 90, 10 }),
		"canary 1/99":      mutated(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 1, 99 }),
		"paused":           mutated(func(r *lb.Route) { r.Pause = 2 * time.Second }),
		"maintenance":      mutated(func(r *lb.Route) { r.Maintenance, r.MaintenancePage = true, "<p>later</p>" }),
		"remote host":      mutated(func(r *lb.Route) { r.Active.Host = "10.0.0.7" }),
		"remote name":      mutated(func(r *lb.Route) { r.Standby.Host = "slot-b.internal" }),
		"bracketed ipv6":   mutated(func(r *lb.Route) { r.Active.Host = "[::1]" }),
		"maintenance+page": mutated(func(r *lb.Route) { r.Maintenance = true }),
	}
	for name, r := range today {
		ok["today: "+name] = r
	}
	for name, r := range ok {
		t.Run(name, func(t *testing.T) {
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", r, err)
			}
		})
	}
}

func TestValidateCatchesNonsense(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*lb.Route)
		want   string // in the message
	}{
		{"empty active host", func(r *lb.Route) { r.Active.Host = "" }, "active slot (blue) has no host"},
		{"empty standby host", func(r *lb.Route) { r.Standby.Host = "" }, "standby slot (green) has no host"},
		{"host with a space", func(r *lb.Route) { r.Active.Host = "127.0.0.1 x" }, "not a host name or address"},
		{"host with a path", func(r *lb.Route) { r.Active.Host = "host/x" }, "not a host name or address"},
		{"unbracketed ipv6", func(r *lb.Route) { r.Active.Host = "::1" }, "in brackets"},
		{"no active colour", func(r *lb.Route) { r.Active.Color = "" }, "active slot has no colour"},
		{"no standby colour", func(r *lb.Route) { r.Standby.Color = "" }, "standby slot has no colour"},
		{"one colour twice", func(r *lb.Route) { r.Standby.Color = "blue" }, "both blue"},
		{"port 0", func(r *lb.Route) { r.Active.Port = 0 }, "port 0"},
		{"port 65536", func(r *lb.Route) { r.Standby.Port = 65536 }, "port 65536"},
		{"negative active weight", func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = -10, 110 }, "weight -10"},
		{"negative standby weight", func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 110, -10 }, "weight -10"},
		{"weights over 100", func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 90, 20 }, "add up to 110%"},
		{"weights under 100", func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 50, 10 }, "add up to 60%"},
		{"active weight alone, not 100", func(r *lb.Route) { r.Active.Weight = 50 }, "add up to 50%"},
		{"standby weight alone, not 100", func(r *lb.Route) { r.Standby.Weight = 10 }, "add up to 10%"},
		{"everything to standby", func(r *lb.Route) { r.Standby.Weight = 100 }, "that is a flip to green"},
		{"negative pause", func(r *lb.Route) { r.Pause = -time.Second }, "pause -1s is negative"},
		{"paused and in maintenance", func(r *lb.Route) { r.Pause, r.Maintenance = time.Second, true }, "paused (1s) and in maintenance"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mutated(c.mutate)
			err := r.Validate()
			if !errors.Is(err, lb.ErrInvalidRoute) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `service "app"`) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidRoute naming the service and saying %q", r, err, c.want)
			}
			if errors.Is(err, lb.ErrUnsupported) {
				t.Fatalf("an invalid route is not an unsupported one: %v", err)
			}
			// No driver, however capable, takes it.
			all := lb.Capabilities{Driver: "all", Weights: true, Pause: true, Maintenance: true, RemoteHosts: true}
			if err := all.Check(r); !errors.Is(err, lb.ErrInvalidRoute) {
				t.Fatalf("Check with every capability = %v, want ErrInvalidRoute", err)
			}
		})
	}
}

// unsupported is one route per feature, each asking for that feature alone.
var unsupported = []struct {
	feature lb.Feature
	route   lb.Route
	detail  string
}{
	{lb.FeatureWeights, mutated(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 90, 10 }), "blue 90%, green 10%"},
	{lb.FeaturePause, mutated(func(r *lb.Route) { r.Pause = 500 * time.Millisecond }), "500ms"},
	{lb.FeatureMaintenance, mutated(func(r *lb.Route) { r.Maintenance = true }), "503"},
	{lb.FeatureRemoteHosts, mutated(func(r *lb.Route) { r.Active.Host = "10.0.0.7" }), "blue slot is on 10.0.0.7"},
	{lb.FeatureRemoteHosts, mutated(func(r *lb.Route) { r.Standby.Host = "localhost" }), "green slot is on localhost"},
}

func TestZeroCapabilitiesTakeTodaysRoutesOnly(t *testing.T) {
	c := lb.Capabilities{Driver: "plain"}
	for name, r := range today {
		if err := c.Check(r); err != nil {
			t.Errorf("%s: Check = %v, want nil", name, err)
		}
	}
	for _, u := range unsupported {
		t.Run(string(u.feature), func(t *testing.T) {
			err := c.Check(u.route)
			var ue *lb.UnsupportedError
			if !errors.Is(err, lb.ErrUnsupported) || !errors.As(err, &ue) {
				t.Fatalf("Check = %v, want an *UnsupportedError", err)
			}
			if ue.Driver != "plain" || ue.Feature != u.feature || ue.Service != "app" {
				t.Errorf("refusal %+v, want driver plain, feature %q, service app", ue, u.feature)
			}
			for _, s := range []string{"plain driver", string(u.feature), u.detail, `"app"`} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestEachCapabilityLetsItsFeatureThrough(t *testing.T) {
	grant := map[lb.Feature]func(*lb.Capabilities){
		lb.FeatureWeights:     func(c *lb.Capabilities) { c.Weights = true },
		lb.FeaturePause:       func(c *lb.Capabilities) { c.Pause = true },
		lb.FeatureMaintenance: func(c *lb.Capabilities) { c.Maintenance = true },
		lb.FeatureRemoteHosts: func(c *lb.Capabilities) { c.RemoteHosts = true },
	}
	for _, u := range unsupported {
		for f, g := range grant {
			c := lb.Capabilities{Driver: "d"}
			g(&c)
			err := c.Check(u.route)
			if f == u.feature && err != nil {
				t.Errorf("capability %q: Check(route asking for it) = %v, want nil", f, err)
			}
			if f != u.feature && !errors.Is(err, lb.ErrUnsupported) {
				t.Errorf("capability %q: Check(route asking for %q) = %v, want ErrUnsupported", f, u.feature, err)
			}
		}
	}
}

// capableLB declares Weights.
type capableLB struct{}

func (capableLB) Flip(context.Context, lb.Route) error         { return nil }
func (capableLB) Active(context.Context) (config.Color, error) { return config.Blue, nil }
func (capableLB) Render(r lb.Route) ([]byte, error)            { return nil, nil }
func (capableLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "capable", Weights: true}
}

type undeclaredLB struct{ capableLB }

// Capabilities is shadowed: undeclaredLB does not implement lb.Capable.
func (undeclaredLB) Capabilities(int) {}

func TestSupportsUsesTheDriversDeclaration(t *testing.T) {
	canary := unsupported[0].route
	if err := lb.Supports(capableLB{}, canary); err != nil {
		t.Errorf("a driver declaring Weights refused a canary: %v", err)
	}
	err := lb.Supports(undeclaredLB{}, canary)
	var ue *lb.UnsupportedError
	if !errors.As(err, &ue) || ue.Driver != "lb_test.undeclaredLB" || ue.Feature != lb.FeatureWeights {
		t.Errorf("a driver declaring nothing: %v, want the zero capabilities' refusal naming its type", err)
	}
	if err := lb.Supports(undeclaredLB{}, lb.SampleRoute("app")); err != nil {
		t.Errorf("a driver declaring nothing refused today's route: %v", err)
	}
	if err := lb.Supports(capableLB{}, mutated(func(r *lb.Route) { r.Active.Host = "" })); !errors.Is(err, lb.ErrInvalidRoute) {
		t.Errorf("Supports of an invalid route = %v, want ErrInvalidRoute", err)
	}
}

func TestSplits(t *testing.T) {
	for _, c := range []struct {
		active, standby int
		want            bool
	}{{0, 0, false}, {100, 0, false}, {90, 10, true}} {
		r := mutated(func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = c.active, c.standby })
		if got := r.Splits(); got != c.want {
			t.Errorf("%d/%d: Splits = %v, want %v", c.active, c.standby, got, c.want)
		}
	}
}

func TestRemote(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": false, "localhost": true, "[::1]": true, "10.0.0.7": true} {
		if got := (lb.Upstream{Host: host}).Remote(); got != want {
			t.Errorf("Remote(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestSetDefault(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{{0, time.Second}, {-5, time.Second}, {3 * time.Millisecond, 3 * time.Millisecond}} {
		v := c.in
		lb.SetDefault(&v, time.Second)
		if v != c.want {
			t.Errorf("SetDefault(%v, 1s) = %v, want %v", c.in, v, c.want)
		}
	}
	n := 7
	lb.SetDefault(&n, 5)
	if n != 7 {
		t.Errorf("SetDefault(7, 5) = %d, want 7 kept", n)
	}
}

func TestStickyCookie(t *testing.T) {
	for service, want := range map[string]string{
		"app":        "bgd_app",
		"web-api":    "bgd_web_api",
		"v1.2_shop":  "bgd_v1_2_shop",
		"ABC_def-09": "bgd_ABC_def_09",
	} {
		if got := lb.StickyCookie(service); got != want {
			t.Errorf("lb.StickyCookie(%q) = %q, want %q", service, got, want)
		}
	}
}
