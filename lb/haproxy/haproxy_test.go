package haproxy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// route is the test route to active, generation 7.
func route(active config.Color) lb.Route { return lbtest.Route(active, 7) }

// setup returns a driver talking to a fake HAProxy whose map file holds
// "app app_blue" on disk and in memory.
func setup(t *testing.T, opts Options) (*Balancer, *fakeHAProxy, string) {
	t.Helper()
	mapFile := filepath.Join(t.TempDir(), "bgd.map")
	if err := os.WriteFile(mapFile, []byte("# managed by bgd\nother other_blue\napp app_blue\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f := startFakeHAProxy(t, mapFile)
	if opts.UpTimeout == 0 {
		opts.UpTimeout = 300 * time.Millisecond
	}
	opts.PollInterval = 10 * time.Millisecond
	b, err := New("app", config.HAProxy{Socket: f.sock, MapFile: mapFile,
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, f, mapFile
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestFlip(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	ctx := context.Background()
	if got, err := b.Active(ctx); err != nil || got != "blue" {
		t.Fatalf("Active before: %q, %v", got, err)
	}
	if err := b.Flip(ctx, route("green")); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_green" {
		t.Errorf("runtime entry %q, want app_green", v)
	}
	if got := fileText(t, mapFile); got != "# managed by bgd\nother other_blue\napp app_green\napp@preview app_blue\n" {
		t.Errorf("map file:\n%s", got)
	}
	fi, _ := os.Stat(mapFile)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("map file mode %v, want 0640 kept", fi.Mode().Perm())
	}
	if got, err := b.Active(ctx); err != nil || got != "green" {
		t.Errorf("Active after: %q, %v", got, err)
	}
	want := []string{"get map " + mapFile + " app", "show backend", "get map " + mapFile + " app",
		"show stat app_green 4 -1", "set map " + mapFile + " app app_green", "get map " + mapFile + " app",
		"get map " + mapFile + " app@maintenance", "get map " + mapFile + " app@preview", "add map " + mapFile + " app@preview app_blue", "get map " + mapFile + " app"}
	if got := f.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands:\n%q\nwant\n%q", got, want)
	}
}

func TestFlipAddsAMissingEntry(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	f.mu.Lock()
	f.maps[mapFile] = nil
	f.mu.Unlock()
	os.WriteFile(mapFile, []byte("other other_blue"), 0o644) // no final newline
	ctx := context.Background()
	if _, err := b.Active(ctx); !errors.Is(err, ErrNoEntry) {
		t.Errorf("Active without entry: %v, want ErrNoEntry", err)
	}
	if err := b.Flip(ctx, route("green")); err != nil {
		t.Fatal(err)
	}
	if v, ok := f.value(mapFile, "app"); !ok || v != "app_green" {
		t.Errorf("runtime entry %q %v", v, ok)
	}
	if got := fileText(t, mapFile); got != "other other_blue\napp app_green\napp@preview app_blue\n" {
		t.Errorf("map file %q", got)
	}
	if !strings.Contains(strings.Join(f.commands(), "|"), "add map "+mapFile+" app app_green") {
		t.Errorf("no add map in %q", f.commands())
	}
}

// A flip to the colour HAProxy already routes to (bgd start of the active
// colour) changes no entry, waits for a server UP, and fixes the file.
func TestFlipToTheActiveColourWaitsUpAndFixesTheFile(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	os.WriteFile(mapFile, []byte("app app_green\n"), 0o644)
	if err := b.Flip(context.Background(), route("blue")); err != nil {
		t.Fatal(err)
	}
	checked := false
	for _, c := range f.commands() {
		if (strings.HasPrefix(c, "set ") || strings.HasPrefix(c, "add ")) && !strings.HasSuffix(c, " app@preview app_green") {
			t.Errorf("sent %q for a flip to the active colour", c)
		}
		checked = checked || strings.HasPrefix(c, "show stat app_blue")
	}
	if !checked {
		t.Errorf("no show stat of app_blue in %q: the flip must wait for HAProxy to see it UP", f.commands())
	}
	if got := fileText(t, mapFile); got != "app app_blue\napp@preview app_green\n" {
		t.Errorf("map file %q, want it to agree with HAProxy", got)
	}
}

func TestFlipWaitsForHAProxysChecks(t *testing.T) {
	b, f, _ := setup(t, Options{UpTimeout: 5 * time.Second})
	f.setStatus("app_green", "DOWN")
	time.AfterFunc(150*time.Millisecond, func() { f.setStatus("app_green", "UP 1/2") })
	time.AfterFunc(300*time.Millisecond, func() { f.setStatus("app_green", "UP") })
	start := time.Now()
	if err := b.Flip(context.Background(), route("green")); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("flipped after %s, before HAProxy reported the server fully UP", el)
	}
}

// TestFaultsLeaveRoutingUnchanged: each fault is an error that says what
// and where, and HAProxy's entry and the map file are as before.
func TestFaultsLeaveRoutingUnchanged(t *testing.T) {
	const fileBefore = "# managed by bgd\nother other_blue\napp app_blue\n"
	for _, tc := range []struct {
		name    string
		arrange func(t *testing.T, b *Balancer, f *fakeHAProxy, mapFile string)
		is      error
		says    []string
	}{
		{"backend missing", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.backends = []string{"app_blue"}
		}, ErrNoBackend, []string{`backend "app_green"`, "app_blue"}},
		{"no server up", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.setStatus("app_green", "DOWN")
		}, ErrNoServerUp, []string{`backend "app_green"`, "srv DOWN (Layer7 wrong status)"}},
		{"server draining", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.setStatus("app_green", "DRAIN")
		}, ErrNoServerUp, []string{"srv DRAIN"}},
		{"map not loaded", func(t *testing.T, b *Balancer, f *fakeHAProxy, mapFile string) {
			b.cfg.MapFile = mapFile + ".other"
		}, ErrMapNotLoaded, []string{".other", "it has: /", "use_backend %[str(app),map("}},
		{"set answers an error text", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.answer = func(cmd string) string {
				if strings.HasPrefix(cmd, "set map") {
					return "unable to parse 'app_green'.\n\n"
				}
				return ""
			}
		}, nil, []string{"unable to parse 'app_green'.", "set map"}},
		{"set changes nothing", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.answer = func(cmd string) string {
				if strings.HasPrefix(cmd, "set map") {
					return "\n"
				}
				return ""
			}
		}, lb.ErrNotConfirmed, []string{"restored"}},
		{"set applied but its answer lost", func(t *testing.T, b *Balancer, f *fakeHAProxy, mapFile string) {
			b.client.Timeout = 100 * time.Millisecond
			f.answer = func(cmd string) string {
				if cmd == "set map "+mapFile+" app app_green" {
					f.maps[mapFile][0].value = "app_green" // f.mu is held by handle
					return "<hang>"
				}
				return ""
			}
		}, context.DeadlineExceeded, []string{"set the map entry"}},
		{"map file vanishes", func(t *testing.T, b *Balancer, f *fakeHAProxy, mapFile string) {
			f.after = func(cmd string) {
				if strings.HasPrefix(cmd, "set map") && strings.HasSuffix(cmd, "app_green") {
					os.Remove(mapFile)
				}
			}
		}, ErrMapFile, []string{"undone"}},
		{"map file missing", func(t *testing.T, b *Balancer, f *fakeHAProxy, mapFile string) {
			os.Remove(mapFile)
		}, ErrMapFile, []string{"must exist on this host"}},
		{"socket missing", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			b.client.Addr = f.sock + ".missing"
		}, lb.ErrUnreachable, []string{".missing", "no such file"}},
		{"master CLI instead of the stats socket", func(t *testing.T, b *Balancer, f *fakeHAProxy, _ string) {
			f.answer = func(string) string {
				return "Unknown command, but maybe one of the following ones is a better match:\n  show proc\n\n"
			}
		}, admin.ErrUnknownCommand, []string{"Unknown command"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f, mapFile := setup(t, Options{UpTimeout: 100 * time.Millisecond})
			tc.arrange(t, b, f, mapFile)
			err := b.Flip(context.Background(), route("green"))
			if err == nil {
				t.Fatal("flip succeeded")
			}
			t.Logf("error: %v", err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error is not %v", tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q", s)
				}
			}
			if v, _ := f.value(mapFile, "app"); v != "app_blue" {
				t.Errorf("runtime entry is %q, want app_blue unchanged", v)
			}
			if data, err := os.ReadFile(mapFile); err == nil && string(data) != fileBefore {
				t.Errorf("map file changed:\n%s", data)
			}
		})
	}
}

func TestActive(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	ctx := context.Background()
	f.mu.Lock()
	f.maps[mapFile][0].value = "legacy_backend"
	f.mu.Unlock()
	if _, err := b.Active(ctx); err == nil || !strings.Contains(err.Error(), `"legacy_backend"`) {
		t.Errorf("Active with a foreign backend: %v", err)
	}
	b.client.Addr = filepath.Join(t.TempDir(), "nope.sock")
	_, err := b.Active(ctx)
	if !errors.Is(err, lb.ErrUnreachable) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope.sock") {
		t.Errorf("Active, socket missing: %v", err)
	}
}

// InFlight adds scur and qcur of the colour's servers, and says what is
// wrong when HAProxy cannot tell.
func TestInFlight(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cur     map[string][2]string
		color   config.Color
		want    int
		wantErr string
	}{
		{name: "idle", color: config.Blue, want: 0},
		{name: "sessions and queue", cur: map[string][2]string{"app_blue": {"3", "2"}, "app_green": {"7", "0"}}, color: config.Blue, want: 5},
		{name: "the other colour", cur: map[string][2]string{"app_blue": {"3", "2"}, "app_green": {"7", "0"}}, color: config.Green, want: 7},
		{name: "not a number", cur: map[string][2]string{"app_blue": {"x", "0"}}, color: config.Blue, wantErr: `app_blue/srv has scur "x", not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f, _ := setup(t, Options{})
			f.cur = tc.cur
			n, err := b.InFlight(ctx, lb.Upstream{Color: tc.color})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("InFlight = %d, %v; want an error with %q", n, err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("InFlight(%s) = %d, %v; want %d", tc.color, n, err, tc.want)
			}
		})
	}
	b, f, _ := setup(t, Options{})
	f.backends = []string{"app_blue"}
	if _, err := b.InFlight(ctx, lb.Upstream{Color: config.Green}); !errors.Is(err, ErrNoBackend) {
		t.Errorf("InFlight of a backend HAProxy lacks: %v, want ErrNoBackend", err)
	}
	b.client.Addr = filepath.Join(t.TempDir(), "nope.sock")
	if _, err := b.InFlight(ctx, lb.Upstream{Color: config.Blue}); !errors.Is(err, lb.ErrUnreachable) {
		t.Errorf("InFlight, socket missing: %v, want lb.ErrUnreachable", err)
	}
}

func TestNewRefusesWhatWouldSplitACommand(t *testing.T) {
	good := config.HAProxy{Socket: "/run/haproxy/admin.sock", MapFile: "/etc/haproxy/bgd.map",
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}
	if _, err := New("app", good, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		service string
		mutate  func(*config.HAProxy)
	}{
		{"service with a space", "my app", func(*config.HAProxy) {}},
		{"map file with ';'", "app", func(c *config.HAProxy) { c.MapFile = "/etc/x.map;show info" }},
		{"backend with '#'", "app", func(c *config.HAProxy) { c.Backends = map[config.Color]string{config.Blue: "a#b", config.Green: "g"} }},
		{"same backend twice", "app", func(c *config.HAProxy) { c.Backends = map[config.Color]string{config.Blue: "x", config.Green: "x"} }},
		{"no socket", "app", func(c *config.HAProxy) { c.Socket = "" }},
		{"no green backend", "app", func(c *config.HAProxy) { c.Backends = map[config.Color]string{"blue": "x"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			if _, err := New(tc.service, c, Options{}); !errors.Is(err, config.ErrInvalid) {
				t.Errorf("New: %v, want config.ErrInvalid", err)
			}
		})
	}
	if _, err := New("app", good, Options{Template: "{{.Nope"}); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("bad template: %v, want config.ErrInvalid", err)
	}
}

func TestSetMapLine(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		changed        bool
	}{
		{"replace", "app app_blue\n", "app app_green\n", true},
		{"same", "app app_green\n", "app app_green\n", false},
		{"append", "other x\n", "other x\napp app_green\n", true},
		{"append without final newline", "other x", "other x\napp app_green\n", true},
		{"empty file", "", "app app_green\n", true},
		{"keep comments and others", "# c\n\nother x\napp app_blue\nz y\n", "# c\n\nother x\napp app_green\nz y\n", true},
		{"commented key untouched", "#app app_blue\n", "#app app_blue\napp app_green\n", true},
		{"prefix key untouched", "application x\n", "application x\napp app_green\n", true},
		{"duplicates collapse", "app a\nb c\napp d\n", "app app_green\nb c\n", true},
		{"extra spaces normalised", "app   app_green  \n", "app app_green\n", true},
		{"crlf kept elsewhere", "other x\r\napp app_blue\r\n", "other x\r\napp app_green\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := setMapLine([]byte(tc.in), "app", "app_green")
			if string(got) != tc.want || changed != tc.changed {
				t.Errorf("got %q changed=%v, want %q changed=%v", got, changed, tc.want, tc.changed)
			}
		})
	}
}

// TestRender compares the rendered snippet with testdata/<case>.golden;
// run `go test ./lb/haproxy -run TestRender -update` to rewrite them.
func TestRender(t *testing.T) {
	base := config.HAProxy{Socket: "/run/haproxy/admin.sock", MapFile: "/etc/haproxy/bgd.map",
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}
	tcp := base
	tcp.Socket = "tcp://127.0.0.1:9999"
	for _, tc := range []struct {
		name   string
		cfg    config.HAProxy
		opts   Options
		active string
	}{
		{"default", base, Options{}, "blue"},
		{"green_active", base, Options{}, "green"},
		{"tcp_socket", tcp, Options{Bind: "127.0.0.1:8080", Check: "inter 200ms rise 1 fall 2"}, "blue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New("app", tc.cfg, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Render(route(config.Color(tc.active)))
			if err != nil {
				t.Fatal(err)
			}
			lbtest.Golden(t, tc.name, got, *update)
		})
	}
	b, _ := New("app", base, Options{Template: "{{.Service}} {{.Active.Name}} {{range .Backends}}{{.Color}}={{.Addr}} {{end}}{{.Generation}}"})
	got, err := b.Render(route("green"))
	if err != nil || string(got) != "app app_green blue=127.0.0.1:5005 green=127.0.0.1:5006 7" {
		t.Errorf("user template: %q, %v", got, err)
	}
	r := route("blue")
	r.Standby.Port = 0
	if _, err := b.Render(r); err == nil {
		t.Error("rendered a backend without a port")
	}
}

// TestRenderFromConfig: lb.haproxy.listen and lb.haproxy.template reach the
// snippet, and a template file that does not parse, names an unknown field
// or is missing is refused by New (that is, at config load), naming it.
func TestRenderFromConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := config.HAProxy{Socket: "/run/haproxy/admin.sock", MapFile: "/etc/haproxy/bgd.map",
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}
	for listen, want := range map[string]string{"8080": "bind :8080\n", "127.0.0.1:8443": "bind 127.0.0.1:8443\n", "[::1]:80": "bind [::1]:80\n"} {
		c := cfg
		c.Listen = listen
		b, err := New("app", c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Render(route("blue"))
		if err != nil || !bytes.Contains(got, []byte("    "+want)) {
			t.Errorf("listen %q: want %q in\n%s (%v)", listen, want, got, err)
		}
	}

	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := cfg
	c.Listen = "9000"
	c.Template = write("mine.tmpl", "frontend {{.Service}}\n    bind {{.Bind}}\n    default_backend {{.Active.Name}}\n")
	b, err := New("app", c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Render(route("green"))
	if want := "frontend app\n    bind :9000\n    default_backend app_green\n"; err != nil || string(got) != want {
		t.Errorf("user template file: got %q, %v; want %q", got, err, want)
	}

	for name, tc := range map[string]struct{ path, want string }{
		"does not parse": {write("broken.tmpl", "bind {{.Bind"), "does not parse"},
		"unknown field":  {write("field.tmpl", "bind {{.Nope}}"), "does not render"},
		"missing file":   {filepath.Join(dir, "absent.tmpl"), "absent.tmpl"},
	} {
		c := cfg
		c.Template = tc.path
		_, err := New("app", c, Options{})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"app"`) {
			t.Errorf("%s: got %v, want a config error naming the service and %q", name, err, tc.want)
		}
	}
}

// TestSetMapLineKeepsOtherLines was ExampleSetMapLine while it was exported.
func TestSetMapLineKeepsOtherLines(t *testing.T) {
	file := []byte("# bgd routes\nshop shop_blue\napp app_blue\n")
	out, changed := setMapLine(file, "app", "app_green")
	if got, want := string(out)+fmt.Sprintln(changed), "# bgd routes\nshop shop_blue\napp app_green\ntrue\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
