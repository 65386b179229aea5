package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/metrics"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/orchestrator"
)

// withTextfileDir adds a top-level metrics: section to the service's
// bluegreen.yml (again: the previous one is replaced).
func withTextfileDir(t *testing.T, s *service, dir string) {
	t.Helper()
	path := filepath.Join(s.dir, "bluegreen.yml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if first, rest, ok := strings.Cut(string(data), "\n"); ok && first == "metrics:" {
		_, after, _ := strings.Cut(rest, "\n") // the textfile_dir line
		data = []byte(after)
	}
	if err := os.WriteFile(path, append(fmt.Appendf(nil, "metrics:\n  textfile_dir: %q\n", dir), data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// promFamilies parses an exposition as node_exporter and Prometheus do,
// and fails the test on any of promlint's problems with it.
func promFamilies(t *testing.T, data []byte) map[string]*dto.MetricFamily {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(string(data))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v\n%s", err, data)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, data)
	}
	return families
}

// promValue is the value of family name's series with the given labels
// (a histogram's sample count); ok false when there is none.
func promValue(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// readTextfile reads and parses the service's textfile.
func readTextfile(t *testing.T, dir string) map[string]*dto.MetricFamily {
	t.Helper()
	path := filepath.Join(dir, "bgd_app.prom")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no textfile: %v", err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s has mode %v, want 0644", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return promFamilies(t, data)
}

// TestTextfileCountsDeploys: with metrics.textfile_dir, every bgd command
// on a real service behind the real builtin proxy leaves a file
// node_exporter reads (0644, parsed back, promlint-clean, no temp file
// beside it) with the deploys by outcome: a deploy that went live, one
// whose slot never came up (failed), and one that bgd's analysis rolled
// back by itself under load (auto_rolled_back); the flips, the last
// deploy, the active colour and the proxy's counts of the slots. A health
// sweep rewrites it; a textfile_dir that does not exist is a warning and
// the deploy still succeeds.
func TestTextfileCountsDeploys(t *testing.T) {
	blue, green := freePort(t), freePort(t)
	lbYAML, url := builtinLB(t)
	// Release "crash" gives the demo app a bad flag: its slot exits at once.
	s := testService(t, blue, green, lbYAML, analysisYAML, "--fail-after", `{{if eq .Release "crash"}}never{{else}}0s{{end}}`)
	dir := t.TempDir()
	withTextfileDir(t, s, dir)

	s.must("start", "blue", "--release", "v1")
	f := readTextfile(t, dir)
	if v, ok := promValue(f, "bgd_active_slot", "service", "app", "slot", "blue"); !ok || v != 1 {
		t.Errorf("after start blue: bgd_active_slot{blue} = %v (%v), want 1", v, ok)
	}
	if v, ok := promValue(f, "bgd_deploys_total", "service", "app", "status", "success"); !ok || v != 0 {
		t.Errorf("before any deploy: bgd_deploys_total{success} = %v (%v), want 0", v, ok)
	}

	before := time.Now()
	s.must("deploy", "--release", "v2")
	f = readTextfile(t, dir)
	check := func(f map[string]*dto.MetricFamily, when, name string, want float64, labels ...string) {
		t.Helper()
		if v, ok := promValue(f, name, append([]string{"service", "app"}, labels...)...); !ok || v != want {
			t.Errorf("%s: %s%v = %v (present %v), want %v", when, name, labels, v, ok, want)
		}
	}
	check(f, "after deploy v2", "bgd_deploys_total", 1, "status", "success")
	check(f, "after deploy v2", "bgd_flips_total", 1)
	check(f, "after deploy v2", "bgd_active_slot", 1, "slot", "green")
	check(f, "after deploy v2", "bgd_last_deploy_success", 1)
	dur, _ := promValue(f, "bgd_last_deploy_duration_seconds", "service", "app")
	at, _ := promValue(f, "bgd_last_deploy_timestamp_seconds", "service", "app")
	t.Logf("deploy v2: bgd_last_deploy_duration_seconds %.3f", dur)
	if dur <= 0 || dur > time.Since(before).Seconds() {
		t.Errorf("bgd_last_deploy_duration_seconds = %v, want within the deploy's %s", dur, time.Since(before))
	}
	if end := float64(time.Now().UnixMilli()) / 1e3; at < float64(before.Unix()) || at > end {
		t.Errorf("bgd_last_deploy_timestamp_seconds = %v, want between %d and %.3f", at, before.Unix(), end)
	}

	if _, errOut, code := s.run("deploy", "--release", "crash"); code != 1 {
		t.Fatalf("deploy of a slot that exits: exit %d, want 1: %s", code, errOut)
	}
	f = readTextfile(t, dir)
	check(f, "after the failed deploy", "bgd_deploys_total", 1, "status", "failed")
	check(f, "after the failed deploy", "bgd_last_deploy_success", 0)
	check(f, "after the failed deploy", "bgd_active_slot", 1, "slot", "green")

	load := testsupport.StartLoad(url, testsupport.LoadOptions{Clients: 4, KeepAlive: true, Pause: time.Millisecond})
	_, errOut, code := s.run("deploy", "--release", "bad", "--watch", "20s")
	c := load.Stop()
	if code != 1 || !strings.Contains(errOut, "by itself") {
		t.Fatalf("deploy of the bad release: exit %d, want 1 and an automatic rollback: %s", code, errOut)
	}
	t.Logf("bad release: %s; load %s", strings.TrimSpace(errOut), c)
	f = readTextfile(t, dir)
	// The bad release went live (success) before its analysis rolled it back.
	check(f, "after the automatic rollback", "bgd_deploys_total", 2, "status", "success")
	check(f, "after the automatic rollback", "bgd_deploys_total", 1, "status", "auto_rolled_back")
	check(f, "after the automatic rollback", "bgd_deploys_total", 0, "status", "rolled_back")
	check(f, "after the automatic rollback", "bgd_auto_rollbacks_total", 1)
	check(f, "after the automatic rollback", "bgd_last_deploy_success", 0)
	check(f, "after the automatic rollback", "bgd_flips_total", 3)
	check(f, "after the automatic rollback", "bgd_active_slot", 1, "slot", "green")
	check(f, "after the automatic rollback", "bgd_canary_weight", 0)
	check(f, "after the automatic rollback", "bgd_slot_observe_success", 1, "slot", "blue")
	// The proxy counted the load's requests to the bad release (blue).
	if v, ok := promValue(f, "bgd_slot_requests_total", "service", "app", "slot", "blue"); !ok || v < 20 {
		t.Errorf("bgd_slot_requests_total{blue} = %v (%v), want the load's requests (at least the analysis' 20)", v, ok)
	}
	if v, ok := promValue(f, "bgd_slot_errors_total", "service", "app", "slot", "blue"); !ok || v < 1 {
		t.Errorf("bgd_slot_errors_total{blue} = %v (%v), want the bad release's errors", v, ok)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("textfile_dir holds %d entries, want bgd_app.prom alone", len(entries))
	}

	// A health sweep writes it too.
	os.Remove(filepath.Join(dir, "bgd_app.prom"))
	s.must("health-check")
	f = readTextfile(t, dir)
	check(f, "after a health sweep", "bgd_slot_healthy", 1, "slot", "green")
	check(f, "after a health sweep", "bgd_deploys_total", 1, "status", "failed")

	// A directory that is not there: a warning; the deploy succeeds.
	withTextfileDir(t, s, filepath.Join(dir, "missing"))
	out, errOut, code := s.run("switch", "blue")
	if code != 0 || !strings.Contains(errOut, "metrics not written") || !strings.Contains(errOut, "does not exist") {
		t.Errorf("switch with a missing textfile_dir: exit %d, stderr %q (want 0 and a warning naming the directory)\n%s", code, errOut, out)
	}
}

// TestSlotCollectorCountsRequests: per driver (the real builtin proxy, a
// real HAProxy with its admin socket, a real nginx with its JSON access
// log), the slot collector mounted on an HTTP handler (promhttp) reports
// as many requests and errors for the slot as a client sent through the
// load balancer and saw fail, and the latency: a histogram counting them
// (builtin, nginx) or HAProxy's mean.
func TestSlotCollectorCountsRequests(t *testing.T) {
	for _, driver := range []string{"builtin", "haproxy", "nginx"} {
		t.Run(driver, func(t *testing.T) {
			blue, green := freePort(t), freePort(t)
			lbYAML, url := canaryLB(t, driver, blue, green, false)
			s := testService(t, blue, green, lbYAML, analysisYAML)
			// "bad" answers 20% of requests 500 (its health checks pass).
			s.must("start", "blue", "--release", "bad")
			cfg, err := config.Load(config.Source{Path: filepath.Join(s.dir, "bluegreen.yml"), Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatal(err)
			}
			o, err := orchestrator.New(cfg, "app", orchestrator.Options{})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(promhttp.HandlerFor(metrics.Registry([]metrics.Service{metrics.FromOrchestrator(o)}, 0, false), promhttp.HandlerOpts{}))
			t.Cleanup(srv.Close)
			scrape := func() map[string]*dto.MetricFamily {
				t.Helper()
				resp, err := http.Get(srv.URL)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				data, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("scrape: %s: %s", resp.Status, data)
				}
				return promFamilies(t, data)
			}
			first := scrape() // nginx counts from here
			// get is blue's series name; a histogram the first scrape lacks
			// is 0 (the builtin proxy has none of a slot before its first
			// answer).
			get := func(f map[string]*dto.MetricFamily, name string) float64 {
				t.Helper()
				v, ok := promValue(f, name, "service", "app", "slot", "blue")
				if !ok && !(name == "bgd_slot_request_duration_seconds" && len(f) == len(first) && f["bgd_slot_requests_total"] == first["bgd_slot_requests_total"]) {
					t.Fatalf("no %s{slot=blue} in the scrape", name)
				}
				return v
			}
			const n = 300
			client := &http.Client{Timeout: 5 * time.Second}
			failed := 0
			for range n {
				resp, err := client.Post(url, "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					failed++
				}
			}
			// nginx writes its access log line after the answer: give it a moment.
			var last map[string]*dto.MetricFamily
			deadline := time.Now().Add(3 * time.Second)
			for {
				last = scrape()
				if get(last, "bgd_slot_requests_total")-get(first, "bgd_slot_requests_total") >= n || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			reqs := get(last, "bgd_slot_requests_total") - get(first, "bgd_slot_requests_total")
			errs := get(last, "bgd_slot_errors_total") - get(first, "bgd_slot_errors_total")
			t.Logf("%s: client sent %d, saw %d fail; collector: %v requests, %v errors", driver, n, failed, reqs, errs)
			if reqs != n || errs != float64(failed) {
				t.Errorf("collector counted %v requests and %v errors for blue; the client sent %d and saw %d fail", reqs, errs, n, failed)
			}
			if failed == 0 {
				t.Errorf("the bad release failed none of %d requests: the error count was not tested", n)
			}
			if get(last, "bgd_slot_observe_success") != 1 {
				t.Error("bgd_slot_observe_success{blue} is not 1")
			}
			if driver == "haproxy" {
				if _, ok := last["bgd_slot_request_duration_seconds"]; ok {
					t.Error("HAProxy has no histogram, but the collector exported one")
				}
				t.Logf("haproxy: bgd_slot_response_time_mean_seconds %v", get(last, "bgd_slot_response_time_mean_seconds"))
				return
			}
			if h := get(last, "bgd_slot_request_duration_seconds") - get(first, "bgd_slot_request_duration_seconds"); h != n {
				t.Errorf("the latency histogram counted %v answers, want %d", h, n)
			}
		})
	}
}
