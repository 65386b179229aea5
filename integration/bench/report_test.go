package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestMarkdownGolden renders a run's results (every table, an unavailable
// driver and target, notes, errors) and compares them with what the bench
// printed for the same results before its tables were rendered by table():
// testdata/results.md comes from that earlier renderer.
func TestMarkdownGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/results.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/results.md")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.markdown(); got != string(want) {
		os.WriteFile(t.TempDir()+"/got.md", []byte(got), 0o644)
		t.Errorf("markdown differs from testdata/results.md:\n%s", got)
	}
	if len(r.Targets) != 19 {
		t.Errorf("%d targets, want 19", len(r.Targets))
	}
}

func TestTable(t *testing.T) {
	var b strings.Builder
	table(&b, []string{"a", "b", "c"}, []string{"x", "", "z"}, unavailableRow("n", "why\nsecond | line", 3))
	want := "| a | b | c |\n|---|---|---|\n| x | | z |\n| n | why | |\n\n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestNumbers(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want string
	}{
		{nil, "–"},
		{[]float64{3}, "3 / 3 ms"},
		{[]float64{1, 2, 3, 4}, "2.50 / 4 ms"},
		{[]float64{12.34, 150.6, 0.123}, "12.3 / 151 ms"},
	} {
		if got := medMax(c.xs, " ms"); got != c.want {
			t.Errorf("medMax(%v) = %q, want %q", c.xs, got, c.want)
		}
	}
}

func TestCanaryTable(t *testing.T) {
	r := &Results{Drivers: map[string]*DriverResult{"builtin": {Driver: "builtin", Canary: []CanaryStep{
		{Weight: 10, Command: "deploy --release canary --canary 10", WallMs: 812.5, Counted: 10000, Slots: map[string]int{"green": 1003, "blue": 8997},
			Canary: "green", Share: 10.03},
		{Weight: 100, Command: "promote", WallMs: 20, Counted: 10000, Failures: 1, Slots: map[string]int{"green": 9999}, Canary: "green", Share: 99.99},
	}}}}
	var b strings.Builder
	r.canaryTable(&b)
	want := "### Canary (figure 8): split accuracy after each weight, and the load while it was set\n\n" +
		"| driver | command | weight | canary's share | off by (points) | failed (counting) | failed, new-conn clients | failed, keep-alive clients | command wall time |\n" +
		"|---|---|---|---|---|---|---|---|---|\n" +
		"| builtin | `deploy --release canary --canary 10` | 10% | 10.03% (1003 of 10000) | 0.03 | 0 | 0 of 0 | 0 of 0 | 812 ms |\n" +
		"| builtin | `promote` | 100% | 99.99% (9999 of 10000) | 0.01 | 1 | 0 of 0 | 0 of 0 | 20 ms |\n\n"
	if got := b.String(); got != want {
		t.Errorf("canaryTable =\n%s\nwant\n%s", got, want)
	}
	var none strings.Builder
	(&Results{Drivers: map[string]*DriverResult{"nginx": {Driver: "nginx"}}}).canaryTable(&none)
	if none.Len() != 0 {
		t.Errorf("canaryTable without canary steps = %q, want nothing", none.String())
	}
}
