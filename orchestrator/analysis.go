package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// Analysis is what bgd saw of a new release through the load balancer
// (analysis:, deploy --watch): the new slot's answers since the flip or the
// canary step, judged against the thresholds.
type Analysis struct {
	Slot config.Color `json:"slot"`
	// Watched is how long bgd watched; Window how long it meant to.
	Watched time.Duration `json:"watched_ns"`
	Window  time.Duration `json:"window_ns"`
	// What the load balancer counted for the slot meanwhile.
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	// Latency is the slot's p99 (or the driver's mean: LatencyKind), and
	// Baseline the other slot's, 0 when unknown.
	Latency     time.Duration `json:"latency_ns,omitempty"`
	LatencyKind string        `json:"latency_kind,omitempty"`
	Baseline    time.Duration `json:"baseline_ns,omitempty"`
	// Failed is true when a threshold was crossed; Reason says which, with
	// the numbers.
	Failed  bool   `json:"failed"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

// errAnalysisFailed marks a release that crossed an analysis threshold.
var errAnalysisFailed = errors.New("analysis failed")

// observer is the service's load balancer as an lb.Observer, or an error
// saying that its driver cannot be watched.
func (o *Orchestrator) observer() (lb.Observer, error) {
	ob, ok := o.lb.(lb.Observer)
	if !ok {
		return nil, usagef("analysis needs a load balancer that counts the slots' answers; the %s driver does not", o.driverName())
	}
	if o.svc.LB.Driver == "nginx" && o.svc.LB.Nginx.AccessLog == "" {
		return nil, usagef("analysis with nginx reads the JSON access log the default template writes: set lb.nginx.access_log (e.g. /var/log/nginx/bgd-%s.json.log)", o.svc.Name)
	}
	return ob, nil
}

// watch observes color's answers for window (checking every
// analysis.interval), with other's as the latency baseline, and judges
// them: it returns early with Failed set as soon as a threshold is
// crossed. An error means the load balancer could not be asked at all.
func (p *op) watch(ctx context.Context, color config.Color, window time.Duration) (*Analysis, error) {
	o := p.o
	ob, err := o.observer()
	if err != nil {
		return nil, err
	}
	a := o.svc.Analysis
	up := func(c config.Color) lb.Upstream {
		return lb.Upstream{Color: c, Host: p.o.svc.Host(c), Port: p.st.Slot(c).Port}
	}
	began := time.Now()
	start, err := ob.Observe(ctx, up(color))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", color, err)
	}
	otherStart, otherErr := ob.Observe(ctx, up(color.Other()))
	res := &Analysis{Slot: color, Window: window}
	p.phase("watching", color, fmt.Sprintf("for %s", window))
	var lastErr error
	for {
		wait := min(a.Interval.D(), window-time.Since(began))
		if wait > 0 {
			select {
			case <-ctx.Done():
				res.Watched = time.Since(began)
				return res, fmt.Errorf("watch of %s interrupted after %s: %w", color, round(res.Watched), ctx.Err())
			case <-time.After(wait):
			}
		}
		cur, err := ob.Observe(ctx, up(color))
		res.Watched = time.Since(began)
		if err != nil {
			lastErr = err
			o.log.Warn("analysis: the load balancer could not be asked", "slot", color, "err", err)
		} else {
			lastErr = nil
			w := cur.Since(start)
			var base time.Duration
			if otherErr == nil {
				if oc, err := ob.Observe(ctx, up(color.Other())); err == nil {
					base = baseline(oc, otherStart)
				}
			}
			p.judge(res, w, base)
			o.log.Info("analysis", "slot", color, "window", w.String(), "failed", res.Failed)
			if res.Failed {
				return res, nil
			}
		}
		if res.Watched >= window {
			break
		}
	}
	if lastErr != nil {
		return res, fmt.Errorf("watch %s: the load balancer could not be asked at the end of the window: %w", color, lastErr)
	}
	switch {
	case res.Requests < uint64(a.MinRequests):
		res.Message = fmt.Sprintf("%s answered only %d requests in %s (analysis.min_requests: %d): not judged", color, res.Requests, round(res.Watched), a.MinRequests)
	default:
		res.Message = fmt.Sprintf("%s passed analysis over %s: %s", color, round(res.Watched), windowText(res))
	}
	return res, nil
}

// baseline is the latency of the other slot: over the same window when it
// answered enough requests in it (a canary's active slot), else over all
// the load balancer counted of it (the old slot after a flip gets none).
func baseline(cur, start lb.Observation) time.Duration {
	w := cur.Since(start)
	if w.Requests < 20 {
		w = cur.Since(lb.Observation{})
	}
	d, _ := w.Latency()
	return d
}

// judge records window w of res.Slot in res and decides it against the
// thresholds, once analysis.min_requests have been answered.
func (p *op) judge(res *Analysis, w lb.Window, base time.Duration) {
	a := p.o.svc.Analysis
	res.Requests, res.Errors, res.ErrorRate = w.Requests, w.Errors, w.ErrorRate()
	res.Latency, res.LatencyKind = w.Latency()
	res.Baseline = base
	if w.Requests < uint64(a.MinRequests) {
		return
	}
	var why string
	switch {
	case w.ErrorRate() > a.ErrorRate():
		why = fmt.Sprintf("error rate %.2f%% (%d of %d requests) is above analysis.max_error_rate %.2f%%",
			100*w.ErrorRate(), w.Errors, w.Requests, 100*a.ErrorRate())
	case a.MaxP99 > 0 && res.Latency > a.MaxP99.D():
		why = fmt.Sprintf("%s latency %s is above analysis.max_p99 %s", res.LatencyKind, latencyText(res.Latency), a.MaxP99)
	case a.MaxP99Ratio > 0 && base > 0 && float64(res.Latency) > a.MaxP99Ratio*float64(base):
		why = fmt.Sprintf("%s latency %s is %.1f times the other slot's %s, above analysis.max_p99_ratio %v",
			res.LatencyKind, latencyText(res.Latency), float64(res.Latency)/float64(base), latencyText(base), a.MaxP99Ratio)
	}
	if why != "" {
		res.Failed, res.Reason = true, why
		res.Message = fmt.Sprintf("%s failed analysis after %s: %s", res.Slot, round(res.Watched), why)
	}
}

func latencyText(d time.Duration) string {
	if d == math.MaxInt64 {
		return "beyond the histogram's last bound"
	}
	return d.String()
}

func windowText(a *Analysis) string {
	s := fmt.Sprintf("%d requests, %d failed (%.2f%%)", a.Requests, a.Errors, 100*a.ErrorRate)
	if a.LatencyKind != "" {
		s += fmt.Sprintf(", %s %s", a.LatencyKind, latencyText(a.Latency))
	}
	return s
}

// watchDeploy is the analysis after a deploy's flip from from to to: on a
// failed analysis it flips back to from (still running) and records the
// automatic rollback; the error then matches ErrFailed.
func (p *op) watchDeploy(ctx context.Context, d DeployOptions, from, to config.Color, res *Result) error {
	window := d.watchWindow(p.o.svc.Analysis)
	if err := p.recordWatch(ctx, to, d.Release, state.Now().Add(window)); err != nil {
		return failf("release %s is live on %s, but %w", d.Release, to, err)
	}
	a, err := p.watch(ctx, to, window)
	p.analysis, res.Analysis = a, a
	p.st.Watch = nil
	if err != nil {
		return failf("release %s is live on %s, but %w", d.Release, to, err)
	}
	if !a.Failed {
		res.Message += "; " + a.Message
		return nil
	}
	return p.autoRollback(ctx, a, from, to, d.Release)
}

// autoRollback flips back to from after a failed analysis of to.
func (p *op) autoRollback(ctx context.Context, a *Analysis, from, to config.Color, release string) error {
	st := p.st
	ctx = context.WithoutCancel(ctx)
	if err := p.flip(ctx, from); err != nil {
		st.Record(state.Event{Action: "rollback", From: to, To: from, Status: state.StatusFailed, Release: release,
			Reason: "automatic, after " + a.Message + ": " + err.Error()})
		return failf("%w: %s; the automatic rollback to %s failed too: %w", errAnalysisFailed, a.Message, from, err)
	}
	st.Record(state.Event{Action: "rollback", From: to, To: from, Status: state.StatusAutoRolledBack, Release: release, Reason: a.Message})
	p.o.log.Error("automatic rollback", "from", to, "to", from, "reason", a.Reason)
	return failf("%w: %s; rolled back to %s by itself (release %s, still running on %s for inspection)",
		errAnalysisFailed, a.Message, from, release, to)
}

// watchWindow is how long a deploy watches its new slot: --watch, else
// analysis.window (0: not at all).
func (d DeployOptions) watchWindow(a config.Analysis) time.Duration {
	if d.Watch > 0 {
		return d.Watch
	}
	return a.Window.D()
}

// recordWatch records in the state (saved at once) that color is under
// analysis from now until until (zero: a canary's, while it lasts), with
// the load balancer's counts of it now, so that health sweeps judge it
// too, even if this command dies. Only drivers whose counts outlive one
// bgd process (builtin, HAProxy) are recorded; nginx's access log is read
// by the watching process alone.
func (p *op) recordWatch(ctx context.Context, color config.Color, release string, until time.Time) error {
	o := p.o
	ob, err := o.observer()
	if err != nil || o.svc.LB.Driver == "nginx" {
		return nil
	}
	cur, err := ob.Observe(ctx, lb.Upstream{Color: color, Host: p.o.svc.Host(color), Port: p.st.Slot(color).Port})
	if err != nil {
		return nil // the watch itself will say so
	}
	p.st.Watch = &state.Watch{Color: color, Release: release, Since: state.Now(), Until: until, Requests: cur.Requests, Errors: cur.Errors}
	return p.save()
}

// enforceWatch is a health sweep's part of the analysis: a slot the state
// records under watch (recordWatch) is judged on its error rate since the
// watch began, and rolled back (a deploy's) or aborted (a canary) when it
// crosses analysis.max_error_rate; a deploy's watch ends at its Until.
// The sweep holds the lock. It returns what it did ("" when nothing).
func (p *op) enforceWatch(ctx context.Context) string {
	st, o := p.st, p.o
	w := st.Watch
	if w == nil {
		return ""
	}
	canary := w.Until.IsZero()
	if canary && (st.Canary == nil || st.Canary.Color != w.Color) || !canary && w.Color != st.ActiveVersion {
		st.Watch = nil // the routing it watched is gone
		return ""
	}
	ob, err := o.observer()
	if err != nil {
		return ""
	}
	cur, err := ob.Observe(ctx, lb.Upstream{Color: w.Color, Host: o.svc.Host(w.Color), Port: st.Slot(w.Color).Port})
	if err != nil {
		o.log.Warn("analysis: the load balancer could not be asked", "slot", w.Color, "err", err)
		return ""
	}
	win := cur.Since(lb.Observation{Requests: w.Requests, Errors: w.Errors})
	win.P99, win.Mean = 0, 0 // the sweep judges the error rate alone
	a := &Analysis{Slot: w.Color, Watched: time.Since(w.Since)}
	p.judge(a, win, 0)
	switch {
	case a.Failed && canary:
		p.analysis = a
		res, err := p.abort(ctx, "health sweep: "+a.Message)
		if err != nil {
			return "the canary " + w.Color.String() + " failed its analysis, but aborting it failed: " + err.Error()
		}
		return res.Message + " (" + a.Message + ")"
	case a.Failed:
		err := p.autoRollback(ctx, a, w.Color.Other(), w.Color, w.Release)
		st.Watch = nil
		return strings.TrimPrefix(err.Error(), errAnalysisFailed.Error()+": ")
	case !canary && !state.Now().Before(w.Until):
		st.Watch = nil
		return fmt.Sprintf("%s ended its watch: %s", w.Color, windowText(a))
	}
	return ""
}
