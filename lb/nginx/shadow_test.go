package nginx

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// TestShadowNeedsAMirror: a user template that writes no mirror to the
// standby is refused when a route asks for shadow traffic, and still
// renders routes without it.
func TestShadowNeedsAMirror(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Template = filepath.Join(dir, "user.tmpl")
	os.WriteFile(cfg.Template, []byte("upstream {{.Upstream}} { server {{.Active.Addr}}; }\n"), 0o644)
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Capabilities().Shadow {
		t.Fatal("Capabilities().Shadow = false")
	}
	if _, err := b.Render(testRoute("blue", 2)); err != nil {
		t.Fatalf("Render without shadow: %v", err)
	}
	_, err = b.Render(lbtest.Route("blue", 3, func(r *lb.Route) { r.Shadow = true }))
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "renders no `mirror`") {
		t.Fatalf("Render with shadow of a template without mirror: %v", err)
	}
}

// TestShadowTemplateIsValidNginx: nginx -t accepts the default template's
// shadow output, alone and with a sticky split.
func TestShadowTemplateIsValidNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed")
	}
	for _, r := range []lb.Route{
		lbtest.Route("green", 8, func(r *lb.Route) { r.Shadow = true }),
		lbtest.Route("blue", 9, func(r *lb.Route) { r.Active.Weight, r.Standby.Weight, r.Sticky, r.Shadow = 90, 10, true, true }),
	} {
		dir := t.TempDir()
		cfg := testConfig(dir)
		cfg.Listen = "127.0.0.1:1"
		b, err := New("app", cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		out, err := b.Render(r)
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "nginx.conf")
		main := "daemon off; pid " + filepath.Join(dir, "nginx.pid") + "; error_log stderr;\nevents {}\nhttp {\n" + string(out) + "\n}\n"
		os.WriteFile(conf, []byte(main), 0o644)
		if res, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
			t.Errorf("nginx -t of the shadow route %s: %v\n%s", describe(r), err, res)
		}
	}
}

func describe(r lb.Route) string {
	if r.Splits() {
		return "with a sticky split"
	}
	return "alone"
}
