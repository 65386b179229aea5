// Package freeport hands out loopback TCP ports for bgd's tests and its
// benchmark: ports that were free a moment ago, never the same one twice in
// one process (parallel tests pick their ports before they bind them).
//
// Callers pass a range below Linux's ephemeral range (32768-60999), so that
// no outgoing connection of the load can take a port while its slot is down
// (a client's TIME_WAIT would then make the slot's bind fail), and away from
// the seed's 5004-5006. Test packages that run at the same time use disjoint
// ranges:
//
//	integration            20000-27999
//	cmd/bgd (CLI scripts)  28000-29999
//	orchestrator           30000-31999
//	internal/testsupport   32000-32767
//	etcd fixtures          17000-19999 (testsupport.StartEtcd, any package)
//	integration/bench      20000-31999 (never beside the tests)
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Pick returns a port in [lo, hi) that 127.0.0.1 could bind a moment ago
// and that Pick has not returned before in this process.
func Pick(lo, hi int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		if given[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port found in %d-%d", lo, hi-1)
}
