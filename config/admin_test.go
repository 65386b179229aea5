package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminListenDefaults: a service of a config file gets a unix socket
// beside its state file (following --state-file and the service's name);
// the embedded default keeps its admin endpoints on the proxy's port,
// BG_PROXY_PORT included.
func TestAdminListenDefaults(t *testing.T) {
	cfg, err := Load(Source{Path: writeConfig(t, minimal), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.AdminListen("app"), "unix:"+filepath.Join(".local_context", "app.admin.sock"); got != want {
		t.Errorf("AdminListen(app) from a file = %q, want %q", got, want)
	}
	cfg.StateFile = "/srv/bgd/state.json"
	if got, want := cfg.AdminListen("app"), "unix:/srv/bgd/app.admin.sock"; got != want {
		t.Errorf("AdminListen(app) with --state-file = %q, want %q", got, want)
	}
	two, err := Load(Source{Path: writeConfig(t, minimal+"  web:\n    command: [\"true\"]\n    blue: {port: 7103}\n    green: {port: 7104}\n    lb: {builtin: {listen: \"127.0.0.1:7105\"}}\n"), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if a, w := two.AdminListen("app"), two.AdminListen("web"); a == w || !strings.HasSuffix(w, "web.admin.sock") {
		t.Errorf("two services' admin sockets: app %q, web %q: want one each, named after the service", a, w)
	}

	def, err := Load(Source{Path: filepath.Join(t.TempDir(), "absent.yml"), Getenv: envOf(nil)})
	if err == nil {
		t.Fatalf("an explicit config path that does not exist loaded: %+v", def)
	}
	def, err = Load(Source{Getenv: envOf(map[string]string{"BG_CONFIG": "", "BG_PROXY_PORT": "7401"}), Self: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	if def.Path != "" {
		t.Skipf("a %s in the working directory was loaded instead of the embedded default", def.Path)
	}
	if got := def.AdminListen("app"); got != "127.0.0.1:7401" {
		t.Errorf("AdminListen(app) of the embedded default with BG_PROXY_PORT=7401 = %q, want the proxy's own 127.0.0.1:7401", got)
	}
}

// TestAdminListenExplicit: the values admin_listen takes, as the proxy and
// the CLI get them.
func TestAdminListenExplicit(t *testing.T) {
	for _, tc := range []struct{ admin, want string }{
		{"unix:/run/bgd/app.sock", "unix:/run/bgd/app.sock"},
		{"/run/bgd/app.sock", "/run/bgd/app.sock"},
		{"unix:rel/app.sock", "unix:rel/app.sock"},
		{"127.0.0.1:7300", "127.0.0.1:7300"},
		{"[::1]:7300", "[::1]:7300"},
		{"localhost:7300", "localhost:7300"},
		// The proxy's own listener, however it is spelt: served there.
		{"127.0.0.1:7200", "127.0.0.1:7200"},
	} {
		yaml := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n    lb: {builtin: {listen: \"127.0.0.1:7200\", admin_listen: \"" + tc.admin + "\"}}\n"
		cfg, err := Load(Source{Path: writeConfig(t, yaml), Getenv: envOf(nil)})
		if err != nil {
			t.Errorf("admin_listen %q: %v", tc.admin, err)
			continue
		}
		if got := cfg.AdminListen("app"); got != tc.want {
			t.Errorf("admin_listen %q: AdminListen = %q, want %q", tc.admin, got, tc.want)
		}
	}
	yaml := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n    lb: {builtin: {listen: \":7200\", admin_listen: \"0.0.0.0:7200\"}}\n"
	cfg, err := Load(Source{Path: writeConfig(t, yaml), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AdminListen("app"); got != ":7200" {
		t.Errorf("admin_listen 0.0.0.0:7200 beside listen :7200 = %q, want the listen itself (one listener)", got)
	}
}

// TestAdminListenCollisionsRefused: an admin address that another part of
// the config binds, a non-loopback one, or a malformed one is refused at
// load, naming the key and what to do.
func TestAdminListenCollisionsRefused(t *testing.T) {
	svc := func(lb string, more string) string {
		return "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n    lb: " + lb + "\n" + more
	}
	web := func(lb string) string {
		return "  web:\n    command: [\"true\"]\n    blue: {port: 7201}\n    green: {port: 7202}\n    lb: " + lb + "\n"
	}
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"on a slot port", svc(`{builtin: {admin_listen: "127.0.0.1:7102"}}`, ""),
			[]string{`service "app": lb.builtin.admin_listen port 7102 on 127.0.0.1 is already used by service "app" green`}},
		{"on another service's listen", svc(`{builtin: {listen: "127.0.0.1:7300", admin_listen: "127.0.0.1:7301"}}`, web(`{builtin: {listen: "127.0.0.1:7301"}}`)),
			[]string{`service "web": lb.builtin.listen port 7301 on 127.0.0.1 is already used by service "app" (lb.builtin.admin_listen 127.0.0.1:7301)`}},
		{"on another service's admin port", svc(`{builtin: {listen: "127.0.0.1:7300", admin_listen: "localhost:7400"}}`, web(`{builtin: {listen: "127.0.0.1:7301", admin_listen: "127.0.0.1:7400"}}`)),
			[]string{`service "web": lb.builtin.admin_listen port 7400 on 127.0.0.1 is already used by service "app" (lb.builtin.admin_listen localhost:7400)`}},
		{"the same socket for two services", svc(`{builtin: {listen: "127.0.0.1:7300", admin_listen: "unix:/run/bgd/a.sock"}}`, web(`{builtin: {listen: "127.0.0.1:7301", admin_listen: "/run/bgd/./a.sock"}}`)),
			[]string{`service "web": lb.builtin.admin_listen "/run/bgd/./a.sock" is already the admin socket of service "app"`}},
		{"on an nginx listen", svc(`{builtin: {listen: "127.0.0.1:7300", admin_listen: "127.0.0.1:7302"}}`, web(`{driver: nginx, nginx: {listen: "7302"}}`)),
			[]string{`lb.nginx.listen port 7302 on every address is already used by service "app" (lb.builtin.admin_listen 127.0.0.1:7302)`}},
		{"overlapping its own wildcard listen", svc(`{builtin: {listen: "0.0.0.0:7300", admin_listen: "127.0.0.1:7300"}}`, ""),
			[]string{`lb.builtin.admin_listen port 7300 on 127.0.0.1 is already used by service "app" (lb.builtin.listen 0.0.0.0:7300)`}},
		{"not loopback", svc(`{builtin: {admin_listen: "0.0.0.0:7300"}}`, ""),
			[]string{`lb.builtin.admin_listen "0.0.0.0:7300" is not a loopback address`, "127.0.0.1:7300"}},
		{"a host name", svc(`{builtin: {admin_listen: "example.com:7300"}}`, ""),
			[]string{`lb.builtin.admin_listen "example.com:7300" is not a loopback address`}},
		{"no port", svc(`{builtin: {admin_listen: "127.0.0.1"}}`, ""),
			[]string{`lb.builtin.admin_listen "127.0.0.1" is neither unix:<path> nor host:port`}},
		{"empty socket path", svc(`{builtin: {admin_listen: "unix:"}}`, ""),
			[]string{`lb.builtin.admin_listen "unix:": give the socket's path`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(Source{Path: writeConfig(t, tc.yaml), Getenv: envOf(nil)})
			if err == nil {
				t.Fatalf("loaded:\n%s", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}
