package fleet

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// Balancer is the load balancers of every host, as a command that changes
// the routing sees them: the orchestrator writes the new state to etcd
// (FollowsState) and Flip waits for the agents to apply it.
type Balancer struct {
	Registry *Registry
	// Timeout bounds the wait for the agents (state.agents_timeout).
	Timeout time.Duration
	// NoWait: Flip returns once the state is written, without waiting for
	// the agents (--wait-agents=false).
	NoWait bool
	// Notify is told one line per host after each flip. Default nil.
	Notify func(HostResult)

	last *Convergence
}

var _ lb.Capable = (*Balancer)(nil)

// Capabilities are those an agent's driver may have: weighted splits,
// maintenance, shadow traffic and slots on other hosts. An agent whose
// driver lacks one reports the flip failed, and the command names it.
// A pause is refused: it holds requests on one host only.
func (b *Balancer) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "agents", Weights: true, Maintenance: true, Shadow: true, RemoteHosts: true}
}

// FollowsState: the agents read the routing from the state in etcd, which
// the orchestrator writes before Flip.
func (b *Balancer) FollowsState() bool { return true }

// Flip waits until every live agent serves r.Generation. A host that did
// not apply it makes the error a *LaggingError (ErrLagging): the state
// stands and the host converges when it can.
func (b *Balancer) Flip(ctx context.Context, r lb.Route) error {
	if err := b.Capabilities().Check(r); err != nil {
		return err
	}
	b.last = nil
	if b.NoWait {
		return nil
	}
	timeout := b.Timeout
	lb.SetDefault(&timeout, 10*time.Second)
	conv, err := b.Registry.Wait(ctx, r.Generation, time.Now(), timeout)
	b.last = conv
	if conv != nil && b.Notify != nil {
		for _, h := range conv.Hosts {
			b.Notify(h)
		}
	}
	return err
}

// Last is what the hosts did with the last Flip's generation; nil before
// one, or when it did not wait.
func (b *Balancer) Last() *Convergence { return b.last }

// Active is the colour the live agents report, when they agree.
func (b *Balancer) Active(ctx context.Context) (config.Color, error) {
	agents, _, err := b.Registry.Agents(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %v", lb.ErrUnreachable, err)
	}
	seen := map[config.Color][]string{}
	for _, a := range agents {
		if a.Live && a.Active.Valid() {
			seen[a.Active] = append(seen[a.Active], a.Host)
		}
	}
	switch len(seen) {
	case 0:
		return "", fmt.Errorf("%w: no live agent reports a routing", lb.ErrUnreachable)
	case 1:
		for c := range seen {
			return c, nil
		}
	}
	return "", fmt.Errorf("the agents disagree: blue on %s, green on %s", strings.Join(seen[config.Blue], ", "), strings.Join(seen[config.Green], ", "))
}

// Render describes what the agents would apply: each host renders its own
// load balancer's configuration (`bgd render` there).
func (b *Balancer) Render(r lb.Route) ([]byte, error) {
	if err := b.Capabilities().Check(r); err != nil {
		return nil, err
	}
	s := fmt.Sprintf("# generation %d: every agent routes %s to %s (%s)", r.Generation, r.Service, r.Active.Color, r.Active.Addr())
	if r.Splits() {
		s += fmt.Sprintf(", %d%% to %s (%s)", r.Standby.Weight, r.Standby.Color, r.Standby.Addr())
	}
	return []byte(s + "\n# run `bgd render` on a load-balancer host for its own configuration\n"), nil
}
