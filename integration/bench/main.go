// Command bench measures what users choose a deployment tool on, for the
// three data planes side by side in one run: requests lost during flips
// under load, flip latency, deploy overhead, crash detection, data-plane
// cost, health-sweep scaling, memory, canary splits, automatic rollbacks
// and nginx's two modes (issue 5, docs/BENCHMARKS.md).
//
// It starts everything itself on loopback (demo-app slots, bgd, a real
// nginx and a real HAProxy with their own prefix and socket, wrk), stops
// everything on success, error or interrupt, prints Markdown tables and
// writes the raw samples as JSON into -out.
//
//	go run ./integration/bench -bgd bin/bgd -out bench-results [-short]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// options are the command-line flags; -short changes the defaults.
type options struct {
	bgd, out string
	short    bool
	keep     bool
	drivers  []string
	phases   map[string]bool

	flips, deploys, crashes int
	readyAfter              time.Duration
	loadConns               int
	loadDelay               time.Duration
	pre, post               time.Duration
	dpConns, dpRounds       int
	dpDuration              time.Duration
	services, sweeps        int
	statusRuns              int
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.bgd, "bgd", "bin/bgd", "the bgd binary to measure (make build)")
	fs.StringVar(&o.out, "out", "bench-results", "directory for the raw results (JSON) and the tables (Markdown)")
	fs.BoolVar(&o.short, "short", false, "run every path briefly (CI smoke mode); the numbers mean little")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs) for inspection")
	drivers := fs.String("drivers", "builtin,nginx,haproxy", "drivers to measure")
	phases := fs.String("phases", "drivers,dataplane,sweep,nginxmodes", "phases to run: drivers (figures 1-4, 7-9), dataplane (5, 7), sweep (6), nginxmodes (10)")
	fs.IntVar(&o.flips, "flips", 0, "flips under load per driver, and idle flips (default 20; -short 3)")
	fs.IntVar(&o.deploys, "deploys", 0, "deploys per driver (default 20; -short 3)")
	fs.IntVar(&o.crashes, "crashes", 0, "crashing deploys per driver (default 20; -short 3)")
	fs.DurationVar(&o.readyAfter, "ready-after", 0, "the demo app's --ready-after in deploys (default 1s; -short 300ms)")
	fs.IntVar(&o.loadConns, "load-conns", 4, "connections of each flip-load client kind (new-connection, keep-alive)")
	fs.DurationVar(&o.loadDelay, "load-delay", 2*time.Millisecond, "pause between a response and the next request on a flip-load connection")
	fs.IntVar(&o.dpConns, "dp-conns", 32, "keep-alive connections of the data-plane load")
	fs.IntVar(&o.dpRounds, "dp-rounds", 0, "interleaved data-plane rounds (default 3; -short 1)")
	fs.DurationVar(&o.dpDuration, "dp-duration", 0, "data-plane load per target and round (default 4s; -short 1s)")
	fs.IntVar(&o.services, "services", 100, "services in the large health sweep (two slots each)")
	fs.IntVar(&o.sweeps, "sweeps", 0, "timed sweeps of each size (default 20; -short 3)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	def(&o.flips, 20, 3, o.short)
	def(&o.deploys, 20, 3, o.short)
	def(&o.crashes, 20, 3, o.short)
	def(&o.dpRounds, 3, 1, o.short)
	def(&o.sweeps, 20, 3, o.short)
	def(&o.statusRuns, 10, 3, o.short)
	def(&o.readyAfter, time.Second, 300*time.Millisecond, o.short)
	def(&o.dpDuration, 4*time.Second, time.Second, o.short)
	// The flip window: load runs pre before `bgd switch` and post after it
	// returns, long enough for nginx's old workers to finish (~100 ms).
	def(&o.pre, 300*time.Millisecond, 200*time.Millisecond, o.short)
	def(&o.post, 500*time.Millisecond, 300*time.Millisecond, o.short)
	var err error
	if o.drivers, err = parseList("-drivers", "driver", *drivers, driverOrder); err != nil {
		return o, err
	}
	phaseList, err := parseList("-phases", "phase", *phases, []string{"drivers", "dataplane", "sweep", "nginxmodes"})
	if err != nil {
		return o, err
	}
	o.phases = map[string]bool{}
	for _, p := range phaseList {
		o.phases[p] = true
	}
	if o.services < 1 || o.services > 5000 {
		return o, fmt.Errorf("-services %d: use 1 to 5000", o.services)
	}
	return o, nil
}

// def sets *v, unless given, to its default, or in -short mode its short one.
func def[T int | time.Duration](v *T, full, short T, isShort bool) {
	if *v <= 0 {
		*v = full
		if isShort {
			*v = short
		}
	}
}

// parseList splits a comma-separated flag value, every item one of known.
func parseList(flagName, what, value string, known []string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(value, ",") {
		switch v = strings.TrimSpace(v); {
		case slices.Contains(known, v):
			out = append(out, v)
		case v != "":
			return nil, fmt.Errorf("%s: unknown %s %q (use %s)", flagName, what, v, strings.Join(known, ", "))
		}
	}
	return out, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == crashAppArg {
		os.Exit(crashApp(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == plainProxyArg {
		os.Exit(plainProxy(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

// Exit codes: 0 every phase ran (outside CI, a load balancer that is not
// installed is not an error); 1 a phase failed; 2 bad usage or missing tools; 130 interrupted.
func run(args []string) int {
	o, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second ^C ends the harness at once
	}()

	b, err := newBench(o, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	started := time.Now()
	defer func() {
		log.Info("stopping everything the bench started")
		b.reaper.stopAll()
		if o.keep {
			log.Info("work directory kept", "dir", b.work)
		} else {
			os.RemoveAll(b.work)
		}
	}()

	b.runAll(ctx)

	b.res.Meta.LoadAvg = append(b.res.Meta.LoadAvg, loadAvg())
	b.res.Meta.DurationS = time.Since(started).Seconds()
	md := b.res.markdown()
	fmt.Print(md)
	if err := b.res.write(o.out, md); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted; partial results written")
		return 130
	case len(b.res.Errors) > 0:
		fmt.Fprintf(os.Stderr, "bench: %d phase(s) failed:\n  %s\n", len(b.res.Errors), strings.Join(b.res.Errors, "\n  "))
		return 1
	}
	return 0
}

// bench is one run: its tools, its processes, its results.
type bench struct {
	o      options
	log    *slog.Logger
	work   string   // temp dir: configs, state, logs, nginx prefix, HAProxy socket
	exe    string   // this harness (re-executed as the crashing app)
	bgd    string   // the bgd binary, run as a user's shell would: a whole process per command
	env    []string // the environment of every bgd process (cleanEnv)
	reaper *reaper
	wrk    string

	nginxBin, haproxyBin string
	nginx                *ts.Nginx // nil when it could not start
	haApp, haDP          *haFrontend
	lbErr                map[string]string // driver -> why its balancer is missing

	res *Results
}

func newBench(o options, log *slog.Logger) (*bench, error) {
	bgd, err := filepath.Abs(o.bgd)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(bgd); err != nil || st.IsDir() {
		return nil, fmt.Errorf("-bgd %s: not a binary (run make build): %v", o.bgd, err)
	}
	wrk := ts.FindBinary("wrk")
	if wrk == "" {
		return nil, errors.New("wrk is not installed: apt-get install wrk (see .ci/run)")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "bgd-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, log: log, work: work, exe: exe, wrk: wrk,
		bgd: bgd, env: cleanEnv(),
		reaper:   &reaper{stateGlobs: []string{filepath.Join(work, "*", "state", "*.json"), filepath.Join(work, "*", "*", "state", "*.json")}},
		nginxBin: ts.FindBinary("nginx"), haproxyBin: ts.FindBinary("haproxy"),
		lbErr: map[string]string{},
	}
	b.res = &Results{Drivers: map[string]*DriverResult{}, Meta: meta(b)}
	return b, nil
}

// runAll runs every phase; a failing phase is recorded and the next runs.
func (b *bench) runAll(ctx context.Context) {
	phase := func(name string, f func() error) { b.step(ctx, name, &b.res.Errors, f) }
	if b.o.phases["drivers"] || b.o.phases["dataplane"] {
		phase("balancers", b.startBalancers)
	}
	if b.o.phases["drivers"] {
		for _, d := range b.o.drivers {
			dr := &DriverResult{Driver: d}
			b.res.Drivers[d] = dr
			phase("driver "+d, func() error { return b.driverPhases(ctx, dr) })
		}
	}
	if b.o.phases["dataplane"] {
		phase("data plane", func() error { return b.dataPlane(ctx) })
	}
	if b.o.phases["sweep"] {
		phase("health sweep", func() error { return b.healthSweep(ctx) })
	}
	if b.o.phases["nginxmodes"] && b.wants("nginx") {
		phase("nginx modes", func() error { return b.nginxRuntime(ctx) })
	}
}

// step runs one measurement (unless interrupted), logs it and records its
// error, "name: error", in errs.
func (b *bench) step(ctx context.Context, name string, errs *[]string, f func() error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.log.Info("measuring", "what", name)
	t0 := time.Now()
	err := f()
	if err != nil && ctx.Err() == nil {
		b.log.Error("failed", "what", name, "err", err)
		*errs = append(*errs, name+": "+err.Error())
	}
	b.log.Info("done", "what", name, "took", time.Since(t0).Round(time.Millisecond))
	return err
}

func (b *bench) wants(driver string) bool { return slices.Contains(b.o.drivers, driver) }

// meta describes the run and the machine (an absent program or file leaves
// its field empty).
func meta(b *bench) Meta {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	o := b.o
	m := Meta{Started: time.Now().UTC(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Wrk: ts.WrkVersion(b.wrk),
		LoadAvg: []string{loadAvg()}, CPUModel: cpuModel(string(cpuinfo)), Kernel: strings.TrimSpace(string(kernel)),
		Nginx: ts.FirstLine(b.nginxBin, "-v"), HAProxy: ts.FirstLine(b.haproxyBin, "-v"),
		Command: "go run ./integration/bench " + strings.Join(os.Args[1:], " "), Short: o.short,
		Settings: map[string]any{
			"flips": o.flips, "deploys": o.deploys, "crashes": o.crashes, "ready_after": o.readyAfter.String(),
			"load_conns_per_kind": o.loadConns, "load_delay": o.loadDelay.String(), "flip_window_pre": o.pre.String(),
			"flip_window_post": o.post.String(), "dp_conns": o.dpConns, "dp_rounds": o.dpRounds,
			"dp_duration": o.dpDuration.String(), "sweep_services": o.services, "sweeps": o.sweeps, "wrk_threads": 1,
		}}
	if r, err := b.expect(context.Background(), b.work, 0, "version"); err == nil {
		m.BgdVersion = strings.TrimSpace(r.Stdout)
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	return firstFields(string(data), 3)
}

// firstFields is the first n fields of s, or "" when it has fewer.
func firstFields(s string, n int) string {
	if f := strings.Fields(s); len(f) >= n {
		return strings.Join(f[:n], " ")
	}
	return ""
}
