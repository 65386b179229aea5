package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const backendSvc = "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n"

// load loads yaml as a config file, defaults and validation included.
func load(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	return Load(Source{Path: writeConfig(t, yaml), Getenv: envOf(nil)})
}

func TestStateBackendDefaults(t *testing.T) {
	cfg, err := load(t, backendSvc)
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.State
	if b.Backend != BackendFile || b.Etcd() || b.Prefix != "/bgd" || b.DialTimeout.D() != 5*time.Second ||
		b.LeaseTTL.D() != 5*time.Second || b.AgentsTimeout.D() != 10*time.Second {
		t.Errorf("defaults: %+v", b)
	}
	s := cfg.Services["app"]
	if s.Host(Blue) != "127.0.0.1" || s.Host(Green) != "127.0.0.1" || s.HostOfPort(7102) != "127.0.0.1" {
		t.Errorf("slot hosts default to %q/%q", s.Host(Blue), s.Host(Green))
	}
}

func TestStateBackendEtcd(t *testing.T) {
	cfg, err := load(t, ("state:\n  backend: etcd\n  endpoints: [\"http://etcd:2379\", \"https://10.0.0.2:2379\"]\n  prefix: /prod/bgd/\n  lease_ttl: 2s\n" +
		strings.Replace(backendSvc, "blue: {port: 7101}\n    green: {port: 7102}", "blue: {port: 7101, host: app1.example}\n    green: {port: 7102, host: app1.example}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.State.Etcd() || cfg.State.Prefix != "/prod/bgd" || cfg.State.StateKey("app") != "/prod/bgd/app/state" {
		t.Errorf("etcd backend: %+v, key %s", cfg.State, cfg.State.StateKey("app"))
	}
	s := cfg.Services["app"]
	if s.Host(Green) != "app1.example" || s.HostOfPort(7101) != "app1.example" {
		t.Errorf("slot hosts %q/%q", s.Host(Blue), s.Host(Green))
	}
}

func TestStateBackendErrors(t *testing.T) {
	svcHosts := func(blue, green string) string {
		return "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101, host: \"" + blue + "\"}\n    green: {port: 7102, host: \"" + green + "\"}\n"
	}
	cases := []struct{ name, yaml, want string }{
		{"unknown backend", "state: {backend: consul}\n" + backendSvc, `state.backend "consul" is unknown`},
		{"unknown key", "state: {backend: etcd, endpoint: x}\n" + backendSvc, `unknown key "endpoint"`},
		{"etcd without endpoints", "state: {backend: etcd}\n" + backendSvc, "state.endpoints is empty"},
		{"endpoints on the file backend", "state: {endpoints: [\"http://e:2379\"]}\n" + backendSvc, "set state.backend: etcd"},
		{"endpoint not a URL", "state: {backend: etcd, endpoints: [\"etcd:2379\"]}\n" + backendSvc, `"etcd:2379" is not an etcd client URL`},
		{"endpoint with a path", "state: {backend: etcd, endpoints: [\"http://e:2379/v3\"]}\n" + backendSvc, "is not an etcd client URL"},
		{"prefix with a space", "state: {backend: etcd, endpoints: [\"http://e:2379\"], prefix: \"/a b\"}\n" + backendSvc, `state.prefix "/a b"`},
		{"lease below a second", "state: {backend: etcd, endpoints: [\"http://e:2379\"], lease_ttl: 500ms}\n" + backendSvc, "state.lease_ttl 500ms"},
		{"cert without key", "state: {backend: etcd, endpoints: [\"https://e:2379\"], cert_file: /c.pem}\n" + backendSvc, "cert_file and state.key_file go together"},
		{"user without password", "state: {backend: etcd, endpoints: [\"http://e:2379\"], username: root}\n" + backendSvc, "username and state.password_file go together"},
		{"host injecting nginx syntax", svcHosts("app;include /etc/passwd", "app"), `blue.host "app;include /etc/passwd" is not a host name`},
		{"host with a space", svcHosts("app", "a b"), `green.host "a b"`},
		{"host with a port", svcHosts("app:80", "app:80"), `blue.host "app:80"`},
		{"bare IPv6 host", svcHosts("::1", "::1"), `blue.host "::1"`},
		{"builtin with two hosts", svcHosts("app1", "app2"), "the builtin proxy dials both slots on one host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, c.yaml)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not match ErrInvalid", err)
			}
		})
	}
}

func TestSlotHostsAccepted(t *testing.T) {
	for _, h := range []string{"app", "app-1.internal.example", "10.0.0.7", "[::1]", "[fd00::7]"} {
		y := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101, host: \"" + h + "\"}\n    green: {port: 7102, host: \"" + h + "\"}\n"
		if _, err := load(t, y); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	}
}
