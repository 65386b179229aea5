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

// TestProcParsers reads a real /proc/<pid>/status and stat of a `bgd proxy`.
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
	stat := readTestdata(t, "proc-stat.txt")
	if !procRunning(stat) {
		t.Errorf("procRunning(%q) = false", stat)
	}
	for _, s := range []string{
		strings.Replace(stat, ") S ", ") Z ", 1),
		strings.Replace(stat, ") S ", ") X ", 1),
		"123 (a) b) Z 1",
		"123 (name", "",
	} {
		if procRunning(s) {
			t.Errorf("procRunning(%.40q) = true", s)
		}
	}
	if !procRunning("123 (a) b) S 1") {
		t.Error("a command name with a parenthesis: the state is after the last one")
	}
}

// TestPidField reads a real state file (testdata/bg_state.json).
func TestPidField(t *testing.T) {
	data := []byte(readTestdata(t, "bg_state.json"))
	for field, want := range map[string]int{"blue_pid": 9018, "green_pid": 8994, "proxy_pid": 8967, "missing_pid": 0, "active_version": 0} {
		if got := pidField(data, field); got != want {
			t.Errorf("pidField(%s) = %d, want %d", field, got, want)
		}
	}
	if got := pidField([]byte("{"), "blue_pid"); got != 0 {
		t.Errorf("broken JSON: %d", got)
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

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		r    *cliRun
		want string
	}{
		{nil, ""},
		{&cliRun{Code: 2, Stderr: "bgd: lb driver \"haproxy\" is not available in this build\n"}, `driver not available: lb driver "haproxy" is not available in this build`},
		{&cliRun{Code: 1, Stderr: "bgd: x is not available\n"}, ""},
		{&cliRun{Code: 2, Stderr: "bgd: bad flag\n"}, ""},
	} {
		if got := unavailable(c.r); got != c.want {
			t.Errorf("unavailable(%+v) = %q, want %q", c.r, got, c.want)
		}
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
