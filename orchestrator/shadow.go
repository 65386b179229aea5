package orchestrator

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/state"
)

// Shadow traffic: while the state says so (state.State.Shadow), the load
// balancer sends a copy of each request to the standby slot and discards
// its answer. Every route carries the setting (route), so any flip keeps
// it: after a switch the copies go to the new standby. Shadow on needs a
// running, healthy standby and a driver that can copy (Capabilities.Shadow);
// bgd shadow off stops the copies. Both are recorded in the history
// (action "shadow", reason "on" or "off").

// ShadowStatus is the shadow traffic in force, for status.
type ShadowStatus struct {
	// Standby is the colour that gets the copies.
	Standby config.Color `json:"standby"`
	// Counts is what became of the copies (builtin proxy only: same,
	// differs, error, dropped, too_large), since the proxy started; absent
	// with a driver that does not count them.
	Counts map[string]uint64 `json:"counts,omitempty"`
	// MeanMs and MaxMs are the standby's answer times (builtin proxy).
	MeanMs float64 `json:"mean_ms,omitempty"`
	MaxMs  float64 `json:"max_ms,omitempty"`
}

// Summary is one line: where copies go and, when counted, their results.
func (s *ShadowStatus) Summary() string {
	out := fmt.Sprintf("a copy of each request goes to %s, its answers discarded", s.Standby)
	if len(s.Counts) == 0 {
		return out
	}
	keys := make([]string, 0, len(s.Counts))
	for k := range s.Counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return shadowOrder(keys[i]) < shadowOrder(keys[j]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.Counts[k]))
	}
	return fmt.Sprintf("%s; copies: %s; standby answer time mean %.1fms, max %.1fms",
		out, strings.Join(parts, ", "), s.MeanMs, s.MaxMs)
}

func shadowOrder(k string) int {
	for i, r := range []string{builtin.ShadowSame, builtin.ShadowDiffers, builtin.ShadowError, builtin.ShadowDropped, builtin.ShadowTooLarge} {
		if r == k {
			return i
		}
	}
	return 99
}

// shadowStatus is st's shadow traffic, with the counts of ri (the builtin
// proxy's answer; nil otherwise); nil when shadow is off.
func shadowStatus(st *state.State, ri *builtin.RouteInfo) *ShadowStatus {
	if !st.Shadow {
		return nil
	}
	s := &ShadowStatus{Standby: st.ActiveVersion.Other()}
	if ri != nil && ri.Shadow != nil {
		s.Counts, s.MeanMs, s.MaxMs = ri.Shadow.Counts, ri.Shadow.MeanMs, ri.Shadow.MaxMs
	}
	return s
}

// Shadow turns shadow traffic on or off. On needs the standby running and
// healthy and a driver that can copy requests; the load balancer confirms
// the new routing as it confirms a flip.
func (o *Orchestrator) Shadow(ctx context.Context, on bool) (*Result, error) {
	p, err := o.begin(ctx, "shadow", "", "")
	if err != nil {
		return nil, err
	}
	res, err := p.shadow(ctx, on)
	return res, p.end(err)
}

func (p *op) shadow(ctx context.Context, on bool) (*Result, error) {
	st := p.st
	active, standby := st.ActiveVersion, st.ActiveVersion.Other()
	st.InProgress.From, st.InProgress.To = active, standby
	word := map[bool]string{true: "on", false: "off"}[on]
	if st.Shadow == on {
		msg := fmt.Sprintf("shadow traffic is already off: %s gets no copies", standby)
		if on {
			msg = fmt.Sprintf("shadow traffic is already on: %s gets a copy of each request", standby)
		}
		return p.result("shadow", standby, false, msg), nil
	}
	if on {
		// The driver first: a load balancer that cannot copy is refused
		// whatever the standby's health.
		r := p.o.route(st, active)
		r.Shadow = true
		if err := lb.Supports(p.o.lb, r); err != nil {
			return nil, fmt.Errorf("shadow on: %w; nothing was changed: shadow traffic needs lb.driver builtin, or nginx in lb.nginx.mode reload", err)
		}
		if err := p.checkTarget(ctx, standby, "copy traffic to", false); err != nil {
			return nil, err
		}
	}
	var stats *builtin.RouteInfo
	if b, ok := p.o.lb.(*builtin.Balancer); ok && !on {
		stats, _ = b.Route(ctx)
	}
	ev := state.Event{Action: "shadow", From: active, To: standby, Release: st.Slot(standby).Release, Reason: word}
	st.Shadow = on
	if err := p.flipTo(ctx, active, st.Canary); err != nil {
		st.Shadow = !on
		if fs, ok := p.o.lb.(followsState); ok && fs.FollowsState() {
			// The proxy may have read the state with the new setting:
			// a new generation makes it take the old one back.
			st.Generation++
		}
		ev.Status, ev.Reason = state.StatusFailed, fmt.Sprintf("shadow %s: %v", word, err)
		st.Record(ev)
		return nil, err
	}
	ev.Status = state.StatusSuccess
	st.Record(ev)
	p.o.log.Info("shadow", "on", on, "standby", standby)
	p.phase("done", active, "")
	if on {
		return p.result("shadow", standby, true, fmt.Sprintf("shadow traffic on: a copy of each request to %s goes to %s (release %s); its answers are discarded",
			active, standby, st.Slot(standby).Release)), nil
	}
	msg := fmt.Sprintf("shadow traffic off: %s gets no more copies", standby)
	if stats != nil && stats.Shadow != nil {
		msg += "; " + strings.TrimPrefix((&ShadowStatus{Standby: standby, Counts: stats.Shadow.Counts, MeanMs: stats.Shadow.MeanMs, MaxMs: stats.Shadow.MaxMs}).Summary(),
			fmt.Sprintf("a copy of each request goes to %s, its answers discarded; ", standby))
	}
	return p.result("shadow", standby, true, msg), nil
}
