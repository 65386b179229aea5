package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// Results is everything one run measured: the raw samples, written as JSON.
type Results struct {
	Meta      Meta                     `json:"meta"`
	Drivers   map[string]*DriverResult `json:"drivers"`
	DataPlane *DataPlane               `json:"data_plane,omitempty"`
	Sweep     *SweepResult             `json:"health_sweep,omitempty"`
	// NginxRuntime is figure 10 (nginxmodes.go).
	NginxRuntime *NginxRuntime `json:"nginx_runtime,omitempty"`
	Targets      []Target      `json:"targets"`
	Errors       []string      `json:"errors,omitempty"`
}

// Meta describes the run and the machine.
type Meta struct {
	Command    string    `json:"command"`
	Started    time.Time `json:"started"`
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
	// Canary is figure 8: a canary's weights, one after the other.
	Canary []CanaryStep `json:"canary,omitempty"`
	// AutoRollbacks and GoodWatches are figure 9: bad releases rolled back
	// by bgd's analysis, good ones it kept.
	AutoRollbacks []AutoRollback `json:"auto_rollbacks,omitempty"`
	GoodWatches   []GoodWatch    `json:"good_watches,omitempty"`
	ProxyHWMKB    int64          `json:"proxy_vmhwm_after_flips_kb,omitempty"`
	Errors        []string       `json:"errors,omitempty"`
	// Notes are what the run saw that is not a failure of the harness.
	Notes []string `json:"notes,omitempty"`
}

// Flip is one `bgd switch` under load, with the load of its window.
type Flip struct {
	To          string  `json:"to"`
	SwitchMs    float64 `json:"switch_ms"`
	InProcessMs float64 `json:"in_process_ms"`
	Window
}

// Window is what the load of a window around one bgd command saw (loaded).
type Window struct {
	NewConn   ts.WrkResult `json:"new_connection"`
	KeepAlive ts.WrkResult `json:"keep_alive"`
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

// CanaryStep is one weight of a canary (figure 8): the `bgd` command that
// set it under load, what the load saw meanwhile, and the split measured
// afterwards.
type CanaryStep struct {
	Weight  int     `json:"weight"`
	Command string  `json:"command"`
	WallMs  float64 `json:"wall_ms"`
	Window
	// Requests answered by each colour when the split was counted, and how
	// many failed.
	Counted  int            `json:"counted"`
	Failures int            `json:"failures"`
	Slots    map[string]int `json:"slots"`
	// Canary is the colour of the canary; Share its percentage.
	Canary string  `json:"canary"`
	Share  float64 `json:"share"`
}

// AutoRollback is one deploy of a release that answers 20% of requests
// 500 while passing its health checks (figure 9): how long its bad
// answers lasted, seen by the clients, until bgd's analysis rolled it back.
type AutoRollback struct {
	ExitCode int `json:"exit_code"`
	// BadAnswers is how many 500s the clients got; FirstToLastMs the time
	// between the first and the last (the rollback's effect as clients
	// see it); WallMs the whole `bgd deploy --watch`.
	BadAnswers    int     `json:"bad_answers"`
	Requests      int     `json:"requests"`
	FirstToLastMs float64 `json:"first_to_last_ms"`
	WallMs        float64 `json:"wall_ms"`
}

// GoodWatch is one deploy of a good release with --watch: whether the
// analysis let it be (exit 0).
type GoodWatch struct {
	ExitCode int     `json:"exit_code"`
	WallMs   float64 `json:"wall_ms"`
}

// DataPlane holds figure 5 and the proxy's memory under that load.
type DataPlane struct {
	Runs        map[string][]ts.WrkResult `json:"runs"` // target -> one per round
	Unavailable map[string]string         `json:"unavailable,omitempty"`
	ProxyHWMKB  int64                     `json:"proxy_vmhwm_kb"`
	ProxyRSSKB  int64                     `json:"proxy_vmrss_kb"`
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

// NginxRuntime is figure 10: nginx's two modes (lb.nginx.mode reload and
// runtime) side by side on one nginx that loads the Lua module, each mode
// a service (named after it) with its own slots: flips under load (the windows of figure 1)
// and data-plane load, the modes interleaved flip by flip and round by
// round.
type NginxRuntime struct {
	Unavailable string                    `json:"unavailable,omitempty"`
	Flips       map[string][]Flip         `json:"flips_under_load"` // mode -> flips
	Runs        map[string][]ts.WrkResult `json:"data_plane"`       // mode -> rounds
	// CPUPerReqUs is the CPU time (user + system) nginx's workers spent per
	// request of each round: the Lua balancer's cost, which other work on
	// the host disturbs far less than req/s and p99.
	CPUPerReqUs map[string][]float64 `json:"nginx_cpu_per_request_us"`
	// InstrPerReq is the instructions nginx executed per request of each
	// mode, counted by valgrind's callgrind (nginxInstructions): unlike CPU
	// time, the count does not move with other work on the host.
	InstrPerReq map[string]float64 `json:"nginx_instructions_per_request,omitempty"`
	// InstrUnavailable says why InstrPerReq is missing (no valgrind).
	InstrUnavailable string `json:"instructions_unavailable,omitempty"`
}

// Target is one goal of issue 5 and what this run measured against it.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Verdict: "met", "missed", "documented" (no goal), or "not measured".
	Verdict string `json:"verdict"`
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

	var rows [][]string
	for d, dr := range r.drivers {
		if dr.Unavailable != "" {
			rows = append(rows, unavailableRow(d, dr.Unavailable, 8))
			continue
		}
		nc, ka := pick(dr.Flips, ncFailed), pick(dr.Flips, kaFailed)
		ncReq := pick(dr.Flips, func(f Flip) float64 { return float64(f.NewConn.Requests) })
		kaReq := pick(dr.Flips, func(f Flip) float64 { return float64(f.KeepAlive.Requests) })
		rows = append(rows, []string{d,
			fmt.Sprintf("%s (%s of %s in %d flips)", medMax(nc, ""), num(sum(nc)), num(sum(ncReq)), len(dr.Flips)),
			fmt.Sprintf("%s (%s of %s)", medMax(ka, ""), num(sum(ka)), num(sum(kaReq))),
			fmt.Sprintf("%s + %s", num(median(pick(dr.Flips, func(f Flip) float64 { return f.NewConn.RPS }))),
				num(median(pick(dr.Flips, func(f Flip) float64 { return f.KeepAlive.RPS })))),
			medMax(pick(dr.IdleFlips, wallMs), " ms"),
			medMax(pick(dr.Flips, switchMs), " ms"),
			medMax(pick(dr.Deploys, overheadMs), " ms"),
			medMax(pick(dr.Crashes, detectMs), " ms")})
	}
	table(&b, "Flips, deploys, crashes (figures 1-4), median / max per flip or run", []string{"driver", "failed, new-conn clients",
		"failed, keep-alive clients", "load req/s (new-conn + keep-alive)", "flip, idle", "flip, under load", "deploy overhead", "crash detection"}, rows)

	r.canaryTable(&b)
	r.nginxRuntimeTable(&b)
	r.analysisTable(&b)

	if dp := r.DataPlane; dp != nil && len(dp.Runs) > 0 {
		rows = nil
		for _, t := range []string{"direct", "builtin", "httputil", "nginx", "haproxy"} {
			runs, ok := dp.Runs[t]
			if !ok {
				if why := dp.Unavailable[t]; why != "" {
					rows = append(rows, unavailableRow(t, why, 8))
				}
				continue
			}
			rows = append(rows, []string{t, num(dp.median(t, rps)),
				num(median(pick(runs, func(w ts.WrkResult) float64 { return w.P50Ms }))) + " ms", num(dp.median(t, p99)) + " ms",
				num(sum(pick(runs, func(w ts.WrkResult) float64 { return float64(w.Failures) }))),
				ratio(dp.median(t, rps), dp.median("nginx", rps)), ratio(dp.median(t, p99), dp.median("nginx", p99)),
				ratio(dp.median(t, rps), dp.median("direct", rps))})
		}
		table(&b, fmt.Sprintf("Data plane (figure 5): one demo-app backend, wrk 1 thread, %v keep-alive connections, median of %v rounds",
			m.Settings["dp_conns"], m.Settings["dp_rounds"]),
			[]string{"target", "req/s", "p50", "p99", "failed", "req/s vs nginx", "p99 vs nginx", "req/s vs direct"}, rows)
	}

	if sw := r.Sweep; sw != nil && len(sw.All) > 0 {
		one := median(pick(sw.One, wallMs))
		rows = nil
		for _, row := range []struct {
			name  string
			slots int
			runs  []Timed
		}{
			{fmt.Sprintf("%d services (no --service)", sw.Services), sw.Slots, sw.All},
			{"1 service (a one-service config)", 2, sw.One},
			{fmt.Sprintf("--service svc000 of the %d", sw.Services), 2, sw.OneOfMany},
		} {
			w := pick(row.runs, wallMs)
			rows = append(rows, []string{row.name, fmt.Sprint(row.slots), medMax(w, " ms"),
				medMax(pick(row.runs, func(t Timed) float64 { return t.CPUMs }), " ms"),
				num(median(pick(row.runs, func(t Timed) float64 { return mb(t.RSSKB) }))) + " MB",
				fmt.Sprintf("%.2f×", median(w)/one)})
		}
		if len(sw.ProbeFloorMs) > 0 {
			rows = append(rows, []string{fmt.Sprintf("floor: the %d HTTP probes alone, from the harness (no process, no state)", sw.Slots),
				fmt.Sprint(sw.Slots), medMax(sw.ProbeFloorMs, " ms"), "", "", fmt.Sprintf("%.2f×", median(sw.ProbeFloorMs)/one)})
		}
		table(&b, "Health sweep (figure 6): `bgd health-check`, whole process, median / max",
			[]string{"sweep", "slots", "time", "CPU (user+sys)", "peak RSS", "vs 1 service"}, rows)
	}

	rows = nil
	if dp := r.DataPlane; dp != nil && dp.ProxyHWMKB > 0 {
		rows = append(rows, []string{"`bgd proxy` after the figure-5 load", fmt.Sprintf("%.1f MB (RSS at the end %.1f MB)", mb(dp.ProxyHWMKB), mb(dp.ProxyRSSKB))})
	}
	for d, dr := range r.drivers {
		if dr.ProxyHWMKB > 0 {
			rows = append(rows, []string{fmt.Sprintf("`bgd proxy` spawned by `bgd start`, after the %s flips under load", d), fmt.Sprintf("%.1f MB", mb(dr.ProxyHWMKB))})
		}
	}
	for d, dr := range r.drivers {
		if rss := pick(dr.Status, func(t Timed) float64 { return mb(t.RSSKB) }); len(rss) > 0 {
			rows = append(rows, []string{fmt.Sprintf("one `bgd status` process (%s), median / max of %d", d, len(rss)), medMax(rss, "") + " MB"})
		}
	}
	table(&b, "Memory (figure 7)", []string{"process", "peak RSS (VmHWM / ru_maxrss)"}, rows)

	r.Targets = r.targets()
	rows = nil
	for _, t := range r.Targets {
		rows = append(rows, []string{t.Name, t.Goal, t.Measured, t.Verdict})
	}
	table(&b, "Targets (issue 5), judged on medians", []string{"target", "goal", "measured", "verdict"}, rows)
	var notes []string
	for d, dr := range r.drivers {
		for _, n := range dr.Notes {
			notes = append(notes, d+": "+n)
		}
	}
	list(&b, "Driver notes", notes)
	list(&b, "Errors", r.Errors)
	return strings.TrimSuffix(b.String(), "\n")
}

// canaryTable renders figure 8.
func (r *Results) canaryTable(b *strings.Builder) {
	var rows [][]string
	for d, dr := range r.drivers {
		for _, s := range dr.Canary {
			rows = append(rows, []string{d, "`" + s.Command + "`", fmt.Sprintf("%d%%", s.Weight),
				fmt.Sprintf("%.2f%% (%d of %d)", s.Share, s.Slots[s.Canary], s.Counted),
				fmt.Sprintf("%.2f", math.Abs(s.Share-float64(s.Weight))), num(float64(s.Failures)),
				fmt.Sprintf("%d of %d", s.NewConn.Failures, s.NewConn.Requests),
				fmt.Sprintf("%d of %d", s.KeepAlive.Failures, s.KeepAlive.Requests), num(s.WallMs) + " ms"})
		}
	}
	if len(rows) > 0 {
		table(b, "Canary (figure 8): split accuracy after each weight, and the load while it was set", []string{"driver", "command", "weight",
			"canary's share", "off by (points)", "failed (counting)", "failed, new-conn clients", "failed, keep-alive clients", "command wall time"}, rows)
	}
}

// analysisTable renders figure 9.
func (r *Results) analysisTable(b *strings.Builder) {
	var rows [][]string
	for d, dr := range r.drivers {
		ar := dr.AutoRollbacks
		if len(ar)+len(dr.GoodWatches) == 0 {
			continue
		}
		rows = append(rows, []string{d,
			fmt.Sprintf("%d of %d", count(ar, func(a AutoRollback) bool { return a.ExitCode == 1 }), len(ar)),
			medMax(pick(ar, func(a AutoRollback) float64 { return a.FirstToLastMs }), " ms"),
			medMax(pick(ar, func(a AutoRollback) float64 { return float64(a.BadAnswers) }), ""),
			medMax(pick(ar, func(a AutoRollback) float64 { return a.WallMs }), " ms"),
			fmt.Sprintf("%d of %d", count(dr.GoodWatches, func(g GoodWatch) bool { return g.ExitCode == 0 }), len(dr.GoodWatches))})
	}
	if len(rows) > 0 {
		table(b, "Automatic rollback (figure 9): a release answering 20% of requests 500, `deploy --watch 20s`, 4 keep-alive clients; analysis every 200 ms, over 5% errors after 20 requests rolls back",
			[]string{"driver", "bad releases rolled back", "first to last bad answer", "bad answers", "deploy wall time", "good releases kept (--watch)"}, rows)
	}
}

// nginxRuntimeTable renders figure 10.
func (r *Results) nginxRuntimeTable(b *strings.Builder) {
	nr := r.NginxRuntime
	if nr == nil {
		return
	}
	var rows [][]string
	for _, mode := range nginxModes {
		if nr.Unavailable != "" {
			rows = append(rows, unavailableRow(mode, nr.Unavailable, 9))
			continue
		}
		fl := nr.Flips[mode]
		ka, nc := pick(fl, kaFailed), pick(fl, ncFailed)
		kaReq := pick(fl, func(f Flip) float64 { return float64(f.KeepAlive.Requests) })
		rows = append(rows, []string{mode,
			fmt.Sprintf("%s (%s of %s in %d flips)", medMax(ka, ""), num(sum(ka)), num(sum(kaReq)), len(fl)),
			fmt.Sprintf("%s (%s)", medMax(nc, ""), num(sum(nc))),
			medMax(pick(fl, func(f Flip) float64 { return f.InProcessMs }), " ms"),
			medMax(pick(fl, switchMs), " ms"),
			num(median(pick(nr.Runs[mode], rps))),
			fmt.Sprintf("%.2f ms", median(pick(nr.Runs[mode], p99))),
			fmt.Sprintf("%.1f µs", median(nr.CPUPerReqUs[mode])), "–"})
		if n := nr.InstrPerReq[mode]; n > 0 {
			rows[len(rows)-1][8] = num(n)
		}
	}
	if nr.Unavailable == "" {
		rt, rl := nginxModes[1], nginxModes[0]
		of := func(mode string, f func(ts.WrkResult) float64) float64 { return median(pick(nr.Runs[mode], f)) }
		rows = append(rows, []string{"runtime / reload", "", "", "", "", ratio(of(rt, rps), of(rl, rps)), ratio(of(rt, p99), of(rl, p99)),
			ratio(median(nr.CPUPerReqUs[rt]), median(nr.CPUPerReqUs[rl])), ratio(nr.InstrPerReq[rt], nr.InstrPerReq[rl])})
	}
	table(b, "nginx modes (figure 10): reload vs runtime (Lua balancer), one nginx, flips and rounds interleaved",
		[]string{"mode", "failed keep-alive requests per flip", "failed new-conn requests per flip", "flip in bgd (in-process)",
			"`bgd switch` (whole process)", "data plane req/s", "data plane p99", "nginx CPU per request",
			"nginx instructions per request (callgrind)"}, rows)
	if nr.InstrUnavailable != "" {
		fmt.Fprintf(b, "(instructions per request: %s)\n\n", nr.InstrUnavailable)
	}
}

func (r *Results) targets() []Target {
	var out []Target
	add := func(name, goal string, measured string, ok bool, measuredAtAll bool) {
		v := "missed"
		switch {
		case !measuredAtAll:
			v, measured = "not measured", "–"
		case ok:
			v = "met"
		}
		out = append(out, Target{Name: name, Goal: goal, Measured: measured, Verdict: v})
	}
	for _, d := range driverOrder {
		dr := r.Drivers[d]
		ok := dr != nil && dr.Unavailable == "" && len(dr.Flips) > 0
		var nc, ka []float64
		if ok {
			nc, ka = pick(dr.Flips, ncFailed), pick(dr.Flips, kaFailed)
		}
		add(d+": failed requests, new-connection clients", "0", fmt.Sprintf("%s in %d flips", num(sum(nc)), len(nc)), sum(nc) == 0, ok)
		if d != "nginx" {
			add(d+": failed requests, keep-alive clients", "0", fmt.Sprintf("%s in %d flips", num(sum(ka)), len(ka)), sum(ka) == 0, ok)
			continue
		}
		add(d+": failed requests, keep-alive clients", "measured and documented",
			fmt.Sprintf("%s in %d flips (median %s per flip)", num(sum(ka)), len(ka), num(median(ka))), true, ok)
		if ok {
			out[len(out)-1].Verdict = "documented"
		}
	}
	// The median of one figure of each driver, against its goal in ms.
	for _, g := range []struct {
		what string
		runs func(*DriverResult) []Timed
		f    func(Timed) float64
		goal map[string]float64
	}{
		{"flip (`bgd switch`, whole process)", func(dr *DriverResult) []Timed { return dr.IdleFlips }, wallMs,
			map[string]float64{"builtin": 20, "nginx": 250, "haproxy": 20}},
		{"deploy overhead", func(dr *DriverResult) []Timed { return dr.Deploys }, overheadMs,
			map[string]float64{"builtin": 50, "nginx": 50, "haproxy": 50}},
		{"crash detection", func(dr *DriverResult) []Timed { return dr.Crashes }, detectMs,
			map[string]float64{"builtin": 200, "nginx": 200, "haproxy": 200}},
	} {
		for _, d := range driverOrder {
			var w []float64
			if dr := r.Drivers[d]; dr != nil {
				w = pick(g.runs(dr), g.f)
			}
			add(d+": "+g.what, fmt.Sprintf("≤ %.0f ms", g.goal[d]), medMax(w, " ms"), median(w) <= g.goal[d], len(w) > 0)
		}
	}
	// Absent phases are empty results: their targets are "not measured".
	dp, sw := cmp.Or(r.DataPlane, &DataPlane{}), cmp.Or(r.Sweep, &SweepResult{})
	dpOK := len(dp.Runs["builtin"]) > 0 && len(dp.Runs["nginx"]) > 0
	rpsRatio, p99Ratio := dp.median("builtin", rps)/dp.median("nginx", rps), dp.median("builtin", p99)/dp.median("nginx", p99)
	add("builtin throughput vs nginx", "≥ 0.50×", fmt.Sprintf("%.2f×", rpsRatio), rpsRatio >= 0.5, dpOK)
	add("builtin p99 vs nginx", "≤ 2.00×", fmt.Sprintf("%.2f×", p99Ratio), p99Ratio <= 2, dpOK)
	one := median(pick(sw.One, wallMs))
	swRatio := median(pick(sw.All, wallMs)) / one
	measured := fmt.Sprintf("%.2f×", swRatio)
	if len(sw.ProbeFloorMs) > 0 {
		measured += fmt.Sprintf(" (its HTTP probes alone: %.2f×)", median(sw.ProbeFloorMs)/one)
	}
	add(fmt.Sprintf("health sweep, %d slots vs 2", sw.Slots), "≤ 3.00×", measured, swRatio <= 3, len(sw.All) > 0 && len(sw.One) > 0)
	hwm := dp.ProxyHWMKB
	add("`bgd proxy` peak RSS under load", "≤ 40 MB", fmt.Sprintf("%.1f MB", mb(hwm)), mb(hwm) <= 40, hwm > 0)
	return out
}

// table renders a Markdown table: its title, the header, its rule, a line
// per row (an empty cell is "| |").
func table(b *strings.Builder, title string, header []string, rows [][]string) {
	b.WriteString("### " + title + "\n\n| " + strings.Join(header, " | ") + " |\n|" + strings.Repeat("---|", len(header)) + "\n")
	for _, cells := range rows {
		b.WriteString("|")
		for _, c := range cells {
			if c != "" {
				c = " " + c
			}
			b.WriteString(c + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// list renders a section of one-line items, when there are any.
func list(b *strings.Builder, title string, items []string) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(b, "### %s\n\n", title)
	for _, it := range items {
		fmt.Fprintf(b, "- %s\n", strings.ReplaceAll(it, "\n", " "))
	}
	b.WriteString("\n")
}

// unavailableRow is a table row of a target or driver not measured: its
// name and why, then empty cells.
func unavailableRow(name, why string, cells int) []string {
	return append([]string{name, shortReason(why)}, make([]string, cells-2)...)
}

// drivers yields the drivers measured (or not: see Unavailable), in order.
func (r *Results) drivers(yield func(string, *DriverResult) bool) {
	for _, d := range driverOrder {
		if dr := r.Drivers[d]; dr != nil && !yield(d, dr) {
			return
		}
	}
}

var driverOrder = []string{"builtin", "nginx", "haproxy"}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// median of the data-plane runs of a target.
func (dp *DataPlane) median(target string, f func(ts.WrkResult) float64) float64 {
	return median(pick(dp.Runs[target], f))
}

func pick[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func sum(xs []float64) (t float64) {
	for _, x := range xs {
		t += x
	}
	return t
}

func count[T any](xs []T, f func(T) bool) (n int) {
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

// medMax formats "median / max" with a unit.
func medMax(xs []float64, unit string) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s%s", num(median(xs)), num(slices.Max(xs)), unit)
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

// ratio formats a/b, "–" when either is missing.
func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// The figures the tables take from each sample.
func wallMs(t Timed) float64     { return t.WallMs }
func overheadMs(t Timed) float64 { return t.OverheadMs }
func detectMs(t Timed) float64   { return t.DetectMs }
func switchMs(f Flip) float64    { return f.SwitchMs }
func ncFailed(f Flip) float64    { return float64(f.NewConn.Failures) }
func kaFailed(f Flip) float64    { return float64(f.KeepAlive.Failures) }
func rps(w ts.WrkResult) float64 { return w.RPS }
func p99(w ts.WrkResult) float64 { return w.P99Ms }

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
