package haproxy

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

var _ lb.Observer = (*Balancer)(nil)

// Observe reads `show stat` for u's colour: its server in the colour's
// backend and its server in the split backend (a canary), summed. A request
// is an answer the server gave (hrsp_1xx ... hrsp_5xx, hrsp_other) or one
// it failed to give (econ: no connection, eresp: a broken answer, which
// HAProxy turns into its own 502/503); errors are hrsp_5xx + econ + eresp.
// HAProxy keeps no latency histogram: Mean is the server's rtime (the mean
// answer time of its last 1 024 requests), the larger of the two servers'.
// The counts start with HAProxy (a reload starts them again).
func (b *Balancer) Observe(ctx context.Context, u lb.Upstream) (lb.Observation, error) {
	backend, ok := b.backends[u.Color]
	if !ok {
		return lb.Observation{}, fmt.Errorf("haproxy: service %s has no backend for colour %q", b.service, u.Color)
	}
	split := cmp.Or(b.cfg.SplitBackend, b.service+"_split")
	rows, err := b.client.ShowStat(ctx, "")
	if err != nil {
		return lb.Observation{}, b.wrap(err, "read the slot's counters")
	}
	return observation(rows, backend, split, u.Color.String())
}

// observation sums the counters of server in backend and in split.
func observation(rows []admin.Stat, backend, split, server string) (lb.Observation, error) {
	var o lb.Observation
	seen := false
	for _, s := range rows {
		if !s.IsServer() || (s.Proxy != backend && !(s.Proxy == split && s.Name == server)) {
			continue
		}
		seen = true
		n := func(f string) (uint64, error) {
			v := s.Fields[f]
			if v == "" {
				return 0, nil
			}
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("haproxy: show stat: %s/%s has %s %q, not a count", s.Proxy, s.Name, f, v)
			}
			return x, nil
		}
		var c [9]uint64
		for i, f := range []string{"hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "econ", "eresp", "rtime"} {
			v, err := n(f)
			if err != nil {
				return o, err
			}
			c[i] = v
		}
		o.Requests += c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7]
		o.Errors += c[4] + c[6] + c[7]
		o.Mean = max(o.Mean, time.Duration(c[8])*time.Millisecond)
	}
	if !seen {
		return o, fmt.Errorf("%w: no server of backend %s in show stat", ErrNoBackend, backend)
	}
	return o, nil
}
