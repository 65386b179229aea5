package orchestrator

// In-package fakes of the seam (osEnv, stateStore, the load balancer), so
// the subtle rules are decided in table tests without processes, ports or
// files. The real-process tests (package orchestrator_test) stay.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/freeport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// fakeProc is a process of the fake host.
type fakeProc struct {
	start   uint64
	env     []string
	cmd     string
	group   int  // its process group's leader (0: itself)
	gone    bool // it has exited
	stopErr error
}

// fakeHost is the host as the seam sees it.
type fakeHost struct {
	procs     map[int]*fakeProc
	nextPID   int
	listeners map[int]slots.PortOwner // port: who listens
	health    map[int]error           // port: probe result (default: healthy iff a live process listens)
	logs      map[string]string
	missing   map[string]bool // directories that do not exist
	signalled []int           // pids stop signalled (and ended)
	started   []slots.Spec
	// startErr fails startProcess; waitErr is waitHealthy's answer (nil:
	// probe once); exitAtStart makes started processes exit at once;
	// noBind makes them not listen.
	startErr          error
	waitErr           error
	exitAtStart       bool
	noBind            bool
	stopErrOfNewProcs error
}

func newFakeHost() *fakeHost {
	return &fakeHost{procs: map[int]*fakeProc{}, nextPID: 1000, listeners: map[int]slots.PortOwner{},
		health: map[int]error{}, logs: map[string]string{}, missing: map[string]bool{}}
}

// spawn adds a live process (a group leader) and returns its pid.
func (h *fakeHost) spawn(cmd string, env ...string) int {
	h.nextPID++
	pid := h.nextPID
	h.procs[pid] = &fakeProc{start: uint64(100 + pid), env: env, cmd: cmd}
	return pid
}

// listen makes pid listen on port.
func (h *fakeHost) listen(pid, port int) {
	cmd := ""
	if p := h.procs[pid]; p != nil {
		cmd = p.cmd
	}
	h.listeners[port] = slots.PortOwner{PID: pid, Command: cmd}
}

func (h *fakeHost) alive(pid int) bool { p := h.procs[pid]; return p != nil && !p.gone }

func (h *fakeHost) end(pid int) {
	h.procs[pid].gone = true
	for port, o := range h.listeners {
		if o.PID == pid {
			delete(h.listeners, port)
		}
	}
}

func hasAll(env, pairs []string) bool {
	for _, kv := range pairs {
		if !slices.Contains(env, kv) {
			return false
		}
	}
	return true
}

// check mirrors slots.Identity.Check on the fake processes.
func (h *fakeHost) check(id slots.Identity) error {
	p := h.procs[id.PID]
	switch {
	case id.PID <= 0 || p == nil || p.gone:
		return slots.ErrGone
	case id.StartTime != 0 && id.StartTime != p.start:
		return fmt.Errorf("%w: pid %d now belongs to a process started later (%s)", slots.ErrGone, id.PID, p.cmd)
	case len(id.Env) == 0 || !hasAll(p.env, id.Env):
		return fmt.Errorf("pid %d (%s) is %w: its environment lacks %s", id.PID, p.cmd, slots.ErrNotOurs, strings.Join(id.Env, " "))
	}
	return nil
}

func (h *fakeHost) env() osEnv {
	return osEnv{
		startProcess: func(spec slots.Spec) (*slots.Process, error) {
			h.started = append(h.started, spec)
			if h.startErr != nil {
				return nil, h.startErr
			}
			env := append(slices.Clone(spec.Env), spec.Marker...)
			pid := h.spawn(spec.Argv[0], env...)
			h.procs[pid].stopErr = h.stopErrOfNewProcs
			port, _ := strconv.Atoi(strings.TrimPrefix(env[0], "PORT="))
			exited := make(chan struct{})
			if h.exitAtStart {
				h.procs[pid].gone = true
				close(exited)
			} else if !h.noBind {
				h.listen(pid, port)
			}
			return &slots.Process{PID: pid, Identity: slots.Identity{PID: pid, StartTime: h.procs[pid].start, Env: spec.Marker},
				Exited: exited}, nil
		},
		stop: func(ctx context.Context, id slots.Identity, grace time.Duration) error {
			if err := h.check(id); errors.Is(err, slots.ErrGone) {
				return nil
			} else if err != nil {
				return fmt.Errorf("stop: %w: left running", err)
			}
			if err := h.procs[id.PID].stopErr; err != nil {
				return err
			}
			h.signalled = append(h.signalled, id.PID)
			h.end(id.PID)
			return nil
		},
		alive: h.alive,
		check: h.check,
		identify: func(pid int, marker []string) (slots.Identity, error) {
			if !h.alive(pid) {
				return slots.Identity{}, fmt.Errorf("pid %d: %w", pid, slots.ErrGone)
			}
			id := slots.Identity{PID: pid, StartTime: h.procs[pid].start, Env: marker}
			return id, h.check(id)
		},
		findMarked: func(marker []string) []slots.Identity {
			var out []slots.Identity
			for pid, p := range h.procs {
				if !p.gone && p.group == 0 && hasAll(p.env, marker) {
					out = append(out, slots.Identity{PID: pid, StartTime: p.start, Env: marker})
				}
			}
			slices.SortFunc(out, func(a, b slots.Identity) int { return a.PID - b.PID })
			return out
		},
		startTime: func(pid int) (uint64, error) {
			if !h.alive(pid) {
				return 0, os.ErrNotExist
			}
			return h.procs[pid].start, nil
		},
		getenv: func(pid int, key string) string {
			if p := h.procs[pid]; p != nil {
				for _, kv := range p.env {
					if k, v, _ := strings.Cut(kv, "="); k == key {
						return v
					}
				}
			}
			return ""
		},
		commandLine: func(pid int) string {
			if p := h.procs[pid]; p != nil {
				return p.cmd
			}
			return ""
		},
		listenerOf: func(port int) (slots.PortOwner, bool) { o, ok := h.listeners[port]; return o, ok },
		listensOn: func(leader, port int) (slots.PortOwner, bool) {
			o, ok := h.listeners[port]
			return o, ok && o.PID > 0 && h.inGroup(o.PID, leader)
		},
		inGroup: h.inGroup,
		logTail: func(path string, n int) string { return h.logs[path] },
		isDir:   func(path string) bool { return !h.missing[path] },
		probe:   h.probe,
		waitHealthy: func(ctx context.Context, port int, w slots.Wait) error {
			if h.waitErr != nil {
				if w.OnProbe != nil {
					w.OnProbe(time.Second, h.waitErr)
				}
				return h.waitErr
			}
			select {
			case <-w.Exited:
				return slots.ErrExited
			default:
			}
			return h.probe(ctx, port)
		},
	}
}

func (h *fakeHost) inGroup(pid, leader int) bool {
	p := h.procs[pid]
	return pid == leader || (p != nil && p.group == leader)
}

var errRefused = fmt.Errorf("%w: connection refused", slots.ErrNotHealthy)

func (h *fakeHost) probe(ctx context.Context, port int) error {
	if err, ok := h.health[port]; ok {
		return err
	}
	if o, ok := h.listeners[port]; ok && h.alive(o.PID) {
		return nil
	}
	return errRefused
}

// memStore is the state file in memory.
type memStore struct {
	st       *state.State
	saveErrs []error // consumed one per Save, before saving
	lockErrs []error // consumed one per Lock, before lockErr
	lockErr  error
	timeouts []time.Duration // each Lock's timeout
	locks    int
	saves    int
	// beforeLoad runs before each Load (n counts from 1): another operation
	// writing between two loads.
	beforeLoad func(n int, st *state.State)
	loads      int
}

func (m *memStore) Load() (*state.State, error) {
	m.loads++
	if m.beforeLoad != nil {
		m.beforeLoad(m.loads, m.st)
	}
	return m.st.Clone(), nil
}

func (m *memStore) Save(st *state.State) error {
	if len(m.saveErrs) > 0 {
		err := m.saveErrs[0]
		m.saveErrs = m.saveErrs[1:]
		if err != nil {
			return err
		}
	}
	m.saves++
	m.st = st.Clone()
	return nil
}

func (m *memStore) Lock(ctx context.Context, command string, timeout time.Duration) (heldLock, error) {
	m.timeouts = append(m.timeouts, timeout)
	if len(m.lockErrs) > 0 {
		err := m.lockErrs[0]
		m.lockErrs = m.lockErrs[1:]
		if err != nil {
			return nil, err
		}
	} else if m.lockErr != nil {
		return nil, m.lockErr
	}
	m.locks++
	return memLock{m}, nil
}

type memLock struct{ m *memStore }

func (memLock) RemoveStaleTemps() {}
func (l memLock) Unlock()         { l.m.locks-- }

// testLB is a driver that does not follow the state file (nginx, HAProxy).
type testLB struct {
	active    config.Color
	activeErr error
	flipErr   error
	flips     []lb.Route
	onFlip    func(lb.Route) // called with every route flipped to
}

func (b *testLB) Flip(ctx context.Context, r lb.Route) error {
	b.flips = append(b.flips, r)
	if b.onFlip != nil {
		b.onFlip(r)
	}
	if b.flipErr != nil {
		return b.flipErr
	}
	b.active = r.Active.Color
	return nil
}

func (b *testLB) Active(ctx context.Context) (config.Color, error) { return b.active, b.activeErr }
func (b *testLB) Render(r lb.Route) ([]byte, error)                { return []byte(r.Active.Color), nil }

// proxyLB is a driver like the builtin proxy: it follows the state file,
// reports its route and can be started.
type proxyLB struct {
	testLB
	route     *builtin.RouteInfo
	routeErr  error
	ensurePID int
	ensureErr error
}

func (b *proxyLB) FollowsState() bool { return true }
func (b *proxyLB) Route(ctx context.Context) (*builtin.RouteInfo, error) {
	return b.route, b.routeErr
}
func (b *proxyLB) Ensure(ctx context.Context) (int, error) { return b.ensurePID, b.ensureErr }

// rig is an orchestrator on the fake seam.
type rig struct {
	o     *Orchestrator
	host  *fakeHost
	store *memStore
	blue  int // ports
	green int
}

func pickPort(t *testing.T) string {
	p, err := freeport.Pick(30000, 32000)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(p)
}

// defaultConfig is the embedded default config on free ports, its state
// file in a temporary directory.
func defaultConfig(t *testing.T) *config.Config {
	t.Helper()
	env := map[string]string{"BLUE_PORT": pickPort(t), "GREEN_PORT": pickPort(t), "BG_PROXY_PORT": pickPort(t),
		"BG_STATE_FILE": filepath.Join(t.TempDir(), "bg_state.json")}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newRig returns the embedded default service on the fake seam, with bal
// (a *testLB when nil).
func newRig(t *testing.T, bal lb.Balancer, edit ...func(*config.Service)) *rig {
	t.Helper()
	cfg := defaultConfig(t)
	for _, e := range edit {
		e(cfg.Services["app"])
	}
	if bal == nil {
		bal = &testLB{}
	}
	o, err := New(cfg, "app", Options{Balancer: bal})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{o: o, host: newFakeHost(), blue: o.svc.Blue.Port, green: o.svc.Green.Port}
	r.store = &memStore{st: state.New(r.blue, r.green)}
	o.sys, o.store = r.host.env(), r.store
	return r
}

// slot starts a process bgd started for color (marker and the start
// environment), records it in the state with release, and makes it listen.
func (r *rig) slot(color config.Color, release string) int {
	port := r.o.svc.Port(color)
	env := append([]string{"PORT=" + strconv.Itoa(port), "BG_COLOR=" + color.String(), "BG_RELEASE=" + release}, r.o.marker(color)...)
	pid := r.host.spawn("demo-app --color "+color.String(), env...)
	r.host.listen(pid, port)
	r.store.st.UpdateSlot(color, func(sl *state.SlotState) {
		sl.PID, sl.StartTime, sl.Release, sl.Healthy = pid, r.host.procs[pid].start, release, true
	})
	return pid
}

// op returns an operation on the stored state, as begin would, without
// marking it in progress.
func (r *rig) op() *op {
	st, _ := r.store.Load()
	return &op{o: r.o, lock: memLock{r.store}, st: st, began: time.Now()}
}

func (r *rig) state() *state.State { return r.store.st }

func lastEvent(st *state.State) state.Event {
	if len(st.History) == 0 {
		return state.Event{}
	}
	return st.History[len(st.History)-1]
}
