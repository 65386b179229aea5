package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestJSONDuration reads duration_ns from real `bgd --json` answers
// (testdata/switch.json, deploy.json).
func TestJSONDuration(t *testing.T) {
	for _, c := range []struct {
		name, stdout string
		want         time.Duration
	}{
		{"switch", readTestdata(t, "switch.json"), 25592805},
		{"deploy", readTestdata(t, "deploy.json"), 111046987},
		{"no duration", `{"ok": true}`, 0},
		{"not JSON (a failed run's empty stdout)", "", 0},
		{"a log line", "time=2026-12-01T04:32:31Z level=INFO msg=x", 0},
	} {
		if got := jsonDuration(c.stdout); got != c.want {
			t.Errorf("%s: jsonDuration = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestProcParsers reads a real /proc/<pid>/status of a `bgd proxy`.
func TestProcParsers(t *testing.T) {
	status := readTestdata(t, "proc-status.txt")
	for _, c := range []struct {
		field string
		want  int64
		err   bool
	}{
		{"VmHWM", 15304, false},
		{"VmRSS", 15304, false},
		{"VmNothing", 0, true},
		{"Name", 0, true}, // "bgd" is not a number of kB
	} {
		got, err := statusKB(status, c.field)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("statusKB(%s) = %d, %v; want %d (error %v)", c.field, got, err, c.want, c.err)
		}
	}
}

func TestLogLines(t *testing.T) {
	log := readTestdata(t, "deploy-verbose.log")
	probe := `time=2026-12-01T04:32:44.950Z level=DEBUG msg="not healthy yet" service=app slot=green err="connection refused"` + "\n"
	got := logLines(log + probe + "\n")
	if len(got) != 3 || !strings.Contains(got[0], `msg="slot stopped"`) || !strings.Contains(got[2], `msg="waiting for health"`) {
		t.Errorf("logLines = %q", got)
	}
	if got := logLines(""); got != nil {
		t.Errorf("logLines of nothing = %q", got)
	}
}

func TestSmallParsers(t *testing.T) {
	if got := firstFields("1.75 1.92 3.19 2/345 6789\n", 3); got != "1.75 1.92 3.19" {
		t.Errorf("firstFields = %q", got)
	}
	if got := firstFields("1.75\n", 3); got != "" {
		t.Errorf("firstFields of too little = %q", got)
	}
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nprocessor\t: 1\nmodel name\t: other\n"
	if got := cpuModel(cpuinfo); got != "AMD EPYC" {
		t.Errorf("cpuModel = %q", got)
	}
	long := strings.Repeat("x", 130) + "\nsecond"
	if got := shortReason(long); len(got) != 120 || !strings.HasSuffix(got, "...") {
		t.Errorf("shortReason of a long line = %q", got)
	}
	if got := shortReason("a | b\nc"); got != "a / b" {
		t.Errorf("shortReason = %q", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-short", "-drivers", "nginx, builtin", "-phases", "sweep"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.drivers, ",") != "nginx,builtin" || !o.phases["sweep"] || o.phases["drivers"] ||
		o.flips != 3 || o.readyAfter != 300*time.Millisecond || o.post != 300*time.Millisecond {
		t.Errorf("-short options: %+v", o)
	}
	if o, _ := parseFlags(nil); o.flips != 20 || o.dpDuration != 4*time.Second || len(o.drivers) != 3 {
		t.Errorf("default options: %+v", o)
	}
	for _, args := range [][]string{{"-drivers", "caddy"}, {"-phases", "x"}, {"-services", "0"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}
