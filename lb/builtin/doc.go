// Package builtin is bgd's own load balancer: `bgd proxy`, a reverse proxy
// that sends every request of one service to its active slot, or splits new
// requests between the active slot and a canary.
//
// Two paths carry the requests (front.go). Plain GET and HEAD requests,
// the bulk of a web service's traffic, take bgd's own HTTP/1 path
// (fastpath.go): the head is checked and forwarded as bytes and the answer
// relayed as it comes, in the client connection's goroutine, on kept
// connections to the slot. Everything else (request bodies, upgrades,
// 100-continue, HTTP/1.0, admin paths, previews, unusual heads) is handed, with its connection, to net/http and
// net/http/httputil's ReverseProxy (proxy.go). Both give the same answers,
// headers, metrics and counts; conformance_test.go holds them to it
// through a real listener.
//
// The proxy follows the service's state file: it watches the file's
// directory with fsnotify (the file is replaced by rename, so watching the
// file itself would lose it) and swaps its upstream pointer atomically when
// the routing changes (active_version, a slot's port or pid, the canary, the
// generation). A request keeps the upstream it started with, so in-flight
// requests finish on the old slot while new ones go to the new.
//
// Weighted splits (a canary). While the state file holds a canary (its
// "canary" object: the standby colour and its weight, 1-99), each new
// request goes to the canary with probability weight/100 and to the active
// slot otherwise: an independent, unbiased draw per request (math/rand/v2,
// no lock), so the shares converge on the weights; over 10 000 requests
// they are within 2 points. The answer's X-Bgd-Slot header, the in-flight
// counters and the metrics name the colour that really served;
// bgd_proxy_slot_weight shows each colour's percentage. A weight change
// keeps the proxy's connections to both slots; ending the split (a promote
// flips to the canary, an abort drops it) closes the idle connections to
// the slot that no longer gets traffic. A canary whose slot is down costs
// the requests drawn for it, and only those: the proxy answers them 502
// Bad Gateway (counted for the canary's colour); the active slot serves
// the rest.
//
// Sticky splits (canary.sticky). A client whose cookie
// lb.StickyCookie(service) ("bgd_" and the service name) names blue or green
// is sent to that colour, without a draw; any other client is drawn, and
// the answer of the slot that served it carries
// "Set-Cookie: <name>=<colour>; Path=/; HttpOnly; SameSite=Lax" beside the
// slot's own cookies. The proxy's own error answers (502 when the slot does
// not answer, 499 when the client left) carry no cookie, so a client is
// never pinned to a side that failed it: its next request draws again.
// Without a split, or in a split that is not sticky, the cookie is ignored
// and none is set.
//
// Shadow traffic (state "shadow": true, bgd shadow on). Each request the
// active slot served is copied to the standby slot once the client has its
// answer, through a bounded queue and a few workers (shadow.go): a copy is
// dropped, never the client's request, when the queue is full. The
// standby's answers are discarded, compared by status class with the
// client's (bgd_proxy_shadow_requests_total{result}, and the counts in
// /_bgd/route's "shadow").
//
// Pause and maintenance. While the state file's "paused" is in force the
// proxy holds every new request (pause.go) until the state no longer
// pauses or "paused.until" passes (its own timer), then routes it by the
// routing in force then; while "maintenance" is true it answers every
// request 503 with Retry-After and the page "maintenance_page" names
// (maintenance.go). When neither is on, each costs the request path one
// atomic load.
//
// Admin endpoints (admin.go): /metrics (Prometheus text), /monitoring (the
// live dashboard of internal/dashboard, sampled in the proxy) and
// /_bgd/route (JSON naming the active slot, the state generation it serves
// and, while it splits, both colours' weights and whether the split is
// sticky), and every /_bgd/ path, are served on
// Proxy.AdminListen: a unix socket (mode 0600), a TCP address (loopback
// clients only), or Listen itself, where they shadow the app's paths
// (loopback clients only). Elsewhere every path on Listen reaches the app.
// Balancer is the CLI's side, which asks Balancer.Admin: a flip is written
// to the state file by the orchestrator and confirmed by polling
// /_bgd/route until the proxy serves the new generation, the new active
// colour and the route's split (or no split, after a promote or an abort).
package builtin
