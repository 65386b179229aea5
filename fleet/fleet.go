// Package fleet is how several load-balancer hosts share one service's
// routing through etcd. The desired routing is the service's state (the
// etcd state backend, state/etcdstore); on each load-balancer host `bgd
// agent` applies it to the local load balancer and reports what it serves
// (Registry.Put). A command that changes the routing writes the state and
// waits until every agent reports the new generation (Balancer.Flip).
//
// Keys, under the state backend's prefix P and the service S:
//
//	P/S/agents/<host>  the agent's latest Report, bound to its lease: it
//	                   disappears when the agent dies or loses etcd
//	P/S/hosts/<host>   the same Report without a lease: every host that
//	                   joined, live or not, until its agent leaves cleanly
//
// A host whose hosts key has no agents key is a dead agent: commands name
// it and fail (exit 1) rather than succeed silently.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Report is what an agent says of the routing it applied.
type Report struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// Driver is the host's load balancer (builtin, nginx, haproxy).
	Driver string `json:"driver"`
	// Generation is the state generation whose routing the host's load
	// balancer serves, confirmed by it; Active and CanaryWeight describe it.
	Generation   uint64       `json:"generation"`
	Active       config.Color `json:"active"`
	CanaryWeight int          `json:"canary_weight,omitempty"`
	// Applied is when the load balancer confirmed Generation.
	Applied time.Time `json:"applied"`
	// FailedGeneration and Error are the last generation the agent could
	// not apply, and why; 0 and "" once a later one is applied.
	FailedGeneration uint64 `json:"failed_generation,omitempty"`
	Error            string `json:"error,omitempty"`
	// Reported is when the agent wrote this report.
	Reported time.Time `json:"reported"`
}

// Agent is one host as the registry knows it: its last report, and
// whether its agent is live (its lease-bound key exists).
type Agent struct {
	Report
	Live bool `json:"live"`
}

// Registry reads and writes the agents' keys of one service.
type Registry struct {
	Client *clientv3.Client
	// Prefix (e.g. "/bgd") and Service name the keys.
	Prefix, Service string
	// Timeout bounds each request to etcd. Default 5s.
	Timeout time.Duration
}

func (r *Registry) dir(kind string) string {
	return fmt.Sprintf("%s/%s/%s/", r.Prefix, r.Service, kind)
}

func (r *Registry) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := r.Timeout
	if t <= 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(ctx, t)
}

// Put writes rep as host rep.Host's report: the live key bound to lease,
// and the hosts key that outlives it.
func (r *Registry) Put(ctx context.Context, lease clientv3.LeaseID, rep Report) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err = r.Client.Txn(ctx).Then(
		clientv3.OpPut(r.dir("agents")+rep.Host, string(data), clientv3.WithLease(lease)),
		clientv3.OpPut(r.dir("hosts")+rep.Host, string(data)),
	).Commit()
	if err != nil {
		return fmt.Errorf("report to etcd: %w", err)
	}
	return nil
}

// Leave removes host's keys: it no longer routes the service, and
// commands stop waiting for it.
func (r *Registry) Leave(ctx context.Context, host string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.Client.Txn(ctx).Then(
		clientv3.OpDelete(r.dir("agents")+host),
		clientv3.OpDelete(r.dir("hosts")+host),
	).Commit()
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// Agents lists every host that joined, sorted by name, with the etcd
// revision they were read at.
func (r *Registry) Agents(ctx context.Context) ([]Agent, int64, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.Client.Txn(ctx).Then(
		clientv3.OpGet(r.dir("hosts"), clientv3.WithPrefix()),
		clientv3.OpGet(r.dir("agents"), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("read the agents from etcd: %w", err)
	}
	byHost := map[string]*Agent{}
	for i, kind := range []string{"hosts", "agents"} {
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			host := strings.TrimPrefix(string(kv.Key), r.dir(kind))
			var rep Report
			if err := json.Unmarshal(kv.Value, &rep); err != nil {
				rep = Report{Error: fmt.Sprintf("unreadable report: %v", err)}
			}
			rep.Host = host
			a := byHost[host]
			if a == nil {
				a = &Agent{}
				byHost[host] = a
			}
			a.Report = rep // the live report, read second, wins
			if kind == "agents" {
				a.Live = true
			}
		}
	}
	agents := make([]Agent, 0, len(byHost))
	for _, a := range byHost {
		agents = append(agents, *a)
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Host < agents[j].Host })
	return agents, resp.Header.Revision, nil
}

// ErrLagging: the routing is written, but some load-balancer hosts have not
// applied it (yet). It is not rolled back: they converge when they can.
var ErrLagging = errors.New("not every load balancer applied the routing")

// HostResult is one host's part in a flip.
type HostResult struct {
	Host string `json:"host"`
	// State: "applied", "failed" (the agent could not apply it), "lagging"
	// (live, not applied within the timeout) or "dead" (no live agent).
	State string `json:"state"`
	// Took is from the flip's write to the host's confirmation (applied).
	Took   time.Duration `json:"took_ns,omitempty"`
	Detail string        `json:"detail,omitempty"`
}

// Line says what the host did: "applied in 41ms", "lagging (serves
// generation 6, want 7)".
func (h HostResult) Line() string {
	line := h.State
	if h.State == "applied" {
		line += " in " + h.Took.Round(time.Millisecond).String()
	}
	if h.Detail != "" {
		line += " (" + h.Detail + ")"
	}
	return line
}

// Convergence is what the hosts did with one generation.
type Convergence struct {
	Generation uint64       `json:"generation"`
	Hosts      []HostResult `json:"hosts"`
}

// Lagging names the hosts that have not applied it, with why.
func (c *Convergence) Lagging() []string {
	var out []string
	for _, h := range c.Hosts {
		if h.State != "applied" {
			out = append(out, fmt.Sprintf("%s (%s)", h.Host, h.Detail))
		}
	}
	return out
}

// LaggingError is a flip that some hosts did not apply.
type LaggingError struct{ *Convergence }

func (e *LaggingError) Error() string {
	if len(e.Hosts) == 0 {
		return fmt.Sprintf("the new routing (generation %d) is in etcd, but no load-balancer host has joined: run `bgd agent` on each one (they apply it when they start; --wait-agents=false does not wait for them)", e.Generation)
	}
	lag := e.Lagging()
	return fmt.Sprintf("the new routing (generation %d) is in etcd, but %d of %d load-balancer hosts have not applied it: %s; they keep their routing and apply it when they can",
		e.Generation, len(lag), len(e.Hosts), strings.Join(lag, ", "))
}

func (e *LaggingError) Unwrap() error { return ErrLagging }

// Wait waits until every live agent reports generation gen (applied or
// failed), or until timeout, and says what each host did. since is when
// the generation was written (what Took counts from). The error is a
// *LaggingError when any host did not apply it, or when no host joined.
func (r *Registry) Wait(ctx context.Context, gen uint64, since time.Time, timeout time.Duration) (*Convergence, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var watch clientv3.WatchChan
	for {
		over := wctx.Err() != nil
		rctx := wctx
		if over { // one last read, to say where each host stands
			rctx = ctx
		}
		agents, rev, err := r.Agents(rctx)
		if err != nil {
			return nil, err
		}
		conv, done := judge(agents, gen, since, over)
		if done {
			if len(conv.Lagging()) > 0 || len(conv.Hosts) == 0 {
				return conv, &LaggingError{conv}
			}
			return conv, nil
		}
		if watch == nil {
			watch = r.Client.Watch(clientv3.WithRequireLeader(wctx), fmt.Sprintf("%s/%s/", r.Prefix, r.Service),
				clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		}
		select {
		case _, ok := <-watch:
			if !ok {
				watch = nil // ended (no leader): read again and watch anew
			}
		case <-wctx.Done():
		}
	}
}

// judge says what each agent did with gen; done when no live agent is
// still on its way (or when the wait is over).
func judge(agents []Agent, gen uint64, since time.Time, over bool) (*Convergence, bool) {
	conv := &Convergence{Generation: gen}
	done := true
	for _, a := range agents {
		h := HostResult{Host: a.Host}
		switch {
		case a.Generation >= gen:
			h.State, h.Took = "applied", max(a.Applied.Sub(since), 0)
			if a.Generation > gen {
				h.Detail = fmt.Sprintf("already on generation %d", a.Generation)
			}
		case a.FailedGeneration >= gen && a.Live:
			h.State, h.Detail = "failed", fmt.Sprintf("could not apply it: %s", a.Error)
		case !a.Live:
			h.State, h.Detail = "dead", fmt.Sprintf("no agent report since %s: stopped, or cut off from etcd; serves generation %d", a.Reported.Local().Format(time.TimeOnly), a.Generation)
		default:
			h.State, h.Detail = "lagging", fmt.Sprintf("serves generation %d, want %d", a.Generation, gen)
			if !over {
				done = false
			}
		}
		conv.Hosts = append(conv.Hosts, h)
	}
	return conv, done
}
