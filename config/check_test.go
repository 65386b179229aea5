package config

import (
	"errors"
	"strings"
	"testing"
)

// TestSectionCheck: Nginx.Check and HAProxy.Check, which the drivers' New
// call, refuse what Validate refuses in a file (but what needs the whole
// configuration or PATH), and let an empty listen through to the driver.
func TestSectionCheck(t *testing.T) {
	goodN := Nginx{File: "/etc/nginx/conf.d/bgd-app.conf", Listen: "80", Test: []string{"nginx", "-t"},
		Reload: []string{"nginx", "-s", "reload"}, VerifyURL: "http://127.0.0.1:80/"}
	goodH := HAProxy{Socket: "/run/haproxy/admin.sock", MapFile: "/etc/haproxy/bgd.map",
		Backends: map[Color]string{Blue: "app_blue", Green: "app_green"}}
	noListen := goodH
	noListen.Listen = ""
	missingCmd := goodN
	missingCmd.Test = []string{"/nonexistent/nginx", "-t"}
	for name, err := range map[string]error{
		"nginx": goodN.Check("app"), "haproxy": goodH.Check("app"), "haproxy without listen": noListen.Check("app"),
		"nginx command not on PATH (Validate's business)": missingCmd.Check("app"),
	} {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	n := func(f func(*Nginx)) Nginx { c := goodN; f(&c); return c }
	h := func(f func(*HAProxy)) HAProxy {
		c := goodH
		c.Backends = map[Color]string{Blue: "app_blue", Green: "app_green"}
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nginx service name", goodN.Check("app; }"), `service name "app; }"`},
		{"nginx listen", n(func(c *Nginx) { c.Listen = "80;\n" }).Check("app"), `lb.nginx.listen "80;\n"`},
		{"nginx file", n(func(c *Nginx) { c.File = "" }).Check("app"), `lb.nginx.file ""`},
		{"nginx test", n(func(c *Nginx) { c.Test = nil }).Check("app"), "lb.nginx.test is empty"},
		{"nginx verify_url", n(func(c *Nginx) { c.VerifyURL = "ftp://x/" }).Check("app"), "lb.nginx.verify_url"},
		{"haproxy service name", goodH.Check("my app"), `service name "my app"`},
		{"haproxy listen", h(func(c *HAProxy) { c.Listen = "80\n    bind :22" }).Check("app"), `lb.haproxy.listen "80\n    bind :22"`},
		{"haproxy map_file", h(func(c *HAProxy) { c.MapFile = "/etc/x.map;show info" }).Check("app"), "lb.haproxy.map_file"},
		{"haproxy relative map_file", h(func(c *HAProxy) { c.MapFile = "bgd.map" }).Check("app"), "absolute path"},
		{"haproxy backend", h(func(c *HAProxy) { c.Backends["blue"] = "a#b" }).Check("app"), "lb.haproxy.backends.blue"},
		{"haproxy no green backend", h(func(c *HAProxy) { delete(c.Backends, "green") }).Check("app"), "lb.haproxy.backends.green"},
		{"haproxy same backend", h(func(c *HAProxy) { c.Backends["green"] = "app_blue" }).Check("app"), "both name"},
		{"haproxy no socket", h(func(c *HAProxy) { c.Socket = "" }).Check("app"), "lb.haproxy.socket"},
		{"haproxy tcp socket", h(func(c *HAProxy) { c.Socket = "tcp://127.0.0.1:99999" }).Check("app"), "want tcp://host:port"},
	} {
		if !errors.Is(tc.err, ErrInvalid) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", tc.name, tc.err, tc.want)
		}
	}
}
