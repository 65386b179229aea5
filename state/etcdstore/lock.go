package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/bgd-dev/bgd/state"
)

// holderWait is how long a busy Lock waits for the holder's record: the
// holder puts it just after it took the mutex.
const holderWait = time.Second

// Holder is the record of the lock's holder (the key Prefix/Service/lock-holder).
type Holder struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

// Lock is the held operation lock.
type Lock struct {
	store   *Store
	session *concurrency.Session
	mutex   *concurrency.Mutex
	lost    chan struct{}
	// unlocked is closed by Unlock, before the session ends.
	unlocked chan struct{}
	once     sync.Once
}

// leaseSeconds is LeaseTTL in etcd's whole seconds, at least 1.
func (s *Store) leaseSeconds() int64 {
	ttl := s.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return max(1, int64(math.Ceil(ttl.Seconds())))
}

// Lock takes the service's operation lock, waiting up to timeout (0: one
// try). When another holds it, the error is a *state.LockedError naming
// the holder's host, pid and command (errors.Is(err, state.ErrLocked)).
// The lock lives on a lease that this process keeps alive: if it dies, the
// lock is free LeaseTTL later. Every request is bounded: with etcd down,
// Lock fails within Timeout with an error matching ErrUnreachable.
func (s *Store) Lock(ctx context.Context, command string, timeout time.Duration) (*Lock, error) {
	what := "lock etcd key " + s.Key("lock")
	rctx, cancel := s.request(ctx)
	grant, err := s.Client.Grant(rctx, s.leaseSeconds())
	cancel()
	if err != nil {
		return nil, s.fail(what, err)
	}
	// Mutex.Lock, when its wait fails, deletes its waiting key with the
	// client's own context, which never ends: it would hang while etcd is
	// down. The mutex gets a client that shares this one's connection but
	// whose context ends (the lease's revoke removes the key anyway).
	mctx, mcancel := context.WithTimeout(context.Background(), timeout+s.timeout())
	defer mcancel()
	mc := clientv3.NewCtxClient(mctx)
	mc.KV, mc.Lease, mc.Watcher = s.Client.KV, s.Client.Lease, s.Client.Watcher
	// The keep-alive runs until Unlock, not until mctx ends.
	session, err := concurrency.NewSession(mc, concurrency.WithLease(grant.ID), concurrency.WithContext(context.Background()))
	if err != nil {
		s.revoke(grant.ID)
		return nil, s.fail(what, err)
	}
	l := &Lock{store: s, session: session, mutex: concurrency.NewMutex(session, s.Key("lock")),
		lost: make(chan struct{}), unlocked: make(chan struct{})}
	if err := l.acquire(ctx, what, timeout); err != nil {
		l.release()
		return nil, err
	}
	h := Holder{Host: s.hostname(), PID: os.Getpid(), Command: command, Since: time.Now().UTC()}
	data, _ := json.Marshal(h)
	rctx, cancel = s.request(ctx)
	resp, err := s.Client.Txn(rctx).If(l.mutex.IsOwner()).
		Then(clientv3.OpPut(s.Key("lock-holder"), string(data), clientv3.WithLease(grant.ID))).Commit()
	cancel()
	if err == nil && !resp.Succeeded {
		err = errors.New("the lock's lease expired as it was taken")
	}
	if err != nil {
		l.release()
		return nil, s.fail(what, err)
	}
	// The lease may have run for a long wait: renew it now, so that its
	// expiry is known from here on. A channel of its own on the session's
	// keep-alive then tells of each later renewal.
	rctx, cancel = s.request(ctx)
	renewed := time.Now() // etcd renews it at this moment or later
	once, err := s.Client.KeepAliveOnce(rctx, grant.ID)
	cancel()
	if err != nil {
		l.release()
		return nil, s.fail(what, err)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	renewals, err := s.Client.KeepAlive(kctx, grant.ID)
	if err != nil {
		kcancel()
		l.release()
		return nil, s.fail(what, err)
	}
	go l.watch(renewals, kcancel, renewed.Add(time.Duration(once.TTL)*time.Second))
	return l, nil
}

// acquire takes the mutex: one bounded try, then (timeout > 0) a wait that
// ends with the timeout, ctx, or the loss of the session's lease.
func (l *Lock) acquire(ctx context.Context, what string, timeout time.Duration) error {
	s := l.store
	rctx, cancel := s.request(ctx)
	err := l.mutex.TryLock(rctx)
	cancel()
	if err == nil {
		return nil
	}
	if !errors.Is(err, concurrency.ErrLocked) {
		return s.fail(what, err)
	}
	if timeout <= 0 {
		err := s.busy(ctx, what)
		var held *state.LockedError
		if errors.As(err, &held) && held.PID == 0 {
			// No holder's record: the holder's lease may have ended
			// between the try and the read. One more try decides.
			rctx, cancel := s.request(ctx)
			terr := l.mutex.TryLock(rctx)
			cancel()
			if terr == nil {
				return nil
			}
		}
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	defer wcancel()
	go func() {
		select {
		case <-l.session.Done():
			wcancel()
		case <-wctx.Done():
		}
	}()
	err = l.mutex.Lock(wctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case isDone(l.session.Done()):
		return s.fail(what, fmt.Errorf("the lock's lease was lost while waiting: %w", context.DeadlineExceeded))
	case errors.Is(err, context.DeadlineExceeded):
		return s.busy(ctx, what)
	}
	return s.fail(what, err)
}

// busy is the *state.LockedError naming the holder, read from its record.
func (s *Store) busy(ctx context.Context, what string) error {
	key := s.Key("lock-holder")
	deadline := time.Now().Add(holderWait)
	for {
		rctx, cancel := s.request(ctx)
		resp, err := s.Client.Get(rctx, key)
		cancel()
		if err != nil {
			return s.fail(what, err)
		}
		var h Holder
		if len(resp.Kvs) > 0 && json.Unmarshal(resp.Kvs[0].Value, &h) == nil {
			return &state.LockedError{Path: "etcd key " + s.Key("lock"), Host: clean(h.Host), PID: h.PID, Command: clean(h.Command)}
		}
		if time.Now().After(deadline) {
			return &state.LockedError{Path: "etcd key " + s.Key("lock")}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// watch closes lost when, the lock still held, the lease may have expired
// in etcd: no renewal came for its TTL, or the session ended. The client
// would notice the first only up to 5 s later (it gives a lease its TTL
// from its first renewal on, and 5 s before that).
func (l *Lock) watch(renewals <-chan *clientv3.LeaseKeepAliveResponse, stop context.CancelFunc, expiry time.Time) {
	defer stop()
	timer := time.NewTimer(time.Until(expiry))
	defer timer.Stop()
	for {
		select {
		case r, ok := <-renewals:
			if !ok {
				l.loseUnlessUnlocked()
				return
			}
			timer.Reset(time.Duration(r.TTL) * time.Second)
			continue
		case <-timer.C:
		case <-l.session.Done():
		case <-l.unlocked:
			return
		}
		l.loseUnlessUnlocked()
		return
	}
}

// loseUnlessUnlocked closes lost, unless Unlock ended the lease itself.
func (l *Lock) loseUnlessUnlocked() {
	if !isDone(l.unlocked) {
		close(l.lost)
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Lost is closed if the lock's lease is lost while it is held: etcd did
// not renew it for LeaseTTL (unreachable), so another may take the lock.
// A workflow that sees it must stop writing; Save's compare-and-swap
// refuses what it would overwrite anyway.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// RemoveStaleTemps does nothing: an etcd write leaves no temporary file.
func (l *Lock) RemoveStaleTemps() {}

// Unlock deletes the holder's record, releases the lock and ends the
// session (revoking its lease). Safe to call more than once. With etcd
// unreachable it gives up after Timeout: the lease then expires by itself
// LeaseTTL later, freeing the lock.
func (l *Lock) Unlock() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		close(l.unlocked)
		ctx, cancel := l.store.request(context.Background())
		defer cancel()
		l.store.Client.Txn(ctx).If(l.mutex.IsOwner()).
			Then(clientv3.OpDelete(l.store.Key("lock-holder")), clientv3.OpDelete(l.mutex.Key())).Commit()
		l.session.Orphan()
		l.store.Client.Revoke(ctx, l.session.Lease())
	})
}

// release ends the session of a lock that was never (fully) taken.
func (l *Lock) release() {
	l.once.Do(func() {
		close(l.unlocked)
		l.session.Orphan()
		l.store.revoke(l.session.Lease())
	})
}

// revoke ends a lease, bounded by Timeout (an unreachable etcd lets it
// expire by itself).
func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := s.request(context.Background())
	defer cancel()
	s.Client.Revoke(ctx, id)
}
