package nginx

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb"
)

func TestObserveReadsTheAccessLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "bgd-app.json.log")
	cfg := testConfig(dir)
	cfg.AccessLog = logPath
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	blue := lb.Upstream{Color: "blue", Host: "127.0.0.1", Port: 5005}
	green := lb.Upstream{Color: "green", Host: "127.0.0.1", Port: 5006}
	write := func(lines ...string) {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString(strings.Join(lines, ""))
	}
	// What was logged before the first Observe does not count.
	write(`{"addr":"127.0.0.1:5005","status":"500","time":"0.001"}` + "\n")
	if o, err := b.Observe(context.Background(), blue); err != nil || o.Requests != 0 {
		t.Fatalf("first Observe = %+v, %v; want nothing counted", o, err)
	}
	write(
		`{"addr":"127.0.0.1:5005","status":"200","time":"0.004"}`+"\n",
		`{"addr":"127.0.0.1:5005","status":"503","time":"0.030"}`+"\n",
		// nginx tried green (refused), then blue.
		`{"addr":"127.0.0.1:5006, 127.0.0.1:5005","status":"502, 200","time":"0.000, 0.002"}`+"\n",
		`{"addr":"127.0.0.1:5006","status":"-","time":"-"}`+"\n",
		`not json`+"\n",
		`{"addr":"127.0.0.1:5005","status":"200","time":"0.001"}`, // no newline yet: still being written
	)
	o, err := b.Observe(context.Background(), blue)
	if err != nil || o.Requests != 3 || o.Errors != 1 {
		t.Fatalf("blue = %+v, %v; want 3 requests, 1 error", o, err)
	}
	if o.Sum != 36*time.Millisecond {
		t.Errorf("blue sum = %s, want 36ms (4 + 30 + 2)", o.Sum)
	}
	w := o.Since(lb.Observation{})
	if w.P99 != 50*time.Millisecond {
		t.Errorf("blue p99 = %s, want the 50ms bucket (the 30 ms answer)", w.P99)
	}
	if g, _ := b.Observe(context.Background(), green); g.Requests != 2 || g.Errors != 2 {
		t.Errorf("green = %+v, want 2 attempts, both failed", g)
	}
	write("\n") // the last line ends
	if o, _ := b.Observe(context.Background(), blue); o.Requests != 4 {
		t.Errorf("after the last line ended: %d requests, want 4", o.Requests)
	}
	// A rotated (shorter) log is read from its start.
	if err := os.WriteFile(logPath, []byte(`{"addr":"127.0.0.1:5005","status":"200","time":"0.001"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, _ := b.Observe(context.Background(), blue); o.Requests != 5 {
		t.Errorf("after rotation: %d requests, want 5", o.Requests)
	}

	cfg.AccessLog = ""
	none, _ := New("app", cfg, Options{})
	if _, err := none.Observe(context.Background(), blue); err == nil || !strings.Contains(err.Error(), "lb.nginx.access_log") {
		t.Errorf("Observe without an access log = %v", err)
	}
}
