package demoapp

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
)

// CountsPath answers the app's request counts as JSON (Counts).
const CountsPath = "/_demo/requests"

// Counts is the answer of CountsPath: the requests to every path but
// /health and CountsPath since the app started.
type Counts struct {
	Requests uint64 `json:"requests"`
	// Shadow are the requests among them that carry X-Bgd-Shadow: 1, the
	// copies of a load balancer's shadow traffic.
	Shadow uint64 `json:"shadow"`
	// BodyBytes is the sum of their body sizes.
	BodyBytes uint64 `json:"body_bytes"`
}

type requestCounts struct{ requests, shadow, bytes atomic.Uint64 }

// count counts r, whose body was n bytes long.
func (c *requestCounts) count(r *http.Request, n int64) {
	c.requests.Add(1)
	if r.Header.Get("X-Bgd-Shadow") == "1" {
		c.shadow.Add(1)
	}
	c.bytes.Add(uint64(max(n, 0)))
}

func (c *requestCounts) serve(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(Counts{Requests: c.requests.Load(), Shadow: c.shadow.Load(), BodyBytes: c.bytes.Load()})
}
