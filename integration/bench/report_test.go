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
