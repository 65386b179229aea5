// Package etcdstore keeps a service's state in etcd, so that several
// load-balancer hosts share one state, and takes bgd's operation lock
// there: the etcd backend of state (state.backend: etcd).
//
// The keys of service S under prefix P (default "/bgd"):
//
//	P/S/state        the state, the same JSON as the state file (encoded as
//	                 state.Store.Save does, decoded with state.Decode);
//	                 written only under the lock, with a compare-and-swap
//	                 on its mod revision
//	P/S/lock/        the prefix of the operation lock, an etcd
//	                 concurrency.Mutex on a session whose lease has the
//	                 TTL lease_ttl: if the holder dies, its lease expires
//	                 and the lock is free again
//	P/S/lock-holder  {"host","pid","command","since"} of the holder, put
//	                 with the same lease once the lock is held and deleted
//	                 on unlock; the "locked" error names it
//	P/S/agents/<h>   the report of the agent on host h, bound to the
//	                 agent's lease (written by the agent, not here)
//	P/S/hosts/<h>    a lasting record that an agent on host h joined
//	                 (written by the agent, not here)
//
// Every etcd request is bounded (Store.Timeout), so a command fails with an
// error matching ErrUnreachable, naming the endpoints, instead of hanging
// while etcd is down.
package etcdstore
