package builtin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// previewGet sends GET / through the proxy's listener, with the preview
// header when preview is set, and names the slot that answered.
func previewGet(t *testing.T, addr string, preview bool) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if preview {
		req.Header.Set(lb.PreviewHeader, "1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Slot") != resp.Header.Get(lb.SlotHeader) {
		t.Fatalf("GET / (preview %v) = %d, X-Slot %q, X-Bgd-Slot %q", preview, resp.StatusCode, resp.Header.Get("X-Slot"), resp.Header.Get(lb.SlotHeader))
	}
	return resp.Header.Get("X-Slot")
}

// TestPreviewReachesTheStandby: a loopback request with X-Bgd-Preview: 1
// goes to the standby slot, through a flip and during a canary split; other
// requests follow the routing.
func TestPreviewReachesTheStandby(t *testing.T) {
	_, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	split(t, store, b, config.Blue, 0, false)
	for i := range 20 {
		if got := previewGet(t, b.Listen, true); got != "green" {
			t.Fatalf("preview request %d with blue active: answered by %s, want green", i, got)
		}
		if got := previewGet(t, b.Listen, false); got != "blue" {
			t.Fatalf("plain request %d with blue active: answered by %s, want blue", i, got)
		}
	}
	split(t, store, b, config.Green, 0, false)
	if got := previewGet(t, b.Listen, true); got != "blue" {
		t.Errorf("preview with green active: answered by %s, want blue", got)
	}
	split(t, store, b, config.Green, 50, true)
	for i := range 20 {
		if got := previewGet(t, b.Listen, true); got != "blue" {
			t.Fatalf("preview request %d during a 50%% canary of blue: answered by %s, want blue", i, got)
		}
	}
	u, err := b.PreviewURL("/api/ping")
	if want := "http://" + b.Listen + "/api/ping"; err != nil || u != want {
		t.Errorf("PreviewURL = %q, %v; want %q", u, err, want)
	}
}

// TestPreviewIgnoredFromOtherClients: the header from a client that is not
// on loopback changes nothing.
func TestPreviewIgnoredFromOtherClients(t *testing.T) {
	p, store, b := startProxy(t, demoSlot(t, config.Blue), demoSlot(t, config.Green))
	split(t, store, b, config.Blue, 0, false)
	for _, remote := range []string{"192.0.2.10:4000", "[2001:db8::1]:4000"} {
		req := httptest.NewRequest(http.MethodGet, "http://localhost/", nil)
		req.RemoteAddr = remote
		req.Header.Set(lb.PreviewHeader, "1")
		req.Header.Set("X-Forwarded-For", "127.0.0.1")
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if got := rec.Header().Get(lb.SlotHeader); rec.Code != http.StatusOK || got != "blue" {
			t.Errorf("preview header from %s: %d answered by %q, want 200 from blue", remote, rec.Code, got)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "http://localhost/", nil)
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set(lb.PreviewHeader, "yes")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if got := rec.Header().Get(lb.SlotHeader); got != "blue" {
		t.Errorf("X-Bgd-Preview: yes from loopback: answered by %q, want blue (only \"1\" previews)", got)
	}
}
