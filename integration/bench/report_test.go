package main

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestMarkdownGolden renders recorded results and compares them with what
// the bench printed for them: testdata/results.md (every table but 8-10, an
// unavailable driver and target, notes, errors) comes from an earlier
// renderer, testdata/short-run.md (every table, all drivers) from a
// `-short` run of the bench before its tables were rendered by table().
func TestMarkdownGolden(t *testing.T) {
	for name, targets := range map[string]int{"results": 19, "short-run": 19} {
		var r Results
		if err := json.Unmarshal([]byte(readTestdata(t, name+".json")), &r); err != nil {
			t.Fatal(err)
		}
		if got, want := r.markdown(), readTestdata(t, name+".md"); got != want {
			t.Errorf("markdown differs from testdata/%s.md:\n%s", name, got)
		}
		if len(r.Targets) != targets {
			t.Errorf("%s: %d targets, want %d", name, len(r.Targets), targets)
		}
	}
}

func TestTable(t *testing.T) {
	var b strings.Builder
	table(&b, "T", []string{"a", "b", "c"}, [][]string{{"x", "", "z"}, unavailableRow("n", "why\nsecond | line", 3)})
	want := "### T\n\n| a | b | c |\n|---|---|---|\n| x | | z |\n| n | why | |\n\n"
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

// TestResultsJSON: the raw results of a run before the result types were
// reorganised (testdata/short-run.json) decode and encode again to the same
// JSON: no key renamed, lost or added.
func TestResultsJSON(t *testing.T) {
	data := readTestdata(t, "short-run.json")
	var r Results
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := errors.Join(json.Unmarshal([]byte(data), &want), json.Unmarshal(again, &got)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the results JSON changed:\n%s", again)
	}
}
