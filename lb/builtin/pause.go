package builtin

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// gate is a pause in force (the state file's "paused"): the proxy holds
// every new request of the service until released is closed, by a resume
// (the state file no longer pauses), by the pause's own deadline (until,
// a timer of the proxy's) or by the proxy's shutdown. A request waits on
// the channel or on its own context, whichever ends first; once released it
// is routed by the routing in force then, so a flip made while paused
// takes the held requests.
type gate struct {
	since, until time.Time
	released     chan struct{}
	timer        *time.Timer
}

// release lets every held request go; only ever called under Proxy.mu.
func (g *gate) release() {
	g.timer.Stop()
	select {
	case <-g.released:
	default:
		close(g.released)
	}
}

// applyPause follows the state's pause: it opens a gate when the state
// pauses and none is open, moves the open one to a new deadline when
// another pause replaced it, and releases the open one when the state no
// longer pauses or its deadline has passed.
// Called under p.mu by reload.
func (p *Proxy) applyPause(st *state.State) {
	cur := p.gate.Load()
	ps := st.Paused
	if ps == nil || !time.Now().Before(ps.Until) {
		if cur != nil {
			p.gate.Store(nil)
			cur.release()
			p.Logger.Info("proxy resumes", "service", p.Service, "held_since", cur.since)
		}
		return
	}
	if cur != nil && cur.since.Equal(ps.Since) && cur.until.Equal(ps.Until) {
		return
	}
	g := &gate{since: ps.Since, until: ps.Until, released: make(chan struct{})}
	if cur != nil {
		// Another pause replaces this one (a new bgd pause): the requests
		// it holds stay held, until the new pause ends.
		cur.timer.Stop()
		g.released = cur.released
	}
	g.timer = time.AfterFunc(time.Until(ps.Until), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.gate.Load() != g {
			return // resumed, or replaced by another pause meanwhile
		}
		p.gate.Store(nil)
		g.release()
		p.Logger.Warn("proxy pause timed out: held requests released", "service", p.Service, "until", g.until)
	})
	p.gate.Store(g)
	p.Logger.Info("proxy pauses: new requests are held", "service", p.Service, "until", ps.Until)
}

// hold makes r wait while a pause is in force. It reports false when the
// client went away first (answered 499, nothing forwarded). Without a
// pause it is one atomic load.
func (p *Proxy) hold(w http.ResponseWriter, r *http.Request) bool {
	g := p.gate.Load()
	if g == nil {
		return true
	}
	p.held.Add(1)
	defer p.held.Add(-1)
	select {
	case <-g.released:
		return true
	case <-r.Context().Done():
		w.WriteHeader(statusClientClosed)
		return false
	}
}

// releaseAll lets every held request go when the proxy stops serving.
func (p *Proxy) releaseAll(ctx context.Context) {
	<-ctx.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.gate.Swap(nil); g != nil {
		g.release()
	}
}

// holdHint says what to check when the proxy serves r's routing but not its
// pause or maintenance: the state file, or a proxy older than both.
func holdHint(ri *RouteInfo, r lb.Route) string {
	if ri.Generation < r.Generation || ri.Active != r.Active.Color || servesHold(ri, r) {
		return ""
	}
	return fmt.Sprintf(": the state file %s does not say %s, or the proxy (pid %d) is older than pause and maintenance (restart it)",
		cmp.Or(ri.StateFile, "followed"), describeHold(r), ri.PID)
}

func describeHold(r lb.Route) string {
	switch {
	case r.Pause > 0:
		return "paused"
	case r.Maintenance:
		return "maintenance"
	}
	return "neither paused nor maintenance"
}
