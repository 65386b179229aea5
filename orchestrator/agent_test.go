package orchestrator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// agentLB is a load balancer that records the routes an agent flips to;
// safe for the agent's goroutine and the test's.
type agentLB struct {
	mu      sync.Mutex
	flips   []lb.Route
	flipErr error
}

func (b *agentLB) Flip(ctx context.Context, r lb.Route) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flips = append(b.flips, r)
	return b.flipErr
}
func (b *agentLB) Active(ctx context.Context) (config.Color, error) {
	return "", errors.New("not asked")
}
func (b *agentLB) Render(r lb.Route) ([]byte, error) { return nil, nil }
func (b *agentLB) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "test", Weights: true, RemoteHosts: true}
}

func (b *agentLB) failWith(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flipErr = err
}

func (b *agentLB) last() (lb.Route, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.flips) == 0 {
		return lb.Route{}, 0
	}
	return b.flips[len(b.flips)-1], len(b.flips)
}

// etcdConfig is the embedded default service with its state in etcd at
// endpoint.
func etcdConfig(t *testing.T, endpoint string) *config.Config {
	t.Helper()
	cfg := defaultConfig(t)
	cfg.State = config.StateBackend{Backend: config.BackendEtcd, Endpoints: []string{endpoint}, Prefix: "/t",
		DialTimeout: config.Duration(2 * time.Second), LeaseTTL: config.Duration(time.Second), AgentsTimeout: config.Duration(2 * time.Second)}
	return cfg
}

// waitReport waits until host's report satisfies ok, and returns it.
func waitReport(t *testing.T, o *Orchestrator, host string, what string, ok func(fleet.Agent) bool) fleet.Agent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		agents, err := o.Agents(context.Background())
		for _, a := range agents {
			if a.Host == host && ok(a) {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report of %s %s within 5s: %+v %v", host, what, agents, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentAppliesTheStateInEtcd runs an agent against a real etcd and a
// recording load balancer: it applies each new routing with the state's
// generation (a canary's split included), reports what it serves, reports
// a routing its load balancer refuses without forgetting the one it
// serves, and leaves when its context ends.
func TestAgentAppliesTheStateInEtcd(t *testing.T) {
	e := testsupport.StartEtcd(t)
	cfg := etcdConfig(t, e.Endpoint)
	bal := &agentLB{}
	o, err := New(cfg, "app", Options{Balancer: bal, LocalBalancer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	write := func(edit func(*state.State)) {
		t.Helper()
		st, err := o.etcd.store.Load()
		if err != nil {
			t.Fatal(err)
		}
		edit(st)
		if err := o.etcd.store.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	write(func(st *state.State) { st.ActiveVersion, st.Generation = config.Green, 3 })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.RunAgent(ctx, "lb-a") }()

	a := waitReport(t, o, "lb-a", "on generation 3", func(a fleet.Agent) bool { return a.Generation == 3 })
	if !a.Live || a.Active != config.Green || a.PID != os.Getpid() || a.Applied.IsZero() {
		t.Errorf("report: %+v", a)
	}
	if r, _ := bal.last(); r.Active.Color != config.Green || r.Generation != 3 || r.Active.Host != lb.LocalHost {
		t.Errorf("flipped to %+v, want green at generation 3", r)
	}

	write(func(st *state.State) {
		st.Generation = 4
		st.Canary = &state.Canary{Color: config.Blue, Weight: 20, Started: time.Now()}
	})
	waitReport(t, o, "lb-a", "with the canary", func(a fleet.Agent) bool { return a.Generation == 4 && a.CanaryWeight == 20 })
	if r, _ := bal.last(); r.Standby.Weight != 20 || r.Active.Weight != 80 {
		t.Errorf("canary route %+v, want green 80 / blue 20", r)
	}
	// The same routing written again (an operation's in-progress save):
	// nothing is flipped.
	_, n := bal.last()
	write(func(st *state.State) { st.InProgress = &state.Operation{Command: "deploy", PID: 1} })
	time.Sleep(300 * time.Millisecond)
	if _, m := bal.last(); m != n {
		t.Errorf("a save that changed no routing was flipped again (%d flips, then %d)", n, m)
	}

	bal.failWith(errors.New("nginx -t failed"))
	write(func(st *state.State) { st.Generation, st.ActiveVersion, st.Canary = 5, config.Blue, nil })
	a = waitReport(t, o, "lb-a", "the failure", func(a fleet.Agent) bool { return a.FailedGeneration == 5 })
	if a.Generation != 4 || !strings.Contains(a.Error, "nginx -t failed") {
		t.Errorf("after a refused routing: %+v, want generation 4 kept and the error", a)
	}
	bal.failWith(nil) // retried on the next resync
	waitReport(t, o, "lb-a", "the retry", func(a fleet.Agent) bool { return a.Generation == 5 && a.Error == "" })

	cancel()
	if err := <-done; err != nil {
		t.Errorf("agent: %v", err)
	}
	if agents, err := o.Agents(context.Background()); err != nil || len(agents) != 0 {
		t.Errorf("after the agent left: %+v %v", agents, err)
	}
}

func TestAgentRefusals(t *testing.T) {
	r := newRig(t, nil)
	if err := r.o.RunAgent(context.Background(), "lb1"); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "state.backend: etcd") {
		t.Errorf("agent on the file backend: %v", err)
	}
	e := testsupport.StartEtcd(t)
	o, err := New(etcdConfig(t, e.Endpoint), "app", Options{Balancer: &agentLB{}, LocalBalancer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, bad := range []string{"a/b", "a b", ".x", strings.Repeat("x", 254)} {
		if err := o.RunAgent(context.Background(), bad); !errors.Is(err, ErrUsage) {
			t.Errorf("host %q: %v, want a usage error", bad, err)
		}
	}
}

// TestEtcdBackendWiring: with the etcd backend, a command's orchestrator
// waits for the agents (the fleet balancer), status names the etcd key and
// lists the agents, and a flip nobody applies fails naming the reason.
func TestEtcdBackendWiring(t *testing.T) {
	e := testsupport.StartEtcd(t)
	cfg := etcdConfig(t, e.Endpoint)
	var phases []Phase
	o, err := New(cfg, "app", Options{NoWaitAgents: false, Progress: func(p Phase) { phases = append(phases, p) }})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, ok := o.lb.(*fleet.Balancer); !ok || o.driverName() != "agents" {
		t.Fatalf("balancer %T (%s), want the agents'", o.lb, o.driverName())
	}
	st, err := o.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.StateFile != "etcd:/t/app/state" || st.Agents == nil || len(st.Agents) != 0 {
		t.Errorf("status: state %q, agents %+v", st.StateFile, st.Agents)
	}
	// A flip with no agent: the state is written and the error says so.
	o.sys = newFakeHost().env()
	p, err := o.begin(context.Background(), "switch", config.Blue, config.Green)
	if err != nil {
		t.Fatal(err)
	}
	err = p.end(p.flip(context.Background(), config.Green))
	if !errors.Is(err, fleet.ErrLagging) || !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "no load-balancer host has joined") {
		t.Fatalf("flip with no agent: %v", err)
	}
	if st, _ := o.store.Load(); st.ActiveVersion != config.Green || st.Generation != 1 {
		t.Errorf("the desired routing was not kept: %s at %d", st.ActiveVersion, st.Generation)
	}

	// A corrupt value: commands refuse it, reconcile keeps it aside in etcd
	// (never deleted) and rebuilds the state.
	garbage := `{"active_version": "purple"`
	if _, err := o.etcd.client.Put(context.Background(), "/t/app/state", garbage); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Status(context.Background()); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "bgd reconcile") {
		t.Fatalf("status of a corrupt state: %v", err)
	}
	rec, err := o.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	aside := strings.TrimPrefix(rec.KeptCorrupt, "etcd:")
	kept, err := o.etcd.client.Get(context.Background(), aside)
	if err != nil || len(kept.Kvs) != 1 || string(kept.Kvs[0].Value) != garbage || !strings.HasPrefix(aside, "/t/app/state.corrupt-") {
		t.Fatalf("the corrupt value was not kept aside at %q: %v %v", rec.KeptCorrupt, kept, err)
	}
	if st, err := o.Status(context.Background()); err != nil {
		t.Errorf("status after reconcile: %v", err)
	} else if st.Driver != "agents" {
		t.Errorf("status names the driver %q, want the agents", st.Driver)
	}
}

func TestEtcdTLSSettings(t *testing.T) {
	dir := t.TempDir()
	if c, err := etcdTLS(config.StateBackend{Endpoints: []string{"http://e:2379"}}); c != nil || err != nil {
		t.Errorf("plain http: %v %v", c, err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	for name, b := range map[string]config.StateBackend{
		"missing CA":      {Endpoints: []string{"https://e:2379"}, CAFile: filepath.Join(dir, "none.pem")},
		"CA not PEM":      {Endpoints: []string{"https://e:2379"}, CAFile: notPEM},
		"cert not a pair": {Endpoints: []string{"https://e:2379"}, CertFile: notPEM, KeyFile: notPEM},
	} {
		if _, err := etcdTLS(b); !errors.Is(err, config.ErrInvalid) {
			t.Errorf("%s: %v, want an invalid configuration", name, err)
		}
	}
	if _, err := dialEtcd(config.StateBackend{Endpoints: []string{"http://127.0.0.1:1"}, Username: "u", PasswordFile: filepath.Join(dir, "none")},
		&config.Service{Name: "app"}); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("missing password file: %v", err)
	}
	if why := tlsProblem([]string{"http://127.0.0.1:1"}, nil, time.Second); why != "" {
		t.Errorf("an http endpoint has no TLS problem: %q", why)
	}
}

// TestImportState: a state file's routing, releases and history move into
// etcd once; a second import, or one into a service etcd already holds, is
// refused, as is an import without the etcd backend.
func TestImportState(t *testing.T) {
	e := testsupport.StartEtcd(t)
	cfg := etcdConfig(t, e.Endpoint)
	o, err := New(cfg, "app", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	file := &state.Store{Path: filepath.Join(t.TempDir(), "old.json"), BluePort: o.svc.Blue.Port, GreenPort: o.svc.Green.Port}
	old := state.New(o.svc.Blue.Port, o.svc.Green.Port)
	old.ActiveVersion, old.Generation, old.GreenRelease, old.ProxyPID = config.Green, 7, "v2", 4242
	old.Record(state.Event{Timestamp: state.Now(), From: config.Blue, To: config.Green, Status: state.StatusSuccess, Action: "deploy", Release: "v2"})
	if err := file.Save(old); err != nil {
		t.Fatal(err)
	}
	if _, err := o.ImportState(context.Background(), filepath.Join(t.TempDir(), "none.json")); !errors.Is(err, ErrUsage) {
		t.Errorf("import of a missing file: %v", err)
	}
	if _, err := o.ImportState(context.Background(), file.Path); err != nil {
		t.Fatal(err)
	}
	st, err := o.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.ActiveVersion != config.Green || st.Generation != 7 || st.GreenRelease != "v2" || len(st.History) != 1 || st.ProxyPID != 0 {
		t.Errorf("imported: %s at %d, release %q, %d history entries, proxy pid %d", st.ActiveVersion, st.Generation, st.GreenRelease, len(st.History), st.ProxyPID)
	}
	if _, err := o.ImportState(context.Background(), file.Path); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("a second import: %v", err)
	}
	r := newRig(t, nil)
	if _, err := r.o.ImportState(context.Background(), file.Path); !errors.Is(err, ErrUsage) {
		t.Errorf("import on the file backend: %v", err)
	}
}
