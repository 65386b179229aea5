package config

import (
	"strings"
	"testing"
)

// TestNginxMode: lb.nginx.mode defaults to reload (with the Debian path of
// the Lua module filled in for runtime), takes runtime, and refuses any
// other value and a lua_module that is not an absolute path nginx syntax
// can take.
func TestNginxMode(t *testing.T) {
	cfg, err := Load(Source{Path: writeConfig(t, minimal), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.Services["app"].LB.Nginx; n.Mode != NginxReload || n.LuaModule != DefaultLuaModule {
		t.Fatalf("defaults: mode %q, lua_module %q", n.Mode, n.LuaModule)
	}
	withNginx := func(section string) string {
		return minimal + "    lb:\n      driver: nginx\n      nginx: {listen: \"127.0.0.1:7199\", test: [\"true\"], reload: [\"true\"], " + section + "}\n"
	}
	cfg, err = Load(Source{Path: writeConfig(t, withNginx(`mode: runtime`)), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.Services["app"].LB.Nginx; n.Mode != NginxRuntime {
		t.Fatalf("mode runtime loaded as %q", n.Mode)
	}
	for section, want := range map[string]string{
		`mode: reloads`: `lb.nginx.mode "reloads" is unknown (use reload or runtime)`,
		`mode: runtime, lua_module: "modules/ngx_http_lua_module.so"`: `lb.nginx.lua_module "modules/ngx_http_lua_module.so": give the absolute path`,
		`mode: runtime, lua_module: "/x/m.so; evil"`:                  `lb.nginx.lua_module "/x/m.so; evil": give the absolute path`,
	} {
		_, err := Load(Source{Path: writeConfig(t, withNginx(section)), Getenv: envOf(nil)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error containing %q", section, err, want)
		}
	}
	n := cfg.Services["app"].LB.Nginx
	n.Mode = "hot"
	if err := n.Check("app"); err == nil || !strings.Contains(err.Error(), `lb.nginx.mode "hot" is unknown`) {
		t.Errorf("Check of mode hot: %v", err)
	}
}
