package nginx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// runtimeConfig is a runtime-mode section whose Lua module is a file in
// dir; the test command is not nginx, so New does not probe it (the
// integration tests load the real module into a real nginx).
func runtimeConfig(t *testing.T) config.Nginx {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Test = []string{"true"}
	cfg.Mode = config.NginxRuntime
	cfg.LuaModule = filepath.Join(dir, "ngx_http_lua_module.so")
	if err := os.WriteFile(cfg.LuaModule, []byte("module"), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRuntimeRenderIsOneFile: in mode runtime the file does not depend on
// the active colour, the weights or the generation (a flip never rewrites
// it); it holds both slots, the shared dict, the loopback-only location
// and the route file nginx reads after a restart.
func TestRuntimeRenderIsOneFile(t *testing.T) {
	cfg := runtimeConfig(t)
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.Render(testRoute("blue", 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []lb.Route{testRoute("green", 2), lbtest.Route("blue", 3, func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 90, 10 })} {
		out, err := b.Render(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, first) {
			t.Fatalf("the runtime file changed with the route %+v:\n%s", r, out)
		}
	}
	for _, want := range []string{
		"lua_shared_dict bgd_app 1m;", "balancer_by_lua_block", "set_current_peer", "keepalive 16;",
		`blue = {"127.0.0.1", 5005}, green = {"127.0.0.1", 5006}`, "keepalive_timeout 1s;",
		"location = " + AdminPath, "allow 127.0.0.1;", "allow ::1;", "deny all;",
		"[==[" + b.RouteFile() + "]==]", "$http_x_bgd_preview", "add_header X-Bgd-Generation $bgd_gen always;",
		// The balancer is a function that LuaJIT compiles, made once per
		// worker; the block only calls it (figure 10's cost per request).
		`package.loaded["bgd_app_balance"] = balance`, "return balance()",
	} {
		if !bytes.Contains(first, []byte(want)) {
			t.Errorf("the runtime file lacks %q", want)
		}
	}
	if b.RouteFile() != cfg.File+".route" {
		t.Errorf("RouteFile %q", b.RouteFile())
	}
	if u, err := b.PreviewURL("/health"); err != nil || u != "http://127.0.0.1:80/health" {
		t.Errorf("PreviewURL: %q, %v", u, err)
	}
}

// TestRuntimeRefuses: what mode runtime cannot do is refused before
// anything is written.
func TestRuntimeRefuses(t *testing.T) {
	b, err := New("app", runtimeConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c := b.Capabilities(); !c.Weights || c.Maintenance || c.Shadow || c.Pause {
		t.Errorf("Capabilities in mode runtime: %+v", c)
	}
	for name, mutate := range map[string]func(*lb.Route){
		"maintenance":   func(r *lb.Route) { r.Maintenance = true },
		"shadow":        func(r *lb.Route) { r.Shadow = true },
		"sticky split":  func(r *lb.Route) { r.Active.Weight, r.Standby.Weight, r.Sticky = 90, 10, true },
		"host name":     func(r *lb.Route) { r.Standby.Host = "green.internal" },
		"pause":         func(r *lb.Route) { r.Pause = 1 },
		"other service": func(r *lb.Route) { r.Service = "web" },
	} {
		r := testRoute("blue", 1)
		mutate(&r)
		if out, err := b.Render(r); err == nil {
			t.Errorf("%s: rendered\n%s", name, out)
		} else if name != "other service" && !errors.Is(err, lb.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}

	withTemplate := runtimeConfig(t)
	withTemplate.Template = filepath.Join(t.TempDir(), "user.tmpl")
	if _, err := New("app", withTemplate, Options{}); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "lb.nginx.template is for mode reload") {
		t.Errorf("New with a user template in mode runtime: %v", err)
	}
	missing := runtimeConfig(t)
	missing.LuaModule = filepath.Join(t.TempDir(), "absent.so")
	if _, err := New("app", missing, Options{}); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "apt-get install libnginx-mod-http-lua") {
		t.Errorf("New without the module: %v", err)
	}
}

// TestRouteText: the route as the Lua code and the route file read it.
func TestRouteText(t *testing.T) {
	if got := routeText(testRoute("green", 7)); got != "generation=7\nactive=green\nblue=0\ngreen=100\n" {
		t.Errorf("flip: %q", got)
	}
	split := lbtest.Route("blue", 8, func(r *lb.Route) { r.Active.Weight, r.Standby.Weight = 75, 25 })
	if got := routeText(split); got != "generation=8\nactive=blue\nblue=75\ngreen=25\n" {
		t.Errorf("split: %q", got)
	}
}
