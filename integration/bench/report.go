package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Results is everything one run measured: the raw samples, written as JSON.
type Results struct {
	Meta      Meta                     `json:"meta"`
	Drivers   map[string]*DriverResult `json:"drivers"`
	DataPlane *DataPlane               `json:"data_plane,omitempty"`
	Sweep     *SweepResult             `json:"health_sweep,omitempty"`
	Targets   []Target                 `json:"targets"`
	Errors    []string                 `json:"errors,omitempty"`
}

// Meta describes the run and the machine.
type Meta struct {
	Command    string    `json:"command"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	DurationS  float64   `json:"duration_s"`
	Short      bool      `json:"short"`
	CPUs       int       `json:"cpus"`
	CPUModel   string    `json:"cpu_model"`
	Kernel     string    `json:"kernel"`
	GoVersion  string    `json:"go_version"`
	BgdVersion string    `json:"bgd_version"`
	Nginx      string    `json:"nginx"`
	HAProxy    string    `json:"haproxy"`
	Wrk        string    `json:"wrk"`
	// LoadAvg is /proc/loadavg at the start and at the end: the host is
	// shared, and other work on it weighs on every figure.
	LoadAvg  []string       `json:"loadavg"`
	Settings map[string]any `json:"settings"`
}

// DriverResult holds figures 1-4 of one driver.
type DriverResult struct {
	Driver string `json:"driver"`
	// Unavailable says why the driver was not measured ("" when it was).
	Unavailable string  `json:"unavailable,omitempty"`
	Flips       []Flip  `json:"flips_under_load"`
	IdleFlips   []Timed `json:"idle_flips"`
	Deploys     []Timed `json:"deploys"`
	Crashes     []Timed `json:"crashing_deploys"`
	Status      []Timed `json:"status_runs"`
	ProxyHWMKB  int64   `json:"proxy_vmhwm_after_flips_kb,omitempty"`
	// ServedAfterStartMs: the load balancer did not serve the slot `bgd
	// start` had just reported healthy and routed until this much later.
	ServedAfterStartMs float64  `json:"served_after_start_ms,omitempty"`
	Errors             []string `json:"errors,omitempty"`
	// Notes are what the run saw that is not a failure of the harness.
	Notes []string `json:"notes,omitempty"`
}

// Flip is one `bgd switch` under load, with the load of its window.
type Flip struct {
	To          string    `json:"to"`
	SwitchMs    float64   `json:"switch_ms"`
	InProcessMs float64   `json:"in_process_ms"`
	NewConn     wrkResult `json:"new_connection"`
	KeepAlive   wrkResult `json:"keep_alive"`
	AnsweredBy  string    `json:"answered_by_after"`
}

// Timed is one bgd process: its wall time and what else was measured.
type Timed struct {
	WallMs      float64 `json:"wall_ms"`
	InProcessMs float64 `json:"in_process_ms,omitempty"` // the workflow's own duration_ns
	OverheadMs  float64 `json:"overhead_ms,omitempty"`   // deploys: wall minus --ready-after
	DetectMs    float64 `json:"detect_ms,omitempty"`     // crashes: slot exit to deploy's end
	RSSKB       int64   `json:"max_rss_kb,omitempty"`
	CPUMs       float64 `json:"cpu_ms,omitempty"` // user + system time of the bgd process
	// Log is what bgd --verbose said (deploys), without the per-probe
	// "not healthy yet" lines: where the time went.
	Log []string `json:"log,omitempty"`
}

// DataPlane holds figure 5 and the proxy's memory under that load.
type DataPlane struct {
	Runs        map[string][]wrkResult `json:"runs"` // target -> one per round
	Unavailable map[string]string      `json:"unavailable,omitempty"`
	ProxyHWMKB  int64                  `json:"proxy_vmhwm_kb"`
	ProxyRSSKB  int64                  `json:"proxy_vmrss_kb"`
}

// SweepResult holds figure 6.
type SweepResult struct {
	Services  int     `json:"services"`
	Slots     int     `json:"slots"`
	All       []Timed `json:"all_services"`
	One       []Timed `json:"one_service_config"`
	OneOfMany []Timed `json:"one_service_of_many"`
	// ProbeFloorMs: the sweep's HTTP probes alone, from the harness (see
	// probeFloor), once per round.
	ProbeFloorMs []float64 `json:"probe_floor_ms"`
}

// Target is one goal of issue 5 and what this run measured against it.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Verdict: "met", "missed", "documented" (no goal), or "not measured".
	Verdict string `json:"verdict"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

func pick[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

// medMax formats "median / max" with a unit.
func medMax(xs []float64, unit string) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s%s", num(median(xs)), num(maxOf(xs)), unit)
}

func num(x float64) string {
	switch {
	case x == float64(int64(x)):
		return fmt.Sprintf("%d", int64(x))
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

var driverOrder = []string{"builtin", "nginx", "haproxy"}

// markdown renders the tables and computes r.Targets.
func (r *Results) markdown() string {
	var b strings.Builder
	m := r.Meta
	mode := "full"
	if m.Short {
		mode = "short (smoke: numbers not meaningful)"
	}
	fmt.Fprintf(&b, "## bgd benchmark, %s run\n\n", mode)
	fmt.Fprintf(&b, "`%s` on %d × %s, %s; %s; %s; %s; %s; %s; took %.0f s; load average %s\n\n",
		m.Command, m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, orNA(m.Nginx), orNA(m.HAProxy), m.Wrk, m.BgdVersion, m.DurationS,
		strings.Join(m.LoadAvg, " → "))

	b.WriteString("### Flips, deploys, crashes (figures 1-4), median / max per flip or run\n\n")
	b.WriteString("| driver | failed, new-conn clients | failed, keep-alive clients | load req/s (new-conn + keep-alive) | flip, idle | flip, under load | deploy overhead | crash detection |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		if dr == nil {
			continue
		}
		if dr.Unavailable != "" {
			fmt.Fprintf(&b, "| %s | %s | | | | | | |\n", d, shortReason(dr.Unavailable))
			continue
		}
		nc := pick(dr.Flips, func(f Flip) float64 { return float64(f.NewConn.Failures) })
		ka := pick(dr.Flips, func(f Flip) float64 { return float64(f.KeepAlive.Failures) })
		ncReq := pick(dr.Flips, func(f Flip) float64 { return float64(f.NewConn.Requests) })
		kaReq := pick(dr.Flips, func(f Flip) float64 { return float64(f.KeepAlive.Requests) })
		rate := fmt.Sprintf("%s + %s", num(median(pick(dr.Flips, func(f Flip) float64 { return f.NewConn.RPS }))),
			num(median(pick(dr.Flips, func(f Flip) float64 { return f.KeepAlive.RPS }))))
		fmt.Fprintf(&b, "| %s | %s (%s of %s in %d flips) | %s (%s of %s) | %s | %s | %s | %s | %s |\n", d,
			medMax(nc, ""), num(sum(nc)), num(sum(ncReq)), len(dr.Flips),
			medMax(ka, ""), num(sum(ka)), num(sum(kaReq)),
			rate,
			medMax(pick(dr.IdleFlips, func(t Timed) float64 { return t.WallMs }), " ms"),
			medMax(pick(dr.Flips, func(f Flip) float64 { return f.SwitchMs }), " ms"),
			medMax(pick(dr.Deploys, func(t Timed) float64 { return t.OverheadMs }), " ms"),
			medMax(pick(dr.Crashes, func(t Timed) float64 { return t.DetectMs }), " ms"))
	}
	b.WriteString("\n")

	if dp := r.DataPlane; dp != nil && len(dp.Runs) > 0 {
		fmt.Fprintf(&b, "### Data plane (figure 5): one demo-app backend, wrk 1 thread, %v keep-alive connections, median of %v rounds\n\n",
			m.Settings["dp_conns"], m.Settings["dp_rounds"])
		b.WriteString("| target | req/s | p50 | p99 | failed | req/s vs nginx | p99 vs nginx | req/s vs direct |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|\n")
		rps := func(t string) float64 { return median(pick(dp.Runs[t], func(w wrkResult) float64 { return w.RPS })) }
		p99 := func(t string) float64 { return median(pick(dp.Runs[t], func(w wrkResult) float64 { return w.P99Ms })) }
		ratio := func(a, b float64) string {
			if b == 0 || a == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f×", a/b)
		}
		for _, t := range []string{"direct", "builtin", "nginx", "haproxy"} {
			runs, ok := dp.Runs[t]
			if !ok {
				if why := dp.Unavailable[t]; why != "" {
					fmt.Fprintf(&b, "| %s | %s | | | | | | |\n", t, shortReason(why))
				}
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s ms | %s ms | %s | %s | %s | %s |\n", t, num(rps(t)),
				num(median(pick(runs, func(w wrkResult) float64 { return w.P50Ms }))), num(p99(t)),
				num(sum(pick(runs, func(w wrkResult) float64 { return float64(w.Failures) }))),
				ratio(rps(t), rps("nginx")), ratio(p99(t), p99("nginx")), ratio(rps(t), rps("direct")))
		}
		b.WriteString("\n")
	}

	if sw := r.Sweep; sw != nil && len(sw.All) > 0 {
		b.WriteString("### Health sweep (figure 6): `bgd health-check`, whole process, median / max\n\n")
		b.WriteString("| sweep | slots | time | CPU (user+sys) | peak RSS | vs 1 service |\n|---|---|---|---|---|---|\n")
		one := median(pick(sw.One, func(t Timed) float64 { return t.WallMs }))
		for _, row := range []struct {
			name  string
			slots int
			runs  []Timed
		}{
			{fmt.Sprintf("%d services (no --service)", sw.Services), sw.Slots, sw.All},
			{"1 service (a one-service config)", 2, sw.One},
			{fmt.Sprintf("--service svc000 of the %d", sw.Services), 2, sw.OneOfMany},
		} {
			w := pick(row.runs, func(t Timed) float64 { return t.WallMs })
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s MB | %.2f× |\n", row.name, row.slots, medMax(w, " ms"),
				medMax(pick(row.runs, func(t Timed) float64 { return t.CPUMs }), " ms"),
				num(median(pick(row.runs, func(t Timed) float64 { return float64(t.RSSKB) / 1024 }))), median(w)/one)
		}
		if len(sw.ProbeFloorMs) > 0 {
			fmt.Fprintf(&b, "| floor: the %d HTTP probes alone, from the harness (no process, no state) | %d | %s | | | %.2f× |\n",
				sw.Slots, sw.Slots, medMax(sw.ProbeFloorMs, " ms"), median(sw.ProbeFloorMs)/one)
		}
		b.WriteString("\n")
	}

	b.WriteString("### Memory (figure 7)\n\n| process | peak RSS (VmHWM / ru_maxrss) |\n|---|---|\n")
	if dp := r.DataPlane; dp != nil && dp.ProxyHWMKB > 0 {
		fmt.Fprintf(&b, "| `bgd proxy` after the figure-5 load | %.1f MB (RSS at the end %.1f MB) |\n", mb(dp.ProxyHWMKB), mb(dp.ProxyRSSKB))
	}
	for _, d := range driverOrder {
		if dr := r.Drivers[d]; dr != nil && dr.ProxyHWMKB > 0 {
			fmt.Fprintf(&b, "| `bgd proxy` spawned by `bgd start`, after the %s flips under load | %.1f MB |\n", d, mb(dr.ProxyHWMKB))
		}
	}
	for _, d := range driverOrder {
		if dr := r.Drivers[d]; dr != nil && len(dr.Status) > 0 {
			rss := pick(dr.Status, func(t Timed) float64 { return mb(t.RSSKB) })
			fmt.Fprintf(&b, "| one `bgd status` process (%s), median / max of %d | %s MB |\n", d, len(rss), medMax(rss, ""))
		}
	}
	b.WriteString("\n")

	r.Targets = r.targets()
	b.WriteString("### Targets (issue 5), judged on medians\n\n| target | goal | measured | verdict |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Goal, t.Measured, t.Verdict)
	}
	var notes []string
	for _, d := range driverOrder {
		if dr := r.Drivers[d]; dr != nil {
			for _, n := range dr.Notes {
				notes = append(notes, d+": "+n)
			}
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n### Driver notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(n, "\n", " "))
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("\n### Errors\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(e, "\n", " "))
		}
	}
	return b.String()
}

func (r *Results) targets() []Target {
	var ts []Target
	add := func(name, goal string, measured string, ok bool, measuredAtAll bool) {
		v := "missed"
		switch {
		case !measuredAtAll:
			v, measured = "not measured", "–"
		case ok:
			v = "met"
		}
		ts = append(ts, Target{Name: name, Goal: goal, Measured: measured, Verdict: v})
	}
	flipGoal := map[string]float64{"builtin": 20, "nginx": 250, "haproxy": 20}
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		ok := dr != nil && dr.Unavailable == "" && len(dr.Flips) > 0
		var nc, ka []float64
		if ok {
			nc = pick(dr.Flips, func(f Flip) float64 { return float64(f.NewConn.Failures) })
			ka = pick(dr.Flips, func(f Flip) float64 { return float64(f.KeepAlive.Failures) })
		}
		add(d+": failed requests, new-connection clients", "0", fmt.Sprintf("%s in %d flips", num(sum(nc)), len(nc)), sum(nc) == 0, ok)
		if d == "nginx" {
			t := Target{Name: d + ": failed requests, keep-alive clients", Goal: "measured and documented", Verdict: "documented",
				Measured: fmt.Sprintf("%s in %d flips (median %s per flip)", num(sum(ka)), len(ka), num(median(ka)))}
			if !ok {
				t.Verdict, t.Measured = "not measured", "–"
			}
			ts = append(ts, t)
		} else {
			add(d+": failed requests, keep-alive clients", "0", fmt.Sprintf("%s in %d flips", num(sum(ka)), len(ka)), sum(ka) == 0, ok)
		}
	}
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		ok := dr != nil && len(dr.IdleFlips) > 0
		var w []float64
		if ok {
			w = pick(dr.IdleFlips, func(t Timed) float64 { return t.WallMs })
		}
		add(d+": flip (`bgd switch`, whole process)", fmt.Sprintf("≤ %.0f ms", flipGoal[d]), medMax(w, " ms"), median(w) <= flipGoal[d], ok)
	}
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		ok := dr != nil && len(dr.Deploys) > 0
		var w []float64
		if ok {
			w = pick(dr.Deploys, func(t Timed) float64 { return t.OverheadMs })
		}
		add(d+": deploy overhead", "≤ 50 ms", medMax(w, " ms"), median(w) <= 50, ok)
	}
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		ok := dr != nil && len(dr.Crashes) > 0
		var w []float64
		if ok {
			w = pick(dr.Crashes, func(t Timed) float64 { return t.DetectMs })
		}
		add(d+": crash detection", "≤ 200 ms", medMax(w, " ms"), median(w) <= 200, ok)
	}
	dp := r.DataPlane
	dpOK := dp != nil && len(dp.Runs["builtin"]) > 0 && len(dp.Runs["nginx"]) > 0
	var rpsRatio, p99Ratio float64
	if dpOK {
		rps := func(t string) float64 { return median(pick(dp.Runs[t], func(w wrkResult) float64 { return w.RPS })) }
		p99 := func(t string) float64 { return median(pick(dp.Runs[t], func(w wrkResult) float64 { return w.P99Ms })) }
		rpsRatio, p99Ratio = rps("builtin")/rps("nginx"), p99("builtin")/p99("nginx")
	}
	add("builtin throughput vs nginx", "≥ 0.50×", fmt.Sprintf("%.2f×", rpsRatio), rpsRatio >= 0.5, dpOK)
	add("builtin p99 vs nginx", "≤ 2.00×", fmt.Sprintf("%.2f×", p99Ratio), p99Ratio <= 2, dpOK)
	sw := r.Sweep
	swOK := sw != nil && len(sw.All) > 0 && len(sw.One) > 0
	var swRatio float64
	if swOK {
		swRatio = median(pick(sw.All, func(t Timed) float64 { return t.WallMs })) / median(pick(sw.One, func(t Timed) float64 { return t.WallMs }))
	}
	slots := 0
	if sw != nil {
		slots = sw.Slots
	}
	measured := fmt.Sprintf("%.2f×", swRatio)
	if swOK && len(sw.ProbeFloorMs) > 0 {
		measured += fmt.Sprintf(" (its HTTP probes alone: %.2f×)", median(sw.ProbeFloorMs)/median(pick(sw.One, func(t Timed) float64 { return t.WallMs })))
	}
	add(fmt.Sprintf("health sweep, %d slots vs 2", slots), "≤ 3.00×", measured, swRatio <= 3, swOK)
	hwm := int64(0)
	if dp != nil {
		hwm = dp.ProxyHWMKB
	}
	add("`bgd proxy` peak RSS under load", "≤ 40 MB", fmt.Sprintf("%.1f MB", mb(hwm)), mb(hwm) <= 40, hwm > 0)
	return ts
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

// shortReason keeps a table cell to its first line.
func shortReason(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 120 {
		line = line[:117] + "..."
	}
	return strings.ReplaceAll(line, "|", "/")
}

// write stores the raw results and the tables in dir, named by the start
// time, and as latest.json / latest.md.
func (r *Results) write(dir, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	stamp := r.Meta.Started.Format("20060102-150405")
	for name, content := range map[string][]byte{
		"bench-" + stamp + ".json": data, "bench-" + stamp + ".md": []byte(md),
		"latest.json": data, "latest.md": []byte(md),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: raw results in %s\n", filepath.Join(dir, "bench-"+stamp+".json"))
	return nil
}

// firstLine runs a program and returns the first line of its output
// (nginx -v writes to stderr).
func firstLine(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
