package testsupport

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The samples in testdata/wrk are real wrk 4.1.0 output (stdout and stderr)
// with this package's script: a full-speed load, paced loads, a run ended
// by SIGINT as Wrk.Stop ends it, answers of 404, a server that resets
// connections, and nothing listening.
func TestParseWrk(t *testing.T) {
	for _, c := range []struct {
		file    string
		counted bool
		want    WrkResult
		err     string
	}{
		{"fast.out", false, WrkResult{DurationS: 1.005189, Requests: 14847, Non2xx: -1, RPS: 14847 / 1.005189,
			P50Ms: 0.178, P99Ms: 3.516, MaxMs: 13.16}, ""},
		{"paced-new-conn.out", true, WrkResult{DurationS: 1.006148, Requests: 1141, RPS: 1141 / 1.006148,
			P50Ms: 0.62, P99Ms: 4.724, MaxMs: 6.167}, ""},
		{"sigint.out", true, WrkResult{DurationS: 0.801365, Requests: 959, RPS: 959 / 0.801365,
			P50Ms: 0.577, P99Ms: 3.69, MaxMs: 5.813}, ""},
		// Paced: the script counts non-2xx answers, and they are the failures.
		{"404-paced.out", true, WrkResult{DurationS: 1.045348, Requests: 461, Status4xx: 461, Non2xx: 461, Failures: 461,
			RPS: 461 / 1.045348, P50Ms: 1.302, P99Ms: 26.772, MaxMs: 35.86}, ""},
		// Full speed: no response() hook, so wrk's status >= 400 count.
		{"404-fast.out", false, WrkResult{DurationS: 1.00749, Requests: 795, Status4xx: 795, Non2xx: -1, Failures: 795,
			RPS: 795 / 1.00749, P50Ms: 1.82, P99Ms: 9.324, MaxMs: 12.995}, ""},
		{"read-errors.out", true, WrkResult{DurationS: 1.004594, Requests: 563, Read: 1125, Failures: 1125,
			RPS: 563 / 1.004594, P50Ms: 0.11, P99Ms: 2.383, MaxMs: 4.064}, ""},
		{"refused.out", false, WrkResult{}, "wrk printed no results: unable to connect to 127.0.0.1:27779 Connection refused"},
	} {
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile("testdata/wrk/" + c.file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseWrk(string(data), "", c.counted)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("ParseWrk:\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseWrkBadJSON(t *testing.T) {
	if _, err := ParseWrk(WrkMarker+`{"requests": 1,`+"\n", "", false); err == nil || !strings.Contains(err.Error(), "wrk results") {
		t.Errorf("truncated JSON: %v", err)
	}
}

// TestWrkScript checks the script's hooks: the paced one counts non-2xx
// answers and waits between requests; the full-speed one has no
// per-response hook (it would slow wrk down) and reports -1.
func TestWrkScript(t *testing.T) {
	paced := WrkScript(WrkLoad{Conns: 4, Delay: 2 * time.Millisecond})
	fast := WrkScript(WrkLoad{Conns: 32})
	for _, want := range []string{"function response(", "function delay() return 2 end", `t:get("non2xx")`, WrkMarker} {
		if !strings.Contains(paced, want) {
			t.Errorf("paced script lacks %q:\n%s", want, paced)
		}
	}
	if strings.Contains(fast, "function response(") || strings.Contains(fast, "function delay(") || !strings.Contains(fast, "local n = -1") {
		t.Errorf("full-speed script:\n%s", fast)
	}
	if sub := WrkScript(WrkLoad{Delay: 300 * time.Microsecond}); !strings.Contains(sub, "function delay() return 1 end") {
		t.Errorf("a delay under 1 ms is not 1 ms:\n%s", sub)
	}
}
