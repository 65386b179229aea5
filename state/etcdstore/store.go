package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bgd-dev/bgd/state"
)

// Defaults of the zero values of Options and Store.
const (
	DefaultPrefix      = "/bgd"
	DefaultDialTimeout = 5 * time.Second
	DefaultLeaseTTL    = 5 * time.Second
)

// maxReconnectDelay bounds the pause between two attempts to reach etcd
// again once the connection was lost.
const maxReconnectDelay = 2 * time.Second

var (
	// ErrUnreachable: etcd did not answer in time (down, unreachable, or
	// without a leader). Nothing is known to have changed.
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrConflict: the state in etcd changed since this Store loaded it;
	// nothing was saved.
	ErrConflict = errors.New("the shared state changed since it was loaded")
)

// Options say how to reach etcd.
type Options struct {
	// Endpoints are etcd's client URLs, e.g. http://etcd:2379.
	Endpoints []string
	// DialTimeout bounds the first contact (default 5 s).
	DialTimeout time.Duration
	// Username and Password log in when etcd has auth enabled.
	Username, Password string
	// TLS is the client's TLS configuration for https endpoints (CA,
	// client certificate); nil for plain http.
	TLS *tls.Config
}

// Dial connects to etcd and checks that it answers a read within
// DialTimeout; if it does not, the error names the endpoints and matches
// ErrUnreachable. The caller closes the client.
func Dial(o Options) (*clientv3.Client, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints: set state.endpoints in the configuration")
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	eps := strings.Join(o.Endpoints, ",")
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		Username:    o.Username,
		Password:    o.Password,
		TLS:         o.TLS,
		// bgd's own errors say what failed; the client's log would only
		// repeat its retries on stderr.
		Logger: zap.NewNop(),
		// A connection that died with the network (a partition, a host
		// cut off) sends nothing back: without pings the client would
		// keep it, its requests waiting on TCP's growing retransmission
		// backoff for tens of seconds after the network is back. A ping
		// unanswered within 2 s closes it, and the client dials anew.
		// 5 s is etcd's default --grpc-keepalive-min-time: more frequent
		// pings would be refused (too_many_pings).
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// gRPC's reconnect backoff grows to 2 minutes by default: an agent
		// would stay that long on old routing after etcd came back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
			MinConnectTimeout: o.DialTimeout,
		})},
	})
	if err != nil {
		if errors.Is(err, rpctypes.ErrAuthFailed) {
			return nil, fmt.Errorf("etcd at %s refused user %q: %w: check state.username and state.password_file", eps, o.Username, err)
		}
		return nil, failure("connect", o.Endpoints, o.DialTimeout, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.DialTimeout)
	defer cancel()
	// Any read proves a leader answers; a user whose role may read only
	// bgd's prefix is refused this key, which proves it as well.
	if _, err := c.Get(ctx, "/", clientv3.WithCountOnly()); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		c.Close()
		return nil, failure("connect", o.Endpoints, o.DialTimeout, err)
	}
	return c, nil
}

// unreachableError is ErrUnreachable with the endpoints and the cause.
type unreachableError struct {
	msg   string
	cause error
}

func (e *unreachableError) Error() string   { return e.msg }
func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.cause} }

// failure wraps the error of an etcd request: ErrUnreachable when etcd did
// not answer (or had no leader), naming the endpoints; else as it is.
func failure(what string, endpoints []string, within time.Duration, err error) error {
	eps := strings.Join(endpoints, ",")
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) || code == codes.Unavailable || code == codes.DeadlineExceeded {
		return &unreachableError{
			msg:   fmt.Sprintf("%s: etcd at %s unreachable: no answer within %s (%v): check that etcd runs and that state.endpoints names it", what, eps, within, err),
			cause: err,
		}
	}
	return fmt.Errorf("%s: etcd at %s: %w", what, eps, err)
}

// Store is one service's state and lock in etcd. Set Client, Service,
// BluePort and GreenPort; the rest have defaults.
//
// Save compares against the revision the last Load or Save of this Store
// saw, so one Store value serves one goroutine's load-modify-save at a
// time; goroutines that work on their own give each its own Store.
type Store struct {
	// Client is the connection (Dial); the caller closes it.
	Client *clientv3.Client
	// Prefix and Service name the keys: Prefix/Service/state and so on.
	// Prefix defaults to DefaultPrefix.
	Prefix, Service string
	// BluePort and GreenPort seed a state that does not exist yet.
	BluePort, GreenPort int
	// Host is this host's name, recorded as the lock's holder (default
	// os.Hostname()).
	Host string
	// LeaseTTL is the lock session's TTL (default 5 s; etcd counts whole
	// seconds, at least 1, and raises it to its own minimum, 1.5 election
	// timeouts): how long a dead holder keeps the lock.
	LeaseTTL time.Duration
	// Timeout bounds each etcd request (default DefaultDialTimeout).
	Timeout time.Duration

	mu sync.Mutex
	// rev is the mod revision of the state key as the last Load or Save
	// saw it, 0 if the key was absent; seen is false before either.
	rev  int64
	seen bool
}

// Key is the etcd key Prefix/Service/name.
func (s *Store) Key(name string) string {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return strings.TrimRight(p, "/") + "/" + s.Service + "/" + name
}

func (s *Store) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultDialTimeout
}

// request is a context for one etcd request (or a short run of them).
func (s *Store) request(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, s.timeout())
}

func (s *Store) fail(what string, err error) error {
	return failure(what, s.Client.Endpoints(), s.timeout(), err)
}

func (s *Store) revision() (rev int64, seen bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, s.seen
}

func (s *Store) setRevision(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev, s.seen = rev, true
}

// Load reads the state. A missing key gives state.New(BluePort, GreenPort).
// A value that does not decode is an error matching state.ErrCorrupt and
// is left as it is; its revision is noted all the same, so that a Save
// that rebuilds the state (reconcile) replaces it.
func (s *Store) Load() (*state.State, error) {
	key := s.Key("state")
	ctx, cancel := s.request(context.Background())
	defer cancel()
	resp, err := s.Client.Get(ctx, key)
	if err != nil {
		return nil, s.fail("load the state from etcd key "+key, err)
	}
	if len(resp.Kvs) == 0 {
		s.setRevision(0)
		return state.New(s.BluePort, s.GreenPort), nil
	}
	kv := resp.Kvs[0]
	s.setRevision(kv.ModRevision)
	st, err := state.Decode(kv.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: etcd key %s (revision %d): %v; it was left as it is: run `bgd reconcile` to rebuild it from what is running", state.ErrCorrupt, key, kv.ModRevision, err)
	}
	return st, nil
}

// encode is the state as the state file holds it (and so the etcd value).
func encode(st *state.State) ([]byte, error) {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(data, '\n'), nil
}

// Save writes st if the key is still as this Store last saw it: at the mod
// revision of its last Load or Save, or absent if it was absent then (or
// if this Store never loaded it). Otherwise nothing is written and the
// error matches ErrConflict, naming the revisions and the operation in
// progress in the newer state. After a Save that failed with
// ErrUnreachable the write may or may not have happened: Load again.
func (s *Store) Save(st *state.State) error {
	key := s.Key("state")
	data, err := encode(st)
	if err != nil {
		return err
	}
	rev, seen := s.revision()
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	ctx, cancel := s.request(context.Background())
	defer cancel()
	resp, err := s.Client.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(data))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return s.fail("save the state to etcd key "+key, err)
	}
	if !resp.Succeeded {
		return conflict(key, rev, seen, resp)
	}
	s.setRevision(resp.Header.Revision)
	return nil
}

// conflict explains a Save whose compare failed, from the Else's read.
func conflict(key string, rev int64, seen bool, resp *clientv3.TxnResponse) error {
	now := "deleted"
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	by := ""
	if len(kvs) > 0 {
		now = fmt.Sprintf("revision %d", kvs[0].ModRevision)
		if st, err := state.Decode(kvs[0].Value); err == nil {
			by = fmt.Sprintf(", generation %d", st.Generation)
			if p := st.InProgress; p != nil {
				by += fmt.Sprintf(", %s (pid %d) in progress", clean(p.Command), p.PID)
			}
		}
	}
	was := "absent"
	switch {
	case !seen:
		was = "not loaded by this bgd"
	case rev > 0:
		was = fmt.Sprintf("at revision %d", rev)
	}
	return fmt.Errorf("%w: etcd key %s was %s and is now %s%s: another bgd wrote it meanwhile; nothing was saved: run the command again", ErrConflict, key, was, now, by)
}

// clean drops control characters: what etcd holds may reach a terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}

// hostname is Host, or os.Hostname().
func (s *Store) hostname() string {
	if s.Host != "" {
		return s.Host
	}
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}
