package admin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// answer returns a recorded HAProxy 2.6 answer from testdata/answers.
func answer(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "answers", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestParseBackends(t *testing.T) {
	got, err := parseBackends(answer(t, "show_backend.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "nowhere,app_blue,app_green" {
		t.Errorf("got %q", got)
	}
	for _, bad := range []string{"", "\n", answer(t, "unknown_command.txt"), "# name\nfoo bar\n\n"} {
		if _, err := parseBackends(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseBackends(%.30q): err %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	// server green of app_green in each recorded situation, and whether Up.
	for _, tc := range []struct {
		file   string
		status string
		up     bool
	}{
		{"show_stat_up.txt", "UP", true},
		{"show_stat_drain.txt", "DRAIN", false},
		{"show_stat_maint.txt", "MAINT", false},
		{"show_stat_transition.txt", "UP 1/2", false},
		{"show_stat_forced_down.txt", "UP 1/2", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rows, err := parseStat(answer(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 7 {
				t.Fatalf("got %d rows, want 7 (2 frontends, 3 backends, 2 servers)", len(rows))
			}
			var green *Stat
			for i := range rows {
				if rows[i].Proxy == "app_green" && rows[i].Name == "green" {
					green = &rows[i]
				}
			}
			if green == nil {
				t.Fatal("no app_green/green row")
			}
			if green.Status != tc.status || green.Up() != tc.up || !green.IsServer() {
				t.Errorf("status %q up %v server %v, want %q %v true", green.Status, green.Up(), green.IsServer(), tc.status, tc.up)
			}
			if green.Addr != "127.0.0.1:18082" || green.Fields["iid"] != "5" {
				t.Errorf("addr %q iid %q", green.Addr, green.Fields["iid"])
			}
		})
	}
	rows, err := parseStat(answer(t, "show_stat_backend.txt"))
	if err != nil || len(rows) != 1 || rows[0].Proxy != "app_blue" || !rows[0].Up() || rows[0].CheckStatus != "L7OK" {
		t.Errorf("show stat app_blue 4 -1: %+v, %v", rows, err)
	}
	fe, _ := parseStat(answer(t, "show_stat_up.txt"))
	if fe[0].Type != StatFrontend || fe[0].Up() {
		t.Errorf("a frontend is never an up server: %+v", fe[0])
	}
	for _, bad := range []string{"", "garbage", answer(t, "unknown_command.txt"), "# pxname,svname\nx,y\n"} {
		if _, err := parseStat(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseStat(%.30q): err %v, want ErrMalformed", bad, err)
		}
	}
}

// TestParseStatWideHeader: cost follows the input, not header × rows.
func TestParseStatWideHeader(t *testing.T) {
	ans := "# pxname,svname,status,type" + strings.Repeat(",x", 200000) + "\n" +
		strings.Repeat("p,s,UP,2\n", 50000) + "\n"
	start := time.Now()
	rows, err := parseStat(ans)
	if err != nil || len(rows) != 50000 || !rows[0].Up() {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s", el)
	}
}

func TestParseGetMap(t *testing.T) {
	for _, tc := range []struct {
		file string
		want MapLookup
	}{
		{"get_map_found.txt", MapLookup{Found: true, Key: "app", Value: "app_blue"}},
		{"get_map_missing.txt", MapLookup{}},
		{"get_map_typed.txt", MapLookup{Found: true, Key: "app", Value: "12"}},
	} {
		got, err := parseGetMap(answer(t, tc.file))
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.file, got, err, tc.want)
		}
	}
	// HAProxy does not escape quotes; the value runs to the last `", type="`.
	got, err := parseGetMap(`type=str, case=sensitive, found=yes, idx=tree, key="a", value="x", type="y", type="str"` + "\n\n")
	if err != nil || got.Value != `x", type="y` {
		t.Errorf("quoted value: %+v, %v", got, err)
	}
	for _, bad := range []string{"", answer(t, "get_map_unknown.txt"), "found=yes\n"} {
		if _, err := parseGetMap(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseGetMap(%.30q): err %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseMapList(t *testing.T) {
	got, err := parseMapList(answer(t, "show_map_list.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != 2 || got[0].File != "/tmp/hx/app.map" || !strings.HasPrefix(got[0].Description, "pattern loaded") {
		t.Errorf("got %+v", got)
	}
	got, err = parseMapList(answer(t, "show_map_list_typed.txt"))
	if err != nil || len(got) != 1 || got[0].ID != 0 || got[0].File != "/tmp/hx/typed.map" {
		t.Errorf("typed: %+v, %v", got, err)
	}
	if _, err := parseMapList(answer(t, "unknown_command.txt")); !errors.Is(err, ErrMalformed) {
		t.Errorf("error text parsed as a map list: %v", err)
	}
}

// seedAnswers adds every recorded answer to a fuzz target's corpus: each
// parser also meets the others' answers and HAProxy's error texts.
func seedAnswers(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "answers", "*.txt"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no recorded answers: %v", err)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
}

// fuzzParser fuzzes parse from every recorded answer: an error must match
// ErrMalformed, and whatever parses must pass check.
func fuzzParser[T any](f *testing.F, parse func(string) (T, error), check func(t *testing.T, v T)) {
	seedAnswers(f)
	f.Fuzz(func(t *testing.T, ans string) {
		v, err := parse(ans)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		check(t, v)
	})
}

func FuzzParseStat(f *testing.F) {
	fuzzParser(f, parseStat, func(t *testing.T, rows []Stat) {
		for _, r := range rows {
			if r.Proxy == "" || r.Name == "" {
				t.Fatalf("row without names: %+v", r)
			}
			if r.Up() && !r.IsServer() {
				t.Fatalf("non-server row is up: %+v", r)
			}
		}
	})
}

func FuzzParseGetMap(f *testing.F) {
	fuzzParser(f, parseGetMap, func(t *testing.T, m MapLookup) {
		if !m.Found && (m.Key != "" || m.Value != "") {
			t.Fatalf("not found but has a key or value: %+v", m)
		}
		if strings.Contains(m.Value, "\n") || strings.Contains(m.Key, "\n") {
			t.Fatalf("value spans lines: %+v", m)
		}
	})
}

func FuzzParseMapList(f *testing.F) {
	fuzzParser(f, parseMapList, func(t *testing.T, ms []MapInfo) {
		for _, m := range ms {
			if strings.Contains(m.File, "\n") {
				t.Fatalf("file spans lines: %+v", m)
			}
		}
	})
}

func FuzzParseBackends(f *testing.F) {
	fuzzParser(f, parseBackends, func(t *testing.T, names []string) {
		for _, n := range names {
			if n == "" || strings.ContainsAny(n, " \t\n") {
				t.Fatalf("bad backend name %q", n)
			}
		}
	})
}

// TestParseGetMapAnswer was ExampleParseGetMap while the parsers were exported.
func TestParseGetMapAnswer(t *testing.T) {
	// The answer of HAProxy 2.6 to "get map /etc/haproxy/bgd.map app".
	m, err := parseGetMap(`type=str, case=sensitive, found=yes, idx=tree, key="app", value="app_green", type="str"` + "\n\n")
	if got := fmt.Sprintln(m.Found, m.Value, err); got != "true app_green <nil>\n" {
		t.Errorf("got %q, want %q", got, "true app_green <nil>\n")
	}
}
