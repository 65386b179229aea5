package main

import (
	"errors"
	"fmt"
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

// TestCallgrindTotal reads the totals line of a callgrind dump (the head
// and tail of one that callgrind_control -d wrote).
func TestCallgrindTotal(t *testing.T) {
	dump := "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4242\ncmd:  /usr/sbin/nginx -p /tmp/x\npart: 1\n\n" +
		"positions: line\nevents: Ir\nsummary: 58096311\n\nob=(1) /usr/sbin/nginx\nfl=(1) ???\nfn=(1) 0x0000000000012345\n0 12\n\ntotals: 58096311\n"
	if got, err := callgrindTotal(dump); err != nil || got != 58096311 {
		t.Errorf("callgrindTotal = %v, %v", got, err)
	}
	if _, err := callgrindTotal("events: Ir\n"); err == nil {
		t.Error("callgrindTotal of a dump without totals: no error")
	}
}

// TestRounds: round 0 and n more, every target in each; abba reverses the
// order every other round (round 0 first); an error names target and round.
func TestRounds(t *testing.T) {
	var got []string
	err := rounds(2, []string{"a", "b"}, true, func(s string, round int) error {
		got = append(got, fmt.Sprint(s, round))
		return nil
	})
	if want := "b0 a0 a1 b1 b2 a2"; err != nil || strings.Join(got, " ") != want {
		t.Errorf("abba rounds: %v, %v; want %s", got, err, want)
	}
	got = nil
	err = rounds(3, []string{"a", "b"}, false, func(s string, round int) error {
		got = append(got, fmt.Sprint(s, round))
		if round == 1 && s == "b" {
			return errors.New("boom")
		}
		return nil
	})
	if err == nil || err.Error() != "b round 1: boom" || strings.Join(got, " ") != "a0 b0 a1 b1" {
		t.Errorf("rounds stopping at an error: %v, %v", got, err)
	}
}
