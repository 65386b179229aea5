package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/state"
)

// addToService appends YAML lines to the rig's service "app" (the last
// block of its bluegreen.yml).
func addToService(t *testing.T, r *rig, lines string) {
	t.Helper()
	f, err := os.OpenFile(r.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
}

// onlyForRelease is a slot argument template: value for release "bad",
// def for every other release.
func onlyForRelease(value, def string) string {
	return fmt.Sprintf(`{{if eq .Release "bad"}}%s{{else}}%s{{end}}`, value, def)
}

// healthCode is the status of GET /health on port (0: no answer).
func healthCode(port int) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestFailoverAfterThreeFailedSweeps: with failover: true and
// failover_after: 3, a deployed release whose /health starts failing
// (the demo app's --fail-after, real processes behind the real builtin
// proxy) is kept active by the first two health sweeps, which exit 1
// saying "active green failed N of 3 probes; no failover yet" and record
// green_failed_probes N; the third sweep fails over to the healthy blue,
// and the proxy then serves blue.
func TestFailoverAfterThreeFailedSweeps(t *testing.T) {
	r := newRig(t, rigOptions{failover: true, slotArgs: []string{"--fail-after", onlyForRelease("4s", "0s")}})
	addToService(t, r, "    failover_after: 3\n")
	r.must("start", "blue")
	if out, stderr, code := r.run("deploy", "--release", "bad"); code != 0 {
		t.Fatalf("deploy --release bad: exit %d (its slot fails /health from 4 s after start: the deploy must be done by then):\n%s%s", code, out, stderr)
	}
	r.waitServedBy("green")
	waitFor(t, 10*time.Second, "green's /health to answer 503 (--fail-after 4s)", func() bool { return healthCode(r.green) == http.StatusServiceUnavailable })
	if code := healthCode(r.blue); code != http.StatusOK {
		t.Fatalf("blue (the standby) answers /health with %d, want 200", code)
	}
	for i := 1; i <= 2; i++ {
		out, stderr, code := r.run("health-check")
		want := fmt.Sprintf("active green failed %d of 3 probes; no failover yet", i)
		if code != 1 || !strings.Contains(out, want) || !strings.Contains(stderr, want) {
			t.Fatalf("health-check %d: exit %d, want 1 with %q in its output and its error:\nstdout: %s\nstderr: %s\nstate: %+v", i, code, want, out, stderr, r.state())
		}
		st := r.state()
		if st.ActiveVersion != "green" || st.GreenFailedProbes != i || st.BlueFailedProbes != 0 || st.GreenHealthy {
			t.Fatalf("after health-check %d: active %s, green_failed_probes %d, blue %d, green_healthy %v; want green, %d, 0, false",
				i, st.ActiveVersion, st.GreenFailedProbes, st.BlueFailedProbes, st.GreenHealthy, i)
		}
		if got := r.servedBy(); got != "green" {
			t.Fatalf("after health-check %d the proxy serves %q, want green still", i, got)
		}
		if s := r.status(); s.Green.FailedProbes != i || s.LBActive != "green" {
			t.Fatalf("bgd status after health-check %d: green failed_probes %d, lb_active %s; want %d, green", i, s.Green.FailedProbes, s.LBActive, i)
		}
	}
	out, stderr, code := r.run("health-check")
	if code != 0 || !strings.Contains(out, "failed over to blue") {
		t.Fatalf("health-check 3: exit %d, want 0 and a failover to blue:\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	st := r.state()
	var fo state.Event
	for _, e := range st.History {
		if e.Action == "failover" {
			fo = e
		}
	}
	if st.ActiveVersion != "blue" || fo.Status != state.StatusSuccess || fo.From != "green" || fo.To != "blue" ||
		!strings.Contains(fo.Reason, "failed 3 consecutive probes (failover_after 3)") {
		t.Fatalf("after health-check 3: active %s, failover event %+v; want blue, green->blue after 3 consecutive probes", st.ActiveVersion, fo)
	}
	r.waitServedBy("blue")
	if st.GreenFailedProbes != 3 || st.BlueFailedProbes != 0 {
		t.Errorf("after the failover green_failed_probes %d, blue %d; want 3, 0", st.GreenFailedProbes, st.BlueFailedProbes)
	}
}

// TestBadReleasePassesHealthChecks: a release deployed with the demo
// app's DEMO_ERROR_RATE (set in the service's env, a template on the
// release) passes its health checks and the flip, then answers 500 to
// its share of the requests through the real proxy: 1000 requests from
// 8 keep-alive clients see 10% ±3 points of 500s, every one from green.
func TestBadReleasePassesHealthChecks(t *testing.T) {
	r := newRig(t, rigOptions{})
	addToService(t, r, fmt.Sprintf("    env: {DEMO_ERROR_RATE: %q}\n", onlyForRelease("0.1", "0")))
	r.must("start", "blue")
	r.must("deploy", "--release", "bad")
	r.waitServedBy("green")
	if got := releaseHealthy(r.green); got != "bad" {
		t.Fatalf("green answers /health with release %q, want bad (a bad release passes its health checks)", got)
	}
	const total, clients = 1000, 8
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.proxy)
	var mu sync.Mutex
	codes := map[string]int{} // "<colour> <status>": count
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range total / clients {
				key := "transport error"
				if resp, err := client.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					key = fmt.Sprintf("%s %d", resp.Header.Get("X-Slot"), resp.StatusCode)
				}
				mu.Lock()
				codes[key]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("1000 requests through the proxy to release bad (DEMO_ERROR_RATE 0.1): %v", codes)
	failed := codes["green 500"]
	if codes["green 200"]+failed != total {
		t.Fatalf("answers %v: want all %d from green, 200 or 500", codes, total)
	}
	if share := float64(failed) / total; share < 0.07 || share > 0.13 {
		t.Errorf("%d of %d requests answered 500 (%.1f%%), want 10%% ±3 points", failed, total, share*100)
	}
	if got := r.status(); !got.Green.Healthy || !got.Green.Active {
		t.Errorf("bgd status: green healthy %v active %v; want a healthy active slot despite its 500s", got.Green.Healthy, got.Green.Active)
	}
}
