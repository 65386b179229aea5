package orchestrator

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
	"github.com/bgd-dev/bgd/state/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdState is the service's state in etcd (state.backend: etcd): the
// store, the agents' registry and the client both use.
type etcdState struct {
	client *clientv3.Client
	store  *etcdstore.Store
	agents *fleet.Registry
}

// dialEtcd connects to the etcd of the state backend b, for service svc.
func dialEtcd(b config.StateBackend, svc *config.Service) (*etcdState, error) {
	opts := etcdstore.Options{Endpoints: b.Endpoints, DialTimeout: b.DialTimeout.D(), Username: b.Username}
	if b.PasswordFile != "" {
		pw, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("%w: state.password_file: %v", config.ErrInvalid, err)
		}
		opts.Password = strings.TrimRight(string(pw), "\r\n")
	}
	tlsConfig, err := etcdTLS(b)
	if err != nil {
		return nil, err
	}
	opts.TLS = tlsConfig
	client, err := etcdstore.Dial(opts)
	if err != nil {
		if why := tlsProblem(b.Endpoints, tlsConfig, b.DialTimeout.D()); why != "" {
			return nil, fmt.Errorf("%w; %s", err, why)
		}
		return nil, err
	}
	return &etcdState{
		client: client,
		store: &etcdstore.Store{Client: client, Prefix: b.Prefix, Service: svc.Name, BluePort: svc.Blue.Port, GreenPort: svc.Green.Port,
			LeaseTTL: b.LeaseTTL.D(), Timeout: b.DialTimeout.D()},
		agents: &fleet.Registry{Client: client, Prefix: b.Prefix, Service: svc.Name, Timeout: b.DialTimeout.D()},
	}, nil
}

// etcdTLS is the TLS configuration of b's https endpoints (nil: plain http
// and no files given).
func etcdTLS(b config.StateBackend) (*tls.Config, error) {
	https := false
	for _, e := range b.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if !https && b.CAFile == "" && b.CertFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.CAFile != "" {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: state.ca_file: %v", config.ErrInvalid, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: state.ca_file %s holds no PEM certificate", config.ErrInvalid, b.CAFile)
		}
	}
	if b.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: state.cert_file/key_file: %v", config.ErrInvalid, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// tlsProblem says why a TLS handshake with the https endpoints fails, ""
// when one succeeds or none is https: etcd's client only says that nothing
// answered, where the cause is often a certificate.
func tlsProblem(endpoints []string, c *tls.Config, timeout time.Duration) string {
	var problems []string
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Scheme != "https" {
			continue
		}
		cfg := c.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg.ServerName = u.Hostname()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", u.Host, cfg)
		if err == nil {
			// The server asks for a client certificate after the handshake
			// in TLS 1.3: a read shows whether it refused ours.
			conn.SetReadDeadline(time.Now().Add(timeout))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				return ""
			}
		}
		problems = append(problems, fmt.Sprintf("TLS with %s fails: %v (check state.ca_file, cert_file and key_file)", e, err))
	}
	return strings.Join(problems, "; ")
}

// keepAside copies the state's value, as it is, to the key
// <state key>.corrupt-<stamp> (reconcile, before it rebuilds a corrupt
// state), and names that key.
func (e *etcdState) keepAside(stamp string) (string, error) {
	key := e.store.Key("state")
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(e.store.Timeout, 5*time.Second))
	defer cancel()
	resp, err := e.client.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("%s is gone", key)
	}
	aside := key + ".corrupt-" + stamp
	if _, err := e.client.Put(ctx, aside, string(resp.Kvs[0].Value)); err != nil {
		return "", fmt.Errorf("write %s: %w", aside, err)
	}
	return "etcd:" + aside, nil
}

// etcdStore is the etcd store as the workflows use it (stateStore).
type etcdStore struct{ s *etcdstore.Store }

func (e etcdStore) Load() (*state.State, error) { return e.s.Load() }
func (e etcdStore) Save(st *state.State) error  { return e.s.Save(st) }
func (e etcdStore) Lock(ctx context.Context, command string, timeout time.Duration) (heldLock, error) {
	l, err := e.s.Lock(ctx, command, timeout)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Close releases what the orchestrator holds open: its etcd connection
// (the etcd backend); nothing otherwise.
func (o *Orchestrator) Close() error {
	if o.etcd != nil {
		return o.etcd.client.Close()
	}
	return nil
}

// Agents are the load-balancer hosts that joined the service (the etcd
// backend), with what each reports; nil with the file backend.
func (o *Orchestrator) Agents(ctx context.Context) ([]fleet.Agent, error) {
	if o.etcd == nil {
		return nil, nil
	}
	agents, _, err := o.etcd.agents.Agents(ctx)
	return agents, err
}

// fleetBalancer is the load balancers of every agent's host, as a command
// that changes the routing waits for them.
func fleetBalancer(cfg *config.Config, agents *fleet.Registry, opts Options) *fleet.Balancer {
	b := &fleet.Balancer{Registry: agents, Timeout: cmp.Or(opts.AgentsTimeout, cfg.State.AgentsTimeout.D()), NoWait: opts.NoWaitAgents}
	if opts.Progress != nil {
		b.Notify = func(h fleet.HostResult) { opts.Progress(Phase{Step: "agent", Detail: h.Host + ": " + h.Line()}) }
	}
	return b
}

// driverName names the load balancer the workflows drive, for messages:
// the config's driver, or "agents" (the load-balancer hosts' agents) when
// the etcd backend's commands wait for them.
func (o *Orchestrator) driverName() string {
	if c, ok := o.lb.(lb.Capable); ok {
		return c.Capabilities().Driver
	}
	return o.svc.LB.Driver
}

// ImportState copies a state file (path; "": the one the config names) into
// etcd, history included: how a service that ran on the file backend keeps
// its active colour, releases and history when it moves to etcd. It
// refuses when etcd already holds a state for the service, and leaves out
// the builtin proxy's pid, a process of the host the file was on.
func (o *Orchestrator) ImportState(ctx context.Context, path string) (*state.State, error) {
	if o.etcd == nil {
		return nil, usagef("import-state copies a state file into etcd: set state.backend: etcd in the configuration first")
	}
	if path == "" {
		path = o.statePath
	}
	src := &state.Store{Path: path, BluePort: o.svc.Blue.Port, GreenPort: o.svc.Green.Port}
	if !src.Exists() {
		return nil, usagef("no state file at %s: give the old one with --from", path)
	}
	st, err := src.Load()
	if err != nil {
		return nil, err
	}
	lock, err := o.store.Lock(ctx, "import-state", o.opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	key := o.etcd.store.Key("state")
	rctx, cancel := context.WithTimeout(ctx, cmp.Or(o.etcd.store.Timeout, 5*time.Second))
	resp, err := o.etcd.client.Get(rctx, key, clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if resp.Count > 0 {
		return nil, usagef("etcd already holds the state of %s (%s): nothing imported", o.svc.Name, key)
	}
	st.ProxyPID, st.ProxyPIDStart = 0, 0
	if err := o.store.Save(st); err != nil {
		return nil, err
	}
	return st, nil
}
