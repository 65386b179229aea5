// Package orchestrator holds bgd's workflows: Start, Stop, Deploy, Switch,
// Rollback, Status, HealthSweep and Reconcile, the same for every load
// balancer driver. It is the library API behind the CLI.
//
// Every mutating workflow takes the service's state lock for its whole run
// and marks the state "in progress" first, so a bgd killed mid-operation is
// visible to the next command (recorded in the history as failed, with the
// reason "interrupted"). A deploy follows the steps the README lists under
// "A deploy, step by step": lock, pick the idle colour, refuse a port held
// by a foreign process, start the slot, poll its health (failing at once if
// it exits), flip the load balancer and confirm the flip from the load
// balancer itself, record, and keep the old slot running for an instant
// rollback.
//
// Beyond the all-or-nothing flip, the same workflows carry progressive
// delivery, each a routing recorded in the state and handed to the driver
// in lb.Route: a canary (Canary, Promote, Abort, deploy steps: a weighted
// split), shadow traffic (Shadow), a pause and maintenance (Pause, Resume,
// Maintenance), smoke checks through the preview route before a flip, and
// the analysis of a new slot through lb.Observer after it (deploy --watch,
// and health sweeps), which rolls a failing release back by itself.
//
// With the builtin driver the proxy is part of the service: Status reports
// it (Status.Proxy), and HealthSweep treats a proxy that does not answer as
// an outage, restarting it when bgd started it (proxy_pid recorded) and
// only reporting it when systemd runs `bgd proxy`.
//
// The workflows reach the host only through a small seam (osEnv: start,
// recognise and stop processes, who listens on a port, health probes; and
// stateStore: the state file and its lock), which in-package tests replace
// to decide the subtle rules without processes.
package orchestrator
