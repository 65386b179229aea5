package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
)

// printer writes a command's outcome: JSON with --json, else the seed's
// human shape, with emoji and colour only on a terminal without NO_COLOR.
type printer struct {
	w, errw  io.Writer
	json     bool
	fancy    bool // stdout is a terminal and NO_COLOR is unset
	progress func(orchestrator.Phase)
	live     bool // a progress line is open on stderr
	// errorShown: the last JSON object written already carries the
	// command's error (ok false), so run must not write a second one.
	errorShown bool
}

// newPrinter returns the run's printer, made on first use.
func newPrinter(e *env) *printer {
	if e.out != nil {
		return e.out
	}
	p := &printer{w: e.stdout, errw: e.stderr, json: e.opts.json}
	noColor := e.getenv("NO_COLOR") != ""
	p.fancy = isTerminal(e.stdout) && !noColor && !p.json
	if isTerminal(e.stderr) && !noColor && !p.json {
		p.progress = p.showPhase
	}
	e.out = p
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// showPhase draws a deploy's phases on one live stderr line.
func (p *printer) showPhase(ph orchestrator.Phase) {
	var line string
	switch ph.Step {
	case "starting":
		line = fmt.Sprintf("🚀 starting %s: %s", ph.Color, ph.Detail)
	case "waiting":
		line = fmt.Sprintf("⏳ waiting for %s to be healthy (%.1fs)", ph.Color, ph.Elapsed.Seconds())
	case "healthy":
		line = fmt.Sprintf("💚 %s is healthy (%.1fs)", ph.Color, ph.Elapsed.Seconds())
	case "switching":
		line = fmt.Sprintf("🔀 switching traffic to %s", ph.Color)
	case "agent":
		line = "🛰️ " + ph.Detail
	case "draining":
		line = fmt.Sprintf("🚰 draining %s before it stops (%s)", ph.Color, ph.Detail)
	case "done":
		line = fmt.Sprintf("✅ done in %.2fs", ph.Elapsed.Seconds())
	case "failed":
		line = fmt.Sprintf("❌ failed after %.2fs", ph.Elapsed.Seconds())
	}
	fmt.Fprintf(p.errw, "\r\033[K%s", line)
	p.live = true
	if ph.Step != "waiting" {
		fmt.Fprintln(p.errw)
		p.live = false
	}
}

func (p *printer) endProgress() {
	if p.live {
		fmt.Fprintln(p.errw)
		p.live = false
	}
}

// emit writes v as JSON, or text for people. With --json every command
// writes one object per outcome, of one shape per command however many
// services it covers: a success has "ok": true, a failure "ok": false,
// "error" and "exit_code" (run writes those of the other commands); lists
// are [] when empty, never null.
func (p *printer) emit(v any, text string) error {
	if p.json {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(p.w, text)
	return err
}

func (p *printer) mark(ok bool) string {
	switch {
	case p.fancy && ok:
		return "✅"
	case p.fancy:
		return "❌"
	case ok:
		return "yes"
	default:
		return "no"
	}
}

func (p *printer) icon(s string) string {
	if p.fancy {
		return s + " "
	}
	return ""
}

func (p *printer) result(r *orchestrator.Result) error {
	text := p.icon("✅") + r.Message + "\n"
	for _, h := range r.Agents {
		text += "   " + h.Host + ": " + h.Line() + "\n"
	}
	return p.emit(struct {
		OK bool `json:"ok"`
		*orchestrator.Result
	}{true, r}, text)
}

func (p *printer) version() error {
	return p.emit(map[string]any{"ok": true, "version": version}, "bgd "+version+"\n")
}

func (p *printer) status(s *orchestrator.Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%sActive Version: %s (port %d)\n", p.icon("🎯"), strings.ToUpper(s.ActiveVersion.String()), s.ActivePort)
	if px := s.Proxy; px != nil {
		b.WriteString(p.proxyLine(px))
	}
	if s.LBError != "" && (s.Proxy == nil || s.Proxy.Running) {
		fmt.Fprintf(&b, "%sLoad balancer (%s): %s\n", p.icon("⚠️"), s.Driver, s.LBError)
	} else if s.LBError == "" && s.LBActive != s.ActiveVersion && (s.Canary == nil || s.LBActive != s.Canary.Color) {
		fmt.Fprintf(&b, "%sLoad balancer (%s) routes to %s, but the state says %s: run `bgd reconcile`\n",
			p.icon("⚠️"), s.Driver, strings.ToUpper(s.LBActive.String()), strings.ToUpper(s.ActiveVersion.String()))
	}
	if c := s.Canary; c != nil {
		sticky := ""
		if c.Sticky {
			sticky = ", sticky"
		}
		fmt.Fprintf(&b, "%sCanary: %s gets %d%% of new requests%s (since %s): `bgd canary N`, `bgd promote` or `bgd abort`\n",
			p.icon("🐤"), strings.ToUpper(c.Color.String()), c.Weight, sticky, c.Started.Format(time.RFC3339))
	}
	if sh := s.Shadow; sh != nil {
		fmt.Fprintf(&b, "%sShadow: %s (`bgd shadow off` stops it)\n", p.icon("👥"), sh.Summary())
	}
	b.WriteString(p.holdLines(s))
	for _, sl := range []orchestrator.SlotStatus{s.Blue, s.Green} {
		status := "stopped"
		if sl.Running {
			status = fmt.Sprintf("running (pid %d)", sl.PID)
		}
		fmt.Fprintf(&b, "\n%s%s Instance:\n", p.icon("📊"), strings.ToUpper(sl.Color.String()[:1])+sl.Color.String()[1:])
		fmt.Fprintf(&b, "   Port: %d\n   Status: %s\n   Healthy: %s\n", sl.Port, status, p.mark(sl.Healthy))
		if sl.Release != "" {
			fmt.Fprintf(&b, "   Release: %s\n", sl.Release)
		}
		if r := sl.Restarts; r != nil {
			fmt.Fprintf(&b, "   Restarts: %d by health sweeps since %s\n", r.Count, r.Since.Format(time.RFC3339))
		}
	}
	if s.Agents != nil || s.AgentsError != "" {
		fmt.Fprintf(&b, "\n%sLoad-balancer hosts (generation %d):\n", p.icon("🛰️"), s.Generation)
		if s.AgentsError != "" {
			fmt.Fprintf(&b, "   %s\n", s.AgentsError)
		} else if len(s.Agents) == 0 {
			b.WriteString("   none has joined: run `bgd agent` on each load-balancer host\n")
		}
		for _, a := range s.Agents {
			b.WriteString("   " + agentLine(a, s.Generation) + "\n")
		}
	}
	if op := s.InProgress; op != nil {
		if s.InProgressRunning {
			fmt.Fprintf(&b, "\n%sIn progress: %s (pid %d) since %s\n", p.icon("⏳"), op.Command, op.PID, op.Started.Format(time.RFC3339))
		} else {
			fmt.Fprintf(&b, "\n%sInterrupted: %s (pid %d, no longer running) started at %s and never finished: run `bgd reconcile`\n",
				p.icon("⚠️"), op.Command, op.PID, op.Started.Format(time.RFC3339))
		}
	}
	if len(s.History) > 0 {
		fmt.Fprintf(&b, "\n%sRecent history:\n", p.icon("📜"))
		p.historyLines(&b, s.History, 5)
	}
	st := *s
	st.History = nonNil(st.History)
	return p.emit(struct {
		OK bool `json:"ok"`
		*orchestrator.Status
	}{true, &st}, b.String())
}

// proxyLine is one line on the builtin proxy: an outage when it is down.
func (p *printer) proxyLine(px *orchestrator.ProxyStatus) string {
	if px.Running {
		admin := ""
		if px.Admin != "" && px.Admin != px.Listen {
			admin = fmt.Sprintf(", admin endpoints on %s", px.Admin)
		}
		return fmt.Sprintf("Proxy: running (pid %d) on %s%s\n", px.PID, px.Listen, admin)
	}
	line := fmt.Sprintf("%sProxy: NOT RUNNING on %s: %s", p.icon("⚠️"), px.Listen, px.Error)
	switch {
	case px.Restarted > 0:
		line += fmt.Sprintf("; restarted (pid %d)", px.Restarted)
	case px.Managed:
		line += "; `bgd health-check` restarts it"
	default:
		line += "; restart the service that runs `bgd proxy` (systemd)"
	}
	return line + "\n"
}

// nonNil makes a nil list an empty one, which JSON writes as [].
func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func (p *printer) historyLines(b *strings.Builder, h []state.Event, last int) {
	if last > 0 && len(h) > last {
		h = h[len(h)-last:]
	}
	for _, e := range h {
		fmt.Fprintf(b, "   %s  %-8s %-5s -> %-5s %s", e.Timestamp.Format(time.RFC3339), e.Action, e.From, e.To, e.Status)
		if e.Release != "" {
			fmt.Fprintf(b, "  release=%s", e.Release)
		}
		if e.Weight != 0 {
			fmt.Fprintf(b, "  weight=%d%%", e.Weight)
		}
		if e.Reason != "" {
			reason, _, _ := strings.Cut(e.Reason, "\n")
			fmt.Fprintf(b, "  (%s)", reason)
		}
		b.WriteString("\n")
	}
}

func (p *printer) history(service string, h []state.Event) error {
	var b strings.Builder
	if len(h) == 0 {
		b.WriteString("no deployments recorded yet\n")
	}
	p.historyLines(&b, h, 0)
	return p.emit(map[string]any{"ok": true, "service": service, "deployment_history": nonNil(h)}, b.String())
}

// sweeps writes one round of health checks, and err, what the round
// returns: with --json always {"ok", "services": [...]} (one entry per
// service swept, even for one), with "error" and "exit_code" when err is set.
func (p *printer) sweeps(sw []*orchestrator.Sweep, err error) error {
	var b strings.Builder
	done := []*orchestrator.Sweep{}
	for _, s := range sw {
		if s == nil {
			continue
		}
		done = append(done, s)
		if len(sw) > 1 {
			fmt.Fprintf(&b, "%s:\n", s.Service)
		}
		for _, sl := range []orchestrator.SlotStatus{s.Blue, s.Green} {
			active := ""
			if sl.Active {
				active = " (active)"
			}
			fmt.Fprintf(&b, "%s%s%s: port %d healthy %s", p.icon(map[bool]string{true: "💚", false: "💔"}[sl.Healthy]),
				sl.Color, active, sl.Port, p.mark(sl.Healthy))
			if sl.HealthError != "" {
				fmt.Fprintf(&b, " (%s)", sl.HealthError)
			}
			b.WriteString("\n")
		}
		if s.Proxy != nil {
			b.WriteString(p.proxyLine(s.Proxy))
		}
		for _, a := range s.Actions {
			fmt.Fprintf(&b, "%s%s\n", p.icon("🔧"), a)
		}
		if s.FailedOver != "" {
			fmt.Fprintf(&b, "failed over to %s\n", s.FailedOver)
		}
		if s.Message != "" {
			fmt.Fprintf(&b, "%s\n", s.Message)
		}
	}
	v := map[string]any{"ok": err == nil, "services": done}
	if err != nil {
		v["error"], v["exit_code"] = err.Error(), exitCode(err)
	}
	p.errorShown = p.json && err != nil
	return p.emit(v, b.String())
}

func (p *printer) reconciliation(r *orchestrator.Reconciliation) error {
	var b strings.Builder
	if len(r.Fixes) == 0 {
		fmt.Fprintf(&b, "state of %s agrees with reality; active: %s\n", r.Service, r.Active)
	}
	for _, f := range r.Fixes {
		fmt.Fprintf(&b, "fixed: %s\n", f)
	}
	rec := *r
	rec.Fixes = nonNil(rec.Fixes)
	return p.emit(struct {
		OK bool `json:"ok"`
		*orchestrator.Reconciliation
	}{true, &rec}, b.String())
}

// ups writes what up did for each service, and err, what it returns: with
// --json always {"ok", "changed", "actions", "services": [...]}, where
// "changed" is true when any service changed and "actions" lists every
// service's actions (prefixed "<service>: " when there are several), with
// "error" and "exit_code" when err is set.
func (p *printer) ups(results []*orchestrator.UpResult, err error) error {
	var b strings.Builder
	done := []*orchestrator.UpResult{}
	actions := []string{}
	changed := false
	for _, r := range results {
		if r == nil {
			continue
		}
		done = append(done, r)
		changed = changed || r.Changed
		prefix := ""
		if len(results) > 1 {
			prefix = r.Service + ": "
		}
		for _, a := range r.Actions {
			actions = append(actions, prefix+a)
			fmt.Fprintf(&b, "%s%s%s\n", p.icon("🔧"), prefix, a)
		}
		if r.Message != "" {
			fmt.Fprintf(&b, "%s%s\n", p.icon("✅"), r.Message)
		}
	}
	v := map[string]any{"ok": err == nil, "changed": changed, "actions": actions, "services": done}
	if err != nil {
		v["error"], v["exit_code"] = err.Error(), exitCode(err)
	}
	p.errorShown = p.json && err != nil
	return p.emit(v, b.String())
}

// agentLine is one load-balancer host of the etcd backend in `bgd status`.
func agentLine(a fleet.Agent, gen uint64) string {
	line := fmt.Sprintf("%s (%s): routes to %s, generation %d", a.Host, a.Driver, a.Active, a.Generation)
	if a.CanaryWeight > 0 {
		line += fmt.Sprintf(" (canary %s %d%%)", a.Active.Other(), a.CanaryWeight)
	}
	switch {
	case !a.Live:
		line += fmt.Sprintf("; no agent report since %s (stopped, or cut off from etcd)", a.Reported.Local().Format(time.RFC3339))
	case a.Generation < gen:
		line += fmt.Sprintf("; lagging (want %d)", gen)
	}
	if a.Error != "" {
		line += fmt.Sprintf("; could not apply generation %d: %s", a.FailedGeneration, a.Error)
	}
	return line
}
