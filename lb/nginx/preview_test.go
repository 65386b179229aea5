package nginx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/lb"
)

func TestPreviewURL(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VerifyURL = "http://127.0.0.1:8099/bgd-verify"
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := b.PreviewURL("/api/ping"); err != nil || u != "http://127.0.0.1:8099/api/ping" {
		t.Errorf("PreviewURL = %q, %v", u, err)
	}
	// A user template without the preview route is refused, naming it.
	tmpl := filepath.Join(t.TempDir(), "own.tmpl")
	os.WriteFile(tmpl, []byte("upstream {{.Upstream}} { server {{.Active.Addr}}; }\nserver { listen {{.Listen}}; location / { add_header {{.GenerationHeader}} {{.Generation}} always; return 204; } }\n"), 0o644)
	cfg.Template = tmpl
	if b, err = New("app", cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	u, err := b.PreviewURL("/")
	if !errors.Is(err, lb.ErrUnsupported) || !strings.Contains(err.Error(), "own.tmpl never reads $http_x_bgd_preview") {
		t.Errorf("PreviewURL with a template without the preview route = %q, %v", u, err)
	}
}
