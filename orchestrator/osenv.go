package orchestrator

import (
	"context"
	"os"
	"time"

	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// osEnv is all the workflows ask of the host: the processes they start,
// recognise and signal, who listens on a port, and the slots' health. New
// fills it with the real functions (realOS); in-package tests replace
// fields to decide the subtle rules without processes (cloudflare/tableflip's
// env is the model). Keep it to what the workflows use.
type osEnv struct {
	// startProcess starts a slot detached (slots.StartProcess).
	startProcess func(slots.Spec) (*slots.Process, error)
	// stop ends a process bgd started, never another (slots.Stop).
	stop func(ctx context.Context, id slots.Identity, grace time.Duration) error
	// alive reports whether pid is a running process (not a zombie),
	// whoever it belongs to (slots.Alive).
	alive func(pid int) bool
	// check is nil when id's process runs and is bgd's (Identity.Check);
	// else an error matching slots.ErrGone or slots.ErrNotOurs.
	check func(id slots.Identity) error
	// identify returns the identity of a live process with the marker.
	identify func(pid int, marker []string) (slots.Identity, error)
	// findMarked lists the live group leaders carrying the marker.
	findMarked func(marker []string) []slots.Identity
	// startTime is a process's start time (recorded beside its pid).
	startTime func(pid int) (uint64, error)
	// getenv reads one variable of a process's environment.
	getenv func(pid int, key string) string
	// commandLine is a process's command line, for messages.
	commandLine func(pid int) string
	// listenerOf is who listens on a port (false: nobody).
	listenerOf func(port int) (slots.PortOwner, bool)
	// listensOn reports whether leader's process group holds port.
	listensOn func(leader, port int) (slots.PortOwner, bool)
	// inGroup reports whether pid is in the process group led by leader.
	inGroup func(pid, leader int) bool
	// logTail is the last n lines of a slot's log.
	logTail func(path string, n int) string
	// isDir reports whether a release's working directory exists.
	isDir func(path string) bool
	// probe sends one health check to the slot on port.
	probe func(ctx context.Context, port int) error
	// waitHealthy probes the slot on port until it is healthy (or not).
	waitHealthy func(ctx context.Context, port int, w slots.Wait) error
	// mainPID is a systemd unit's main process (0: none); nil with the
	// process runner.
	mainPID func(unit string) int
}

// realOS is the host itself, probing slots with checker on the host that
// hostOf names for a slot's port (where the load balancers reach it).
func realOS(checker *slots.Checker, hostOf func(port int) string) osEnv {
	return osEnv{
		startProcess: slots.StartProcess,
		stop:         slots.Stop,
		alive:        slots.Alive,
		check:        slots.Identity.Check,
		identify:     slots.Identify,
		findMarked:   slots.FindMarked,
		startTime:    slots.StartTime,
		getenv:       slots.Getenv,
		commandLine:  slots.CommandLine,
		listenerOf:   slots.ListenerOf,
		listensOn:    slots.ListensOn,
		inGroup:      slots.InGroup,
		logTail:      slots.LogTail,
		isDir: func(path string) bool {
			fi, err := os.Stat(path)
			return err == nil && fi.IsDir()
		},
		probe: func(ctx context.Context, port int) error { return checker.Probe(ctx, hostOf(port), port) },
		waitHealthy: func(ctx context.Context, port int, w slots.Wait) error {
			return checker.WaitHealthy(ctx, hostOf(port), port, w)
		},
	}
}

// stateStore is the service's state file as the workflows use it: a
// *state.Store (fileStore), or an in-memory one in tests.
type stateStore interface {
	Load() (*state.State, error)
	Save(*state.State) error
	// Lock takes the operation lock (see state.Store.Lock).
	Lock(ctx context.Context, command string, timeout time.Duration) (heldLock, error)
}

// heldLock is a taken operation lock.
type heldLock interface {
	// RemoveStaleTemps removes temporary files a killed writer left.
	RemoveStaleTemps()
	Unlock()
}

// fileStore is the state file on disk.
type fileStore struct{ s *state.Store }

func (f fileStore) Load() (*state.State, error) { return f.s.Load() }
func (f fileStore) Save(st *state.State) error  { return f.s.Save(st) }
func (f fileStore) Lock(ctx context.Context, command string, timeout time.Duration) (heldLock, error) {
	l, err := f.s.Lock(ctx, command, timeout)
	if err != nil {
		return nil, err
	}
	return l, nil
}
