package nginx

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current templates")

func testConfig(dir string) config.Nginx {
	return config.Nginx{
		File:      filepath.Join(dir, "bgd-app.conf"),
		Listen:    "80",
		Test:      []string{"nginx", "-t"},
		Reload:    []string{"nginx", "-s", "reload"},
		VerifyURL: "http://127.0.0.1:80/",
	}
}

func testRoute(active config.Color, gen uint64) lb.Route { return lbtest.Route(active, gen) }

// TestRenderGolden: the default template's output, one golden file per case.
// Run `go test ./lb/nginx -update` after changing the template, and read the diff.
func TestRenderGolden(t *testing.T) {
	cases := []struct {
		name      string
		service   string
		listen    string
		route     lb.Route
		accessLog string
	}{
		{"blue-active", "app", "80", testRoute("blue", 1), ""},
		{"green-active", "app", "80", testRoute("green", 2), ""},
		{"listen-address", "shop.api", "127.0.0.1:8080", func() lb.Route {
			r := testRoute("blue", 18446744073709551615)
			r.Service = "shop.api"
			return r
		}(), ""},
		{"split-blue-90-green-10", "app", "80", lbtest.Route("blue", 4, func(r *lb.Route) {
			r.Active.Weight, r.Standby.Weight = 90, 10
		}), ""},
		{"sticky-split-green-50-blue-50", "shop.api", "127.0.0.1:8080", lbtest.Route("green", 5, func(r *lb.Route) {
			r.Service = "shop.api"
			r.Active.Weight, r.Standby.Weight, r.Sticky = 50, 50, true
		}), ""},
		{"split-ipv6", "app", "[::1]:8080", lbtest.Route("blue", 6, func(r *lb.Route) {
			r.Active.Host, r.Standby.Host = "[::1]", "[0:0::1]"
			r.Active.Weight, r.Standby.Weight, r.Sticky = 99, 1, true
		}), ""},
		{"access-log", "app", "80", testRoute("blue", 7), "/var/log/nginx/bgd-app.json.log"},
		{"shadow-green-active", "app", "80", lbtest.Route("green", 8, func(r *lb.Route) { r.Shadow = true }), ""},
		{"shadow-sticky-split", "shop.api", "127.0.0.1:8080", lbtest.Route("blue", 9, func(r *lb.Route) {
			r.Service = "shop.api"
			r.Active.Weight, r.Standby.Weight, r.Sticky, r.Shadow = 90, 10, true, true
		}), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.Listen, cfg.AccessLog = c.listen, c.accessLog
			b, err := New(c.service, cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Render(c.route)
			if err != nil {
				t.Fatal(err)
			}
			lbtest.Golden(t, c.name, got, *update)
		})
	}
}

// TestNewRejectsTemplates: a template that cannot be used is a config error
// at New, before any flip could write anything.
func TestNewRejectsTemplates(t *testing.T) {
	cases := []struct {
		name, template, wantMsg string
	}{
		{"does not parse", "upstream {{.Upstream {\n", "does not parse"},
		{"unknown variable", "upstream {{.Upstream}} { server {{.Active.Addr}}; } {{.Colour}}", "can't evaluate field Colour"},
		{"empty upstream", "upstream {{.Upstream}} { }\n", "never writes an empty upstream"},
		{"missing file", "", "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.Template = filepath.Join(dir, "user.tmpl")
			if c.template != "" {
				os.WriteFile(cfg.Template, []byte(c.template), 0o644)
			}
			_, err := New("app", cfg, Options{})
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("New = %v; want config.ErrInvalid saying %q", err, c.wantMsg)
			}
			if _, serr := os.Stat(cfg.File); serr == nil {
				t.Fatalf("%s was written", cfg.File)
			}
		})
	}
}

// TestRenderRejectsRoutes: nothing that could break or inject nginx syntax
// reaches the file.
func TestRenderRejectsRoutes(t *testing.T) {
	b, err := New("app", testConfig(t.TempDir()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*lb.Route){
		"no host":         func(r *lb.Route) { r.Active.Host = "" },
		"port 0":          func(r *lb.Route) { r.Active.Port = 0 },
		"injected host":   func(r *lb.Route) { r.Active.Host = "127.0.0.1; }" },
		"bad colour":      func(r *lb.Route) { r.Active.Color = "red" },
		"bad standby":     func(r *lb.Route) { r.Standby.Port = 70000 },
		"another service": func(r *lb.Route) { r.Service = "other" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			r := testRoute("blue", 1)
			mutate(&r)
			if out, err := b.Render(r); err == nil {
				t.Fatalf("Render accepted %+v:\n%s", r, out)
			}
		})
	}
	if _, err := New("app; }", testConfig(t.TempDir()), Options{}); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("New accepted a service name with nginx syntax in it: %v", err)
	}
}
