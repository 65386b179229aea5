package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"time"

	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// agentResync is how often an agent reads the state even without a watch
// event: it retries a routing it failed to apply, and notices etcd again
// after losing it.
const agentResync = 2 * time.Second

// agentName is what an agent's host name may be: it ends the etcd key of
// its report and shows in messages.
var agentName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// agent is `bgd agent` on one load-balancer host: it applies the service's
// state in etcd to the local load balancer and reports what it serves.
type agent struct {
	o    *Orchestrator
	host string
	// rep is the last report; applied is the routing it describes (nil
	// before the first apply).
	rep     fleet.Report
	applied *lb.Route
	lease   clientv3.LeaseID
	alive   <-chan *clientv3.LeaseKeepAliveResponse
}

// RunAgent is `bgd agent`: until ctx ends, it applies the routing of the
// service's state in etcd to the local load balancer (the config's
// lb.driver, with the driver's own confirmation) whenever it changes, and
// reports under host what the load balancer serves. Without etcd it keeps
// the routing it last applied and never changes it on its own; when etcd
// answers again it converges. When ctx ends it leaves: commands stop
// waiting for host.
func (o *Orchestrator) RunAgent(ctx context.Context, host string) error {
	if o.etcd == nil {
		return usagef("bgd agent needs the etcd state backend (state.backend: etcd): with a state file, bgd drives this host's load balancer itself")
	}
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent: host name: %w (give one with --host)", err)
		}
		host = h
	}
	if !agentName.MatchString(host) {
		return usagef("agent host name %q: use letters, digits, '.', '_' or '-' (at most 253, starting with a letter or digit); it names the host's key in etcd and the host in messages", host)
	}
	if err := o.waitHostFree(ctx, host); err != nil {
		return err
	}
	a := &agent{o: o, host: host, rep: fleet.Report{Host: host, PID: os.Getpid(), Driver: o.svc.LB.Driver}}
	o.log.Info("agent: started", "host", host, "driver", a.rep.Driver, "key", o.etcd.store.Key("state"))
	err := a.run(ctx)
	leave, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if lerr := o.etcd.agents.Leave(leave, host); lerr != nil {
		o.log.Warn("agent: could not leave: commands will name this host as not running", "err", lerr)
	}
	if a.lease != 0 {
		o.etcd.client.Revoke(leave, a.lease)
	}
	return err
}

// waitHostFree waits until no live agent reports as host: one killed a
// moment ago (a restart) is gone once its lease ends. One still reporting
// after that is another agent with the same name, and two would overwrite
// each other's reports: refused.
func (o *Orchestrator) waitHostFree(ctx context.Context, host string) error {
	deadline := time.Now().Add(o.cfg.State.LeaseTTL.D() + 2*time.Second)
	for {
		agents, err := o.Agents(ctx)
		if err != nil {
			return nil // etcd away: the agent starts, keeps the routing, and reports once it can
		}
		i := slices.IndexFunc(agents, func(a fleet.Agent) bool { return a.Host == host && a.Live })
		if i < 0 {
			return nil
		}
		if time.Now().After(deadline) {
			a := agents[i]
			return usagef("another agent reports as host %q (pid %d, last report %s): give this one another name with --host",
				host, a.PID, a.Reported.Local().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a *agent) run(ctx context.Context) error {
	o := a.o
	key := o.etcd.store.Key("state")
	var events clientv3.WatchChan
	stopWatch := func() {}
	watch := func() {
		stopWatch()
		var wctx context.Context
		wctx, stopWatch = context.WithCancel(ctx)
		events = o.etcd.client.Watch(clientv3.WithRequireLeader(wctx), key)
	}
	watch()
	defer func() { stopWatch() }()
	tick := time.NewTicker(agentResync)
	defer tick.Stop()
	for {
		if err := a.sync(ctx); err != nil {
			o.log.Warn("agent: keeping the routing last applied", "host", a.host, "err", err)
		}
	wait: // until the state changes, the resync is due, or the lease is lost
		for {
			select {
			case <-ctx.Done():
				return nil
			case _, ok := <-events:
				if !ok { // lost (no leader, compaction): read afresh and watch again
					watch()
				}
				break wait
			case <-tick.C:
				break wait
			case _, ok := <-a.alive:
				if !ok { // expired: granted again by the next sync
					a.lease, a.alive = 0, nil
					break wait
				}
			}
		}
	}
}

// sync reads the state, applies its routing if the load balancer does not
// serve it yet, and reports.
func (a *agent) sync(ctx context.Context) error {
	o := a.o
	if err := a.ensureLease(ctx); err != nil {
		return err
	}
	st, exists, err := a.load(ctx)
	if err != nil {
		return err
	}
	changed := false
	if exists {
		changed, err = a.apply(ctx, st)
		if err != nil {
			o.log.Error("agent: could not apply the routing", "generation", st.Generation, "err", err)
		}
	}
	if changed || err != nil || a.rep.Reported.IsZero() || time.Since(a.rep.Reported) > 10*agentResync {
		a.rep.Reported = time.Now().UTC()
		return o.etcd.agents.Put(ctx, a.lease, a.rep)
	}
	return nil
}

// load reads the state; exists is false before any command wrote one.
func (a *agent) load(ctx context.Context) (*state.State, bool, error) {
	o := a.o
	rctx, cancel := context.WithTimeout(ctx, o.cfg.State.DialTimeout.D())
	defer cancel()
	resp, err := o.etcd.client.Get(rctx, o.etcd.store.Key("state"))
	if err != nil {
		return nil, false, fmt.Errorf("read the state from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	st, err := state.Decode(resp.Kvs[0].Value)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s in etcd: %v", state.ErrCorrupt, o.etcd.store.Key("state"), err)
	}
	return st, true, nil
}

// ensureLease grants the lease of the agent's report when it has none (at
// start, or once it expired while etcd was away) and keeps it alive.
func (a *agent) ensureLease(ctx context.Context) error {
	if a.lease != 0 {
		return nil
	}
	o := a.o
	rctx, cancel := context.WithTimeout(ctx, o.cfg.State.DialTimeout.D())
	defer cancel()
	g, err := o.etcd.client.Grant(rctx, int64(o.cfg.State.LeaseTTL.D()/time.Second))
	if err != nil {
		return fmt.Errorf("etcd lease: %w", err)
	}
	alive, err := o.etcd.client.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("etcd lease: %w", err)
	}
	a.lease, a.alive = g.ID, alive
	a.rep.Reported = time.Time{} // report at once under the new lease
	return nil
}

// apply routes the local load balancer as st says, unless it already
// serves that routing; it reports whether it changed anything.
func (a *agent) apply(ctx context.Context, st *state.State) (bool, error) {
	o := a.o
	r := o.route(st, st.ActiveVersion)
	r.Generation = st.Generation
	if a.applied != nil && sameRouting(*a.applied, r) {
		return false, nil
	}
	err := a.flipLocal(ctx, st, r)
	if err != nil {
		if a.rep.FailedGeneration != st.Generation || a.rep.Error != err.Error() {
			a.rep.FailedGeneration, a.rep.Error = st.Generation, err.Error()
			return true, err
		}
		return false, err
	}
	a.applied = &r
	a.rep.Generation, a.rep.Active, a.rep.Applied = st.Generation, st.ActiveVersion, time.Now().UTC()
	a.rep.CanaryWeight = 0
	if st.Canary != nil {
		a.rep.CanaryWeight = st.Canary.Weight
	}
	a.rep.FailedGeneration, a.rep.Error = 0, ""
	o.log.Info("agent: applied", "generation", st.Generation, "active", st.ActiveVersion, "canary", a.rep.CanaryWeight)
	return true, nil
}

// sameRouting reports whether a and b route alike (generation included).
func sameRouting(a, b lb.Route) bool {
	return a.Generation == b.Generation && a.Active == b.Active && a.Standby == b.Standby &&
		a.Maintenance == b.Maintenance && a.Shadow == b.Shadow && a.Sticky == b.Sticky && a.Pause == b.Pause
}

// flipLocal makes the local load balancer serve r. A driver that follows a
// state file (the builtin proxy) gets st in this host's state file first,
// with this host's own proxy recorded in it.
func (a *agent) flipLocal(ctx context.Context, st *state.State, r lb.Route) error {
	o := a.o
	if fs, ok := o.lb.(followsState); ok && fs.FollowsState() {
		local := &state.Store{Path: o.cfg.StatePath(o.svc.Name), BluePort: o.svc.Blue.Port, GreenPort: o.svc.Green.Port}
		mine, err := local.Load()
		if err != nil && !errors.Is(err, state.ErrCorrupt) {
			return err
		}
		// The slots' processes are on the app host, not here: their pids
		// would name unrelated processes of this host.
		copyOf := st.Clone()
		copyOf.InProgress = nil
		copyOf.BluePID, copyOf.BluePIDStart, copyOf.GreenPID, copyOf.GreenPIDStart = 0, 0, 0, 0
		if mine != nil {
			copyOf.ProxyPID, copyOf.ProxyPIDStart = mine.ProxyPID, mine.ProxyPIDStart
		}
		if ps, ok := o.lb.(proxyStarter); ok {
			pid, err := ps.Ensure(ctx)
			if err != nil {
				return err
			}
			if pid > 0 {
				o.recordProxy(copyOf, pid)
			}
		}
		if err := local.Save(copyOf); err != nil {
			return err
		}
	}
	return o.lb.Flip(ctx, r)
}
