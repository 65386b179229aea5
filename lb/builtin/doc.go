// Package builtin is bgd's own load balancer: `bgd proxy`, a reverse proxy
// (net/http/httputil) that sends every request of one service to its active
// slot.
//
// The proxy follows the service's state file: it watches the file's
// directory with fsnotify (the file is replaced by rename, so watching the
// file itself would lose it) and swaps its upstream pointer atomically when
// active_version changes. A request keeps the upstream it started with, so
// in-flight requests finish on the old slot while new ones go to the new.
//
// Loopback clients also get /metrics (Prometheus text), /monitoring (an HTML
// status page) and /_bgd/route (JSON naming the active slot and the state
// generation it serves). Balancer is the CLI's side: a flip is written to
// the state file by the orchestrator and confirmed by polling /_bgd/route
// until the proxy serves the new generation.
package builtin
