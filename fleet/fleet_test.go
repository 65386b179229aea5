package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestJudge(t *testing.T) {
	since := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return since.Add(time.Duration(ms) * time.Millisecond) }
	agents := []Agent{
		{Report: Report{Host: "a", Generation: 7, Active: config.Green, Applied: at(40)}, Live: true},
		{Report: Report{Host: "b", Generation: 8, Applied: at(90)}, Live: true},
		{Report: Report{Host: "c", Generation: 6, FailedGeneration: 7, Error: "nginx -t failed"}, Live: true},
		{Report: Report{Host: "d", Generation: 6, Reported: at(-5000)}, Live: false},
		{Report: Report{Host: "e", Generation: 6}, Live: true},
	}
	conv, done := judge(agents, 7, since, false)
	if done {
		t.Fatal("done with e still on its way")
	}
	want := []struct{ state, detail string }{
		{"applied", ""}, {"applied", "already on generation 8"}, {"failed", "nginx -t failed"},
		{"dead", "no agent report since"}, {"lagging", "serves generation 6, want 7"},
	}
	for i, w := range want {
		h := conv.Hosts[i]
		if h.State != w.state || !strings.Contains(h.Detail, w.detail) {
			t.Errorf("%s: %s %q, want %s %q", h.Host, h.State, h.Detail, w.state, w.detail)
		}
	}
	if conv.Hosts[0].Took != 40*time.Millisecond {
		t.Errorf("a took %s, want 40ms", conv.Hosts[0].Took)
	}
	if _, done := judge(agents, 7, since, true); !done {
		t.Error("not done once the wait is over")
	}
	if _, done := judge(agents[:4], 7, since, false); !done {
		t.Error("not done with every live agent answered")
	}
	err := &LaggingError{conv}
	if !errors.Is(err, ErrLagging) || !strings.Contains(err.Error(), "3 of 5 load-balancer hosts") ||
		!strings.Contains(err.Error(), "c (could not apply it: nginx -t failed)") || strings.Contains(err.Error(), "a (") {
		t.Errorf("error: %v", err)
	}
	if msg := (&LaggingError{&Convergence{Generation: 3}}).Error(); !strings.Contains(msg, "no load-balancer host has joined") {
		t.Errorf("no hosts: %s", msg)
	}
}

// registry is a Registry on a real etcd, with a lease for reports.
func registry(t *testing.T) (*Registry, clientv3.LeaseID) {
	t.Helper()
	e := testsupport.StartEtcd(t)
	client, err := etcdstore.Dial(etcdstore.Options{Endpoints: []string{e.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	g, err := client.Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	return &Registry{Client: client, Prefix: "/t", Service: "app"}, g.ID
}

func TestRegistryOnEtcd(t *testing.T) {
	r, lease := registry(t)
	ctx := context.Background()
	if agents, _, err := r.Agents(ctx); err != nil || len(agents) != 0 {
		t.Fatalf("no agents yet: %v %v", agents, err)
	}
	for _, h := range []string{"lb2", "lb1"} {
		if err := r.Put(ctx, lease, Report{Host: h, Generation: 1, Active: config.Blue, Applied: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	agents, _, err := r.Agents(ctx)
	if err != nil || len(agents) != 2 || agents[0].Host != "lb1" || !agents[0].Live || agents[1].Active != config.Blue {
		t.Fatalf("agents: %+v %v", agents, err)
	}

	// A flip to generation 2: lb1 applies it while Wait waits, lb2 never.
	b := &Balancer{Registry: r, Timeout: 1500 * time.Millisecond}
	go func() {
		time.Sleep(100 * time.Millisecond)
		r.Put(ctx, lease, Report{Host: "lb1", Generation: 2, Active: config.Green, Applied: time.Now()})
	}()
	began := time.Now()
	route := lb.SampleRoute("app")
	route.Generation = 2
	err = b.Flip(ctx, route)
	if !errors.Is(err, ErrLagging) || !strings.Contains(err.Error(), "lb2 (serves generation 1, want 2)") || strings.Contains(err.Error(), "lb1 (") {
		t.Fatalf("flip with lb2 lagging: %v", err)
	}
	if waited := time.Since(began); waited < 1400*time.Millisecond {
		t.Errorf("flip gave up after %s, before its 1.5s timeout", waited)
	}
	c := b.Last()
	if c == nil || len(c.Hosts) != 2 || c.Hosts[0].State != "applied" || c.Hosts[1].State != "lagging" {
		t.Fatalf("last: %+v", c)
	}
	if took := c.Hosts[0].Took; took < 90*time.Millisecond || took > time.Second {
		t.Errorf("lb1 took %s to apply, want about 100ms", took)
	}

	// --wait-agents=false: the flip returns at once.
	nowait := &Balancer{Registry: r, NoWait: true}
	route.Generation = 9
	if err := nowait.Flip(ctx, route); err != nil || nowait.Last() != nil {
		t.Errorf("flip without waiting: %v, last %+v", err, nowait.Last())
	}

	// lb2 leaves: no longer waited for; lb1 alone answers.
	if err := r.Leave(ctx, "lb2"); err != nil {
		t.Fatal(err)
	}
	conv, err := r.Wait(ctx, 2, began, time.Second)
	if err != nil || len(conv.Hosts) != 1 || conv.Hosts[0].State != "applied" {
		t.Fatalf("wait after lb2 left: %+v %v", conv, err)
	}
	if c, err := b.Active(ctx); err != nil || c != config.Green {
		t.Errorf("active: %s %v", c, err)
	}

	// lb1's lease ends (the agent died): its host key stays, as dead.
	if _, err := r.Client.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	conv, err = r.Wait(ctx, 3, time.Now(), time.Second)
	if !errors.Is(err, ErrLagging) || conv.Hosts[0].State != "dead" {
		t.Fatalf("wait with lb1 dead: %+v %v", conv, err)
	}
	if _, err := b.Active(ctx); !errors.Is(err, lb.ErrUnreachable) {
		t.Errorf("active with no live agent: %v", err)
	}
}
