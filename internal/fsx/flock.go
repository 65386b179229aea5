package fsx

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// ErrBusy: another holder kept the lock for as long as Flock could wait.
var ErrBusy = errors.New("locked by another process")

// pollInterval is the pause between two tries of a taken lock.
const pollInterval = 5 * time.Millisecond

// Flock takes an exclusive flock(2) on f, trying again every few
// milliseconds while another holder has it. It gives up with ErrBusy once
// ctx is done or deadline has passed (a deadline already passed: one try; the
// zero time: no deadline but ctx's).
// Any other failure is flock's errno, as it is. The lock lasts until Unflock
// or until f (every descriptor of its open file) is closed, which the kernel
// does for a process that dies.
func Flock(ctx context.Context, f *os.File, deadline time.Time) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if (!deadline.IsZero() && time.Now().After(deadline)) || ctx.Err() != nil {
			return ErrBusy
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

// Unflock releases a lock Flock took; f stays open.
func Unflock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
