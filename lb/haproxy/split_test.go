package haproxy

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/lbtest"
)

// canary is the route keeping active and giving the other colour weight
// percent of new requests.
func canary(active config.Color, weight int, sticky bool) lb.Route {
	return lbtest.Route(active, 8, func(r *lb.Route) {
		r.Active.Weight, r.Standby.Weight, r.Sticky = 100-weight, weight, sticky
	})
}

// TestFlipSplit: a split sets both weights, waits for both servers, points
// the map at the split backend, reads all three back and rewrites the
// file; Active names the colour with the larger weight; promote and abort
// are plain flips back to one colour's backend.
func TestFlipSplit(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	ctx := context.Background()
	if err := b.Flip(ctx, canary("blue", 10, false)); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_split" {
		t.Errorf("runtime entry %q, want app_split", v)
	}
	if f.weights["blue"] != 90 || f.weights["green"] != 10 {
		t.Errorf("weights %v, want blue 90 green 10", f.weights)
	}
	if got := fileText(t, mapFile); got != "# managed by bgd\nother other_blue\napp app_split\napp@preview app_green\n" {
		t.Errorf("map file:\n%s", got)
	}
	m := "get map " + mapFile + " app"
	want := []string{"show backend", "show stat", m, "get weight app_split/blue", "get weight app_split/green",
		"set weight app_split/blue 90", "set weight app_split/green 10", "show stat app_split 4 -1",
		"set map " + mapFile + " app app_split", m, "get weight app_split/blue", "get weight app_split/green", "get map " + mapFile + " app@maintenance",
		"get map " + mapFile + " app@preview", "add map " + mapFile + " app@preview app_green"}
	if got := f.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands:\n%q\nwant\n%q", got, want)
	}
	if got, err := b.Active(ctx); err != nil || got != config.Blue {
		t.Errorf("Active during a 10%% canary of green: %q, %v; want blue", got, err)
	}

	// A new weight while split: only the weights change.
	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
	if err := b.Flip(ctx, canary("blue", 70, false)); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "set map") || strings.HasPrefix(c, "add map") {
			t.Errorf("sent %q when the map already names the split backend", c)
		}
	}
	if got, err := b.Active(ctx); err != nil || got != config.Green {
		t.Errorf("Active with green at 70%%: %q, %v; want green, the larger weight", got, err)
	}
	if err := b.Flip(ctx, canary("blue", 50, false)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Active(ctx); !errors.Is(err, ErrEvenSplit) || !strings.Contains(err.Error(), "blue 50, green 50") {
		t.Errorf("Active at 50/50: %q, %v; want ErrEvenSplit naming the weights", got, err)
	}

	// Promote: a plain flip to the canary's colour.
	if err := b.Flip(ctx, route("green")); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_green" {
		t.Errorf("after promote: entry %q, want app_green", v)
	}
	if got, err := b.Active(ctx); err != nil || got != config.Green {
		t.Errorf("Active after promote: %q, %v", got, err)
	}
	// Abort of a new canary (blue at 20% of green): back to green alone.
	if err := b.Flip(ctx, canary("green", 20, false)); err != nil {
		t.Fatal(err)
	}
	if err := b.Flip(ctx, route("green")); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_green" || fileText(t, mapFile) != "# managed by bgd\nother other_blue\napp app_green\napp@preview app_blue\n" {
		t.Errorf("after abort: entry %q, file %q", v, fileText(t, mapFile))
	}
}

// TestFlipSplitFaults: each refusal names what to fix, and leaves the map
// entry, the weights and the file as they were.
func TestFlipSplitFaults(t *testing.T) {
	const fileBefore = "# managed by bgd\nother other_blue\napp app_blue\n"
	for _, tc := range []struct {
		name    string
		sticky  bool
		arrange func(f *fakeHAProxy)
		is      error
		says    []string
	}{
		{"no split backend", false, func(f *fakeHAProxy) { f.split = "" }, ErrNoBackend,
			[]string{`backend "app_split"`, "lb.haproxy.split_backend", "bgd render", "app_blue, app_green"}},
		{"no green server", false, func(f *fakeHAProxy) { f.splitServers = []string{"blue", "canary"} }, ErrNoBackend,
			[]string{`"app_split" has no server named green`, "it has: blue, canary"}},
		{"a server elsewhere than its slot", false, func(f *fakeHAProxy) { f.addrs["green"] = "127.0.0.1:5999" }, ErrNoBackend,
			[]string{"server green of backend \"app_split\" is 127.0.0.1:5999, but the green slot listens on 127.0.0.1:5006", "bgd render"}},
		{"sticky without cookie", true, func(f *fakeHAProxy) {}, ErrSticky,
			[]string{"cookie bgd_app insert indirect nocache httponly", "canary.sticky: true", "reload"}},
		{"sticky with servers' cookies missing", true, func(f *fakeHAProxy) { f.splitCookie = "bgd_app" }, ErrSticky,
			[]string{`blue="" green=""`}},
		{"cookie on a split that is not sticky", false, func(f *fakeHAProxy) {
			f.splitCookie, f.cookies = "bgd_app", map[string]string{"blue": "blue", "green": "green"}
		}, ErrSticky, []string{`inserts cookie "bgd_app"`, "canary.sticky: true"}},
		{"canary never UP", false, func(f *fakeHAProxy) { f.splitStatus["green"] = "DOWN" }, ErrNoServerUp,
			[]string{"green DOWN", `backend "app_split"`}},
		{"set weight changes nothing", false, func(f *fakeHAProxy) {
			f.answer = func(cmd string) string {
				if strings.HasPrefix(cmd, "set weight app_split/green") {
					return "\n"
				}
				return ""
			}
		}, lb.ErrNotConfirmed, []string{"get weight answers blue 90, green 0", "restored"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f, mapFile := setup(t, Options{})
			f.mu.Lock()
			tc.arrange(f)
			f.mu.Unlock()
			err := b.Flip(context.Background(), canary("blue", 10, tc.sticky))
			if !errors.Is(err, tc.is) {
				t.Fatalf("Flip = %v, want %v", err, tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if v, _ := f.value(mapFile, "app"); v != "app_blue" {
				t.Errorf("runtime entry %q, want app_blue kept", v)
			}
			f.mu.Lock()
			if f.split != "" && (f.weights["blue"] != 100 || f.weights["green"] != 0) {
				t.Errorf("weights %v, want blue 100 green 0 restored", f.weights)
			}
			f.mu.Unlock()
			if got := fileText(t, mapFile); got != fileBefore {
				t.Errorf("map file changed:\n%s", got)
			}
		})
	}
}

// TestFlipSplitSticky: a sticky split flips when the split backend has the
// cookie and the servers' cookies are their colours.
func TestFlipSplitSticky(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	f.splitCookie, f.cookies = "bgd_app", map[string]string{"blue": "blue", "green": "green"}
	if err := b.Flip(context.Background(), canary("green", 25, true)); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.value(mapFile, "app"); v != "app_split" || f.weights["blue"] != 25 || f.weights["green"] != 75 {
		t.Errorf("entry %q weights %v, want app_split with blue 25 green 75", v, f.weights)
	}
}

// TestInFlightCountsTheSplitServer: a drain of a colour waits on what the
// split backend's server of that colour has too.
func TestInFlightCountsTheSplitServer(t *testing.T) {
	b, f, _ := setup(t, Options{})
	f.cur = map[string][2]string{"app_blue": {"1", "0"}, "app_split/blue": {"2", "1"}, "app_split/green": {"4", "0"}}
	if n, err := b.InFlight(context.Background(), lb.Upstream{Color: config.Blue}); err != nil || n != 4 {
		t.Errorf("InFlight(blue) = %d, %v; want 1 + 2 + 1", n, err)
	}
	if n, err := b.InFlight(context.Background(), lb.Upstream{Color: config.Green}); err != nil || n != 4 {
		t.Errorf("InFlight(green) = %d, %v; want 4", n, err)
	}
}

// TestRenderSplit: a sticky split route renders the split backend with its
// weights and the cookie lines (testdata/sticky_split.golden); Options.Sticky
// renders the cookie for today's route too.
func TestRenderSplit(t *testing.T) {
	cfg := config.HAProxy{Socket: "/run/haproxy/admin.sock", MapFile: "/etc/haproxy/bgd.map", SplitBackend: "app_canary",
		Backends: map[config.Color]string{config.Blue: "app_blue", config.Green: "app_green"}}
	b, err := New("app", cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Render(canary("green", 10, true))
	if err != nil {
		t.Fatal(err)
	}
	lbtest.Golden(t, "sticky_split", got, *update)
	s, err := New("app", cfg, Options{Sticky: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Render(route("blue"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n    cookie bgd_app insert indirect nocache httponly\n",
		"server blue 127.0.0.1:5005 check inter 1s fastinter 100ms downinter 50ms rise 1 fall 3 weight 100 cookie blue\n",
		"server green 127.0.0.1:5006 check inter 1s fastinter 100ms downinter 50ms rise 1 fall 3 weight 0 cookie green\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("Options.Sticky render lacks %q:\n%s", want, got)
		}
	}
}

// TestFlipSplitMapFileLost: when the map file cannot be rewritten after
// the split was applied, the entry and the weights are put back, so a
// reload and HAProxy agree.
func TestFlipSplitMapFileLost(t *testing.T) {
	b, f, mapFile := setup(t, Options{})
	f.answer = func(cmd string) string {
		if cmd == "set map "+mapFile+" app app_split" {
			os.Remove(mapFile) // before HAProxy answers: applied, then the file is gone
		}
		return ""
	}
	err := b.Flip(context.Background(), canary("blue", 10, false))
	if !errors.Is(err, ErrMapFile) || !strings.Contains(err.Error(), "undone") {
		t.Fatalf("Flip = %v, want ErrMapFile saying the change was undone", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maps[mapFile][0].value != "app_blue" || f.weights["blue"] != 100 || f.weights["green"] != 0 {
		t.Errorf("entry %q weights %v, want app_blue with blue 100 green 0", f.maps[mapFile][0].value, f.weights)
	}
}
