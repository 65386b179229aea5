package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envOf is a Getenv over a fixed map, so tests never see the real environment.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeConfig writes a config file into a fresh directory and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bluegreen.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const minimal = `
services:
  app:
    command: ["true", "--port", "{{.Port}}"]
    blue: {port: 7101}
    green: {port: 7102}
`

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(Source{Path: writeConfig(t, minimal), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Services["app"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"state_dir", cfg.StateDir, ".local_context"},
		{"name", s.Name, "app"},
		{"health.path", s.Health.Path, "/health"},
		{"health.interval", s.Health.Interval.D(), time.Second},
		{"health.timeout", s.Health.Timeout.D(), 30 * time.Second},
		{"health.request_timeout", s.Health.RequestTimeout.D(), 2 * time.Second},
		{"health.expect_status", s.Health.ExpectStatus, 0},
		{"stop_grace", s.StopGrace.D(), 10 * time.Second},
		{"failover", s.Failover, false},
		{"lb.driver", s.LB.Driver, "builtin"},
		{"lb.builtin.listen", s.LB.Builtin.Listen, "127.0.0.1:5004"},
		{"lb.nginx.file", s.LB.Nginx.File, "/etc/nginx/conf.d/bgd-app.conf"},
		{"lb.nginx.listen", s.LB.Nginx.Listen, "80"},
		{"lb.nginx.test", strings.Join(s.LB.Nginx.Test, " "), "nginx -t"},
		{"lb.nginx.reload", strings.Join(s.LB.Nginx.Reload, " "), "nginx -s reload"},
		{"lb.nginx.verify_url", s.LB.Nginx.VerifyURL, "http://127.0.0.1:80/"},
		{"lb.haproxy.socket", s.LB.HAProxy.Socket, "/run/haproxy/admin.sock"},
		{"lb.haproxy.map_file", s.LB.HAProxy.MapFile, "/etc/haproxy/bgd.map"},
		{"lb.haproxy.backends.blue", s.LB.HAProxy.Backends["blue"], "app_blue"},
		{"lb.haproxy.backends.green", s.LB.HAProxy.Backends["green"], "app_green"},
		{"lb.haproxy.listen", s.LB.HAProxy.Listen, "80"},
		{"lb.haproxy.template", s.LB.HAProxy.Template, ""},
		{"state path", cfg.StatePath("app"), filepath.Join(".local_context", "bg_state.json")},
		{"log path", cfg.LogPath("app", "green"), filepath.Join(".local_context", "logs", "app-green.log")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadEmbeddedDefault(t *testing.T) {
	t.Chdir(t.TempDir()) // no bluegreen.yml here
	self := executable(t, t.TempDir(), "bgd")
	cfg, err := Load(Source{Getenv: envOf(nil), Self: self})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != "" {
		t.Errorf("Path = %q, want \"\" for the embedded default", cfg.Path)
	}
	s, err := cfg.Service("")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "app" || s.Blue.Port != 5005 || s.Green.Port != 5006 || s.LB.Builtin.Listen != "127.0.0.1:5004" {
		t.Errorf("default service = %s blue %d green %d listen %s, want app 5005 5006 127.0.0.1:5004",
			s.Name, s.Blue.Port, s.Green.Port, s.LB.Builtin.Listen)
	}
	if s.Command[0] != self || s.Command[1] != "demo-app" {
		t.Errorf("default command = %q, want bgd's own demo-app", s.Command)
	}
}

func TestLoadEnvOverrides(t *testing.T) {
	path := writeConfig(t, minimal)
	cases := []struct {
		name  string
		env   map[string]string
		check func(*Config) string
	}{
		{"BLUE_PORT", map[string]string{"BLUE_PORT": "7201"}, func(c *Config) string {
			return want(c.Services["app"].Blue.Port, 7201)
		}},
		{"GREEN_PORT", map[string]string{"GREEN_PORT": "7202"}, func(c *Config) string {
			return want(c.Services["app"].Green.Port, 7202)
		}},
		{"BG_STATE_FILE", map[string]string{"BG_STATE_FILE": "/tmp/x/state.json"}, func(c *Config) string {
			return want(c.StatePath("app"), "/tmp/x/state.json")
		}},
		{"BG_PROXY_PORT keeps the host", map[string]string{"BG_PROXY_PORT": "7204"}, func(c *Config) string {
			return want(c.Services["app"].LB.Builtin.Listen, "127.0.0.1:7204")
		}},
		{"BG_CONFIG names the file", map[string]string{"BG_CONFIG": path}, func(c *Config) string {
			return want(c.Path, path)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := Source{Path: path, Getenv: envOf(tc.env)}
			if tc.env["BG_CONFIG"] != "" {
				src.Path = ""
			}
			cfg, err := Load(src)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(cfg); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func want[T comparable](got, w T) string {
	if got != w {
		return fmt.Sprintf("got %v, want %v", got, w)
	}
	return ""
}

// TestLoadErrors: every way a configuration is refused. Each error wraps
// ErrInvalid (exit 2) and names its culprit.
func TestLoadErrors(t *testing.T) {
	svc := func(extra string) string {
		return "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n" + extra
	}
	cases := []struct {
		name string
		yaml string
		env  map[string]string
		want []string
	}{
		{"unknown top-level key", "state_dirr: x\n" + svc(""), nil, []string{`unknown key "state_dirr"`, "line 1"}},
		{"unknown service key", svc("    colour: blue\n"), nil, []string{`unknown key "colour"`, "line 6"}},
		{"unknown nested key", svc("    health:\n      pth: /x\n"), nil, []string{`unknown key "pth"`, "line 7"}},
		{"wrong type port", "services:\n  app:\n    command: [sh]\n    blue: {port: abc}\n    green: {port: 7102}\n", nil, []string{"line 4", "abc"}},
		{"wrong type command", "services:\n  app:\n    command: 5\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{"line 3"}},
		{"wrong type failover", svc("    failover: maybe\n"), nil, []string{"line 6", "maybe"}},
		{"invalid duration", svc("    health: {interval: 5 parsecs}\n"), nil, []string{"line 6", `invalid duration "5 parsecs"`}},
		{"negative duration", svc("    stop_grace: -1s\n"), nil, []string{"line 6", `invalid duration "-1s"`}},
		{"empty file", "", nil, []string{"empty"}},
		{"not YAML", "services: [\n", nil, []string{"line"}},
		{"null service", "services:\n  app:\n", nil, []string{`service "app" is empty`}},
		{"no services", "state_dir: x\n", nil, []string{"no services"}},
		{"service name with space", "services:\n  \"a b\":\n    command: [sh]\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`service name "a b"`}},
		{"service name with brace", "services:\n  \"a}b\":\n    command: [sh]\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`service name "a}b"`}},
		{"empty command", "services:\n  app:\n    command: []\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`service "app": command is empty`}},
		{"blank command", "services:\n  app:\n    command: [\" \"]\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`service "app": command is empty`}},
		{"missing command", "services:\n  app:\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`service "app": command is empty`}},
		{"bad template", "services:\n  app:\n    command: [\"x\", \"{{.Port\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n", nil, []string{`"{{.Port"`, "not a valid template"}},
		{"bad workdir template", svc("    workdir: \"{{\"\n"), nil, []string{`"{{"`, "not a valid template"}},
		{"port too big", "services:\n  app:\n    command: [sh]\n    blue: {port: 70000}\n    green: {port: 7102}\n", nil, []string{"blue port 70000 is out of range"}},
		{"port zero", "services:\n  app:\n    command: [sh]\n    blue: {port: 7101}\n    green: {port: 0}\n", nil, []string{"green port 0 is out of range"}},
		{"port negative", "services:\n  app:\n    command: [sh]\n    blue: {port: -1}\n    green: {port: 7102}\n", nil, []string{"blue port -1 is out of range"}},
		{"blue equals green", "services:\n  app:\n    command: [sh]\n    blue: {port: 7101}\n    green: {port: 7101}\n", nil, []string{"green port 7101 is already used by service \"app\" blue"}},
		{"ports collide across services", svc("  web:\n    command: [sh]\n    blue: {port: 7102}\n    green: {port: 7103}\n"), nil, []string{`service "web": blue port 7102 is already used by service "app" green`}},
		{"health path without slash", svc("    health: {path: health}\n"), nil, []string{`health.path "health"`}},
		{"health path with brace", svc("    health: {path: \"/h;}\"}\n"), nil, []string{`health.path "/h;}"`}},
		{"smoke path without slash", svc("    health: {smoke: [\"/\", \"api/ping\"]}\n"), nil, []string{`health.smoke[1] "api/ping" must be a path starting with a single /`}},
		{"smoke path with space", svc("    health: {smoke: [\"/a b\"]}\n"), nil, []string{`health.smoke[0] "/a b" must contain no spaces`}},
		{"smoke path host-relative", svc("    health: {smoke: [\"//evil.example/\"]}\n"), nil, []string{`health.smoke[0] "//evil.example/"`}},
		{"expect_status not HTTP", svc("    health: {expect_status: 42}\n"), nil, []string{"health.expect_status 42"}},
		{"builtin listen without port", svc("    lb: {builtin: {listen: \"localhost\"}}\n"), nil, []string{`lb.builtin.listen "localhost"`}},
		{"builtin listen port out of range", svc("    lb: {builtin: {listen: \"127.0.0.1:99999\"}}\n"), nil, []string{`lb.builtin.listen "127.0.0.1:99999"`}},
		{"builtin listen on a slot port", svc("    lb: {builtin: {listen: \"127.0.0.1:7101\"}}\n"), nil, []string{`lb.builtin.listen port 7101 on 127.0.0.1 is already used by service "app" blue`}},
		{"builtin listen shared by services", svc("    lb: {builtin: {listen: \"127.0.0.1:7300\"}}\n  web:\n    command: [sh]\n    blue: {port: 7201}\n    green: {port: 7202}\n    lb: {builtin: {listen: \"127.0.0.1:7300\"}}\n"), nil, []string{`service "web": lb.builtin.listen port 7300 on 127.0.0.1 is already used by service "app" (lb.builtin.listen 127.0.0.1:7300)`}},
		{"unknown driver", svc("    lb: {driver: traefik}\n"), nil, []string{`lb.driver "traefik"`}},
		{"nginx listen injection", svc("    lb: {driver: nginx, nginx: {listen: \"80; include /etc/passwd\"}}\n"), nil, []string{`lb.nginx.listen "80; include /etc/passwd"`}},
		{"nginx file injection", svc("    lb: {driver: nginx, nginx: {file: \"/x;y\"}}\n"), nil, []string{`lb.nginx.file "/x;y"`}},
		{"nginx verify_url not http", svc("    lb: {driver: nginx, nginx: {verify_url: \"ftp://x/\"}}\n"), nil, []string{`lb.nginx.verify_url "ftp://x/"`}},
		{"haproxy backend injection", svc("    lb: {driver: haproxy, haproxy: {backends: {blue: \"x y\"}}}\n"), nil, []string{`lb.haproxy.backends.blue "x y"`}},
		{"haproxy backend newline", svc("    lb: {driver: haproxy, haproxy: {backends: {green: \"a\\nb\"}}}\n"), nil, []string{`lb.haproxy.backends.green "a\nb"`}},
		{"haproxy unknown colour", svc("    lb: {driver: haproxy, haproxy: {backends: {red: r}}}\n"), nil, []string{`unknown colour "red"`}},
		{"haproxy same backend", svc("    lb: {driver: haproxy, haproxy: {backends: {blue: b, green: b}}}\n"), nil, []string{`blue and green both name "b"`}},
		{"haproxy listen injection", svc("    lb: {driver: haproxy, haproxy: {listen: \"80\\n    bind :22\"}}\n"), nil, []string{`lb.haproxy.listen "80\n    bind :22"`}},
		{"haproxy listen port out of range", svc("    lb: {driver: haproxy, haproxy: {listen: \"127.0.0.1:0\"}}\n"), nil, []string{`lb.haproxy.listen "127.0.0.1:0": the port must be a number 1-65535`}},
		{"haproxy map_file injection", svc("    lb: {driver: haproxy, haproxy: {map_file: \"/x;y\"}}\n"), nil, []string{`lb.haproxy.map_file "/x;y"`}},
		{"BLUE_PORT not a number", minimal, map[string]string{"BLUE_PORT": "abc"}, []string{`BLUE_PORT="abc"`}},
		{"GREEN_PORT not a number", minimal, map[string]string{"GREEN_PORT": "1e3"}, []string{`GREEN_PORT="1e3"`}},
		{"BLUE_PORT out of range", minimal, map[string]string{"BLUE_PORT": "65536"}, []string{"BLUE_PORT=65536: blue port 65536 is out of range"}},
		{"BLUE_PORT equals green", minimal, map[string]string{"BLUE_PORT": "7102"}, []string{"green port 7102 is already used"}},
		{"BG_PROXY_PORT not a number", minimal, map[string]string{"BG_PROXY_PORT": "x"}, []string{`BG_PROXY_PORT="x"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			_, err := Load(Source{Path: path, Getenv: envOf(tc.env)})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.env == nil && !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yml")
	cases := []struct {
		name string
		src  Source
	}{
		{"--config", Source{Path: missing, Getenv: envOf(nil)}},
		{"BG_CONFIG", Source{Getenv: envOf(map[string]string{"BG_CONFIG": missing})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.src)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(fmtErr(err), missing) {
				t.Errorf("Load = %v, want ErrInvalid naming %s", err, missing)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestServiceSelection(t *testing.T) {
	two := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n" +
		"  web:\n    command: [\"true\"]\n    blue: {port: 7103}\n    green: {port: 7104}\n    lb: {builtin: {listen: \"127.0.0.1:7105\"}}\n"
	cfg, err := Load(Source{Path: writeConfig(t, two), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		service string
		want    string // service name, or an error substring
		wantErr bool
	}{
		{"named", "web", "web", false},
		{"none with several", "", "choose one with --service", true},
		{"unknown", "db", `unknown service "db"`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := cfg.Service(tc.service)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Service(%q) = %v, want error containing %q", tc.service, err, tc.want)
				}
				return
			}
			if err != nil || s.Name != tc.want {
				t.Errorf("Service(%q) = %v, %v, want %s", tc.service, s, err, tc.want)
			}
		})
	}
	if got := cfg.StatePath("web"); got != filepath.Join(".local_context", "web.json") {
		t.Errorf("StatePath(web) with two services = %s, want .local_context/web.json", got)
	}
}

// executable writes a shell script named name into dir, mode 0755, and
// returns its path: a command that surely exists and runs.
func executable(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
