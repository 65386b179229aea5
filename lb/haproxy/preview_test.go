package haproxy

import (
	"context"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
)

// TestPreviewEntryFollowsEachFlip: every flip points app@preview at the
// standby's backend, in HAProxy and in the map file; PreparePreview puts
// back an entry changed behind bgd's back.
func TestPreviewEntryFollowsEachFlip(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	ctx := context.Background()
	for _, c := range []struct {
		active  config.Color
		preview string
	}{{"green", "app_blue"}, {"blue", "app_green"}} {
		if err := b.Flip(ctx, route(c.active)); err != nil {
			t.Fatal(err)
		}
		if v, ok := f.value(mapFile, "app@preview"); !ok || v != c.preview {
			t.Errorf("%s active: runtime preview entry %q (%v), want %s", c.active, v, ok, c.preview)
		}
		if got := fileText(t, mapFile); !strings.HasSuffix(got, "\napp@preview "+c.preview+"\n") {
			t.Errorf("%s active: map file %q, want the line app@preview %s", c.active, got, c.preview)
		}
	}
	f.mu.Lock()
	for i, e := range f.maps[mapFile] {
		if e.key == "app@preview" {
			f.maps[mapFile][i].value = "app_blue"
		}
	}
	f.mu.Unlock()
	if err := b.PreparePreview(ctx, route("blue")); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app@preview"); v != "app_green" {
		t.Errorf("after PreparePreview: preview entry %q, want app_green", v)
	}
}

// TestPreviewURL: the frontend's bind (lb.haproxy.listen), reached on
// loopback when it is a wildcard.
func TestPreviewURL(t *testing.T) {
	for _, c := range []struct{ bind, want string }{
		{"", "http://127.0.0.1:80/api/ping"},
		{":8443", "http://127.0.0.1:8443/api/ping"},
		{"127.0.0.1:8080", "http://127.0.0.1:8080/api/ping"},
	} {
		b, _, _ := setup(t, Options{Bind: c.bind})
		if u, err := b.PreviewURL("/api/ping"); err != nil || u != c.want {
			t.Errorf("bind %q: PreviewURL = %q, %v; want %q", c.bind, u, err, c.want)
		}
	}
}
