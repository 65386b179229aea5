package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/fleet"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// Errors a caller can test with errors.Is. The CLI maps them to exit codes.
var (
	// ErrNotHealthy: a slot did not answer its health check.
	ErrNotHealthy = errors.New("not healthy")
	// ErrFailed: an operation failed (deploy, start, rollback impossible).
	ErrFailed = errors.New("operation failed")
	// ErrUsage: the request makes no sense as asked (e.g. stop the active slot).
	ErrUsage = errors.New("bad usage")
)

// Options tune an Orchestrator. Zero values are the defaults.
type Options struct {
	// LockTimeout is how long to wait for another operation's lock. Default
	// 0: fail at once with state.ErrLocked naming the holder.
	LockTimeout time.Duration
	// Command names this operation in the lock file and history, e.g.
	// "deploy". Default: the workflow's name.
	Command string
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Progress is told each phase of a workflow as it happens. Default nil.
	Progress func(Phase)
	// SpawnProxy starts a detached builtin proxy for the service and returns
	// its pid. Default nil: bgd never starts one (systemd runs `bgd proxy`).
	SpawnProxy func() (int, error)
	// Balancer replaces the driver chosen by the config (tests). Default nil.
	Balancer lb.Balancer
	// LocalBalancer: with the etcd backend, drive this host's load balancer
	// (the config's lb.driver) rather than wait for the agents of every
	// load-balancer host: what `bgd agent` and `bgd render` do there.
	// Default false. Without etcd the local one is the only one.
	LocalBalancer bool
	// NoWaitAgents: with the etcd backend, a change of routing returns once
	// the state is written, without waiting for the agents. Default false.
	NoWaitAgents bool
	// AgentsTimeout overrides state.agents_timeout. Default 0: the config's.
	AgentsTimeout time.Duration
}

// Phase is one step of a workflow, for progress display.
type Phase struct {
	Step    string // "starting", "waiting", "healthy", "switching", "done", "failed"
	Color   config.Color
	Elapsed time.Duration // since the workflow began
	Detail  string
}

// Orchestrator runs the workflows of one service.
type Orchestrator struct {
	cfg   *config.Config
	svc   *config.Service
	store stateStore
	// statePath is the state file, as the config names it.
	statePath string
	lb        lb.Balancer
	// sys is the host: processes, ports, health probes.
	sys  osEnv
	opts Options
	log  *slog.Logger
	// stateAbs is the state file's absolute path, part of the marker in
	// the environment of every process bgd starts for this service.
	stateAbs string
	// units runs the slots as systemd units (runner: systemd); nil: bgd
	// runs them as detached processes itself.
	units *slots.Systemd
	// etcd is the state backend in etcd, nil with the file backend.
	etcd *etcdState
}

// New returns the orchestrator of the named service ("" for the only one).
func New(cfg *config.Config, service string, opts Options) (*Orchestrator, error) {
	svc, err := cfg.Service(service)
	if err != nil {
		return nil, err
	}
	var store stateStore = fileStore{&state.Store{Path: cfg.StatePath(svc.Name), BluePort: svc.Blue.Port, GreenPort: svc.Green.Port}}
	var etcd *etcdState
	bal := opts.Balancer
	if cfg.State.Etcd() {
		if etcd, err = dialEtcd(cfg.State, svc); err != nil {
			return nil, err
		}
		store = etcdStore{etcd.store}
		if bal == nil && !opts.LocalBalancer {
			bal = fleetBalancer(cfg, etcd.agents, opts)
		}
	}
	if bal == nil {
		if bal, err = newBalancer(cfg, svc, opts); err != nil {
			if etcd != nil {
				etcd.client.Close()
			}
			return nil, err
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	stateAbs, err := filepath.Abs(cfg.StatePath(svc.Name))
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	checker := &slots.Checker{Path: svc.Health.Path, Expect: svc.Health.ExpectStatus,
		RequestTimeout: svc.Health.RequestTimeout.D()}
	sys := realOS(checker, svc.HostOfPort)
	var units *slots.Systemd
	if svc.Runner == config.RunnerSystemd {
		units = &slots.Systemd{StopGrace: svc.StopGrace.D()}
		sys = systemdOS(sys, units)
	}
	return &Orchestrator{
		units:     units,
		stateAbs:  stateAbs,
		cfg:       cfg,
		svc:       svc,
		statePath: cfg.StatePath(svc.Name),
		store:     store,
		etcd:      etcd,
		lb:        bal,
		sys:       sys,
		opts:      opts,
		log:       logger.With("service", svc.Name),
	}, nil
}

// Service is the service this orchestrator runs.
func (o *Orchestrator) Service() *config.Service { return o.svc }

// StatePath is the service's state file.
func (o *Orchestrator) StatePath() string { return o.statePath }

// Balancer is the service's load balancer driver.
func (o *Orchestrator) Balancer() lb.Balancer { return o.lb }

// phase tells Options.Progress that the operation reached step.
func (p *op) phase(step string, color config.Color, detail string) {
	if p.o.opts.Progress != nil {
		p.o.opts.Progress(Phase{Step: step, Color: color, Elapsed: time.Since(p.began), Detail: detail})
	}
}

// sweepGrace is how long a mutating command waits for a health sweep's
// lock even with --lock-timeout 0.
const sweepGrace = 2 * time.Second

// op is one running mutating workflow: the lock, the state as loaded, and
// when it began (for progress and the result's duration).
type op struct {
	o     *Orchestrator
	lock  heldLock
	st    *state.State
	began time.Time
	// interrupted is the operation begin found left in progress (and
	// recorded as failed), nil if none.
	interrupted *state.Operation
	// drained is the drain before a slot that served traffic was stopped
	// (stopServed), nil if none.
	drained *Drain
	// analysis is the last watch of a new slot (a canary step), nil if none.
	analysis *Analysis
	// agents is what the load-balancer hosts did with the last flip (the
	// etcd backend), nil if none; lagging is the flip's error when some
	// did not apply it, which end returns.
	agents  *fleet.Convergence
	lagging error
}

// noteAgents keeps what the agents did with the flip just made.
func (p *op) noteAgents() {
	if fb, ok := p.o.lb.(*fleet.Balancer); ok {
		p.agents = fb.Last()
	}
}

// begin takes the lock, loads the state, records a previous operation that
// never finished, and marks this one in progress.
func (o *Orchestrator) begin(ctx context.Context, name string, from, to config.Color) (*op, error) {
	began := time.Now()
	cmd := o.opts.Command
	if cmd == "" {
		cmd = name
	}
	lock, err := o.store.Lock(ctx, cmd, o.opts.LockTimeout)
	var held *state.LockedError
	if errors.As(err, &held) && held.Command == sweepCommand && o.opts.LockTimeout < sweepGrace {
		// A health sweep holds the lock for a few milliseconds; an operator's
		// command should not fail because a timer fired at the same moment.
		lock, err = o.store.Lock(ctx, cmd, sweepGrace)
	}
	if err != nil {
		return nil, err
	}
	lock.RemoveStaleTemps()
	st, err := o.store.Load()
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	o.syncUnits(st)
	left := st.InProgress
	if left != nil {
		st.Record(interrupted(left))
		o.log.Warn("previous operation was interrupted", "command", left.Command, "pid", left.PID)
	}
	st.InProgress = &state.Operation{Command: cmd, PID: os.Getpid(), Started: state.Now(), From: from, To: to}
	if err := o.store.Save(st); err != nil {
		lock.Unlock()
		return nil, err
	}
	return &op{o: o, lock: lock, st: st, began: began, interrupted: left}, nil
}

// interrupted is the history record of an operation that never finished:
// the next one (or reconcile) finds it still marked in progress.
func interrupted(p *state.Operation) state.Event {
	return state.Event{Action: p.Command, From: p.From, To: p.To, Status: state.StatusFailed,
		Reason: fmt.Sprintf("interrupted: %s (pid %d) started at %s and never finished", p.Command, p.PID, p.Started.Format(time.RFC3339))}
}

// interruptedNote says what was done with an operation found interrupted.
func interruptedNote(p *state.Operation) string {
	return fmt.Sprintf("%s (pid %d) was interrupted: recorded as failed", p.Command, p.PID)
}

// save writes the state as it is now (still in progress).
func (p *op) save() error { return p.o.store.Save(p.st) }

// end clears the in-progress mark, saves and unlocks. The error returned is
// err, or the save's error when err is nil. When both failed, the save's
// error is told in the message, while err alone decides what the error
// matches (the exit code is the operation's).
func (p *op) end(err error) error {
	if err == nil && p.lagging != nil {
		err = failure(p.lagging)
	}
	p.st.InProgress = nil
	serr := p.o.store.Save(p.st)
	p.lock.Unlock()
	switch {
	case err == nil:
		return serr
	case serr != nil:
		return fmt.Errorf("%w; saving the state failed too: %v", err, serr)
	}
	return err
}

// route is the routing that sends traffic to color: all of it, or, while
// the state records a canary of the other colour, all but the canary's
// weight; with a copy of each request to the other colour while the state
// records shadow traffic.
func (o *Orchestrator) route(st *state.State, color config.Color) lb.Route {
	other := color.Other()
	r := lb.Route{
		Service:    o.svc.Name,
		Active:     lb.Upstream{Color: color, Host: o.svc.Host(color), Port: st.Slot(color).Port},
		Standby:    lb.Upstream{Color: other, Host: o.svc.Host(other), Port: st.Slot(other).Port},
		HealthPath: o.svc.Health.Path,
		Generation: st.Generation + 1,
		Shadow:     st.Shadow,
	}
	if c := st.Canary; c != nil && c.Color == other {
		r.Active.Weight, r.Standby.Weight, r.Sticky = 100-c.Weight, c.Weight, c.Sticky
	}
	o.applyHolds(st, &r)
	return r
}

// kindError reads as its own message and matches kind with errors.Is, so
// messages need no "operation failed:" prefix to carry their exit code.
type kindError struct {
	kind error
	err  error
}

func (k kindError) Error() string        { return k.err.Error() }
func (k kindError) Unwrap() error        { return k.err }
func (k kindError) Is(target error) bool { return target == k.kind }

// failure marks err as ErrFailed.
func failure(err error) error { return kindError{ErrFailed, err} }

// failf formats like fmt.Errorf (with %w) and marks the result ErrFailed.
func failf(format string, args ...any) error { return failure(fmt.Errorf(format, args...)) }

// usagef formats like fmt.Errorf and marks the result ErrUsage.
func usagef(format string, args ...any) error {
	return kindError{ErrUsage, fmt.Errorf(format, args...)}
}
