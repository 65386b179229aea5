package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/bgd-dev/bgd/internal/fsx"
)

var (
	// ErrLocked: another bgd operation holds the lock (exit 3).
	ErrLocked = errors.New("another bgd operation holds the lock")
	// ErrCorrupt: the state file cannot be decoded; it is left untouched.
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrUnusable: the state path cannot hold a state file (a directory, a
	// FIFO, a device, an unwritable place); nothing was created (exit 2).
	ErrUnusable = errors.New("state path is unusable")
)

// LockedError says who holds the lock.
type LockedError struct {
	// Path is what is locked: the state file, or the etcd key of a shared
	// state's lock.
	Path    string
	PID     int
	Command string
	// Host is the holder's host when the lock is shared between hosts;
	// empty for a state file's lock (always this host's).
	Host string
}

func (e *LockedError) Error() string {
	holder := "an unknown process"
	if e.PID > 0 {
		holder = fmt.Sprintf("pid %d (%s)", e.PID, e.Command)
	}
	if e.Host != "" {
		holder += " on host " + e.Host
	}
	return fmt.Sprintf("%s is locked by %s: wait for it to finish, or retry with --lock-timeout", e.Path, holder)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// Store is one service's state file and its lock file (<path>.lock).
type Store struct {
	// Path of the JSON file.
	Path string
	// BluePort and GreenPort seed a state file that does not exist yet.
	BluePort, GreenPort int
}

// Load reads the state without locking: writes are atomic renames, so a
// reader sees either the old or the new file. A missing file gives New(),
// if a state file could be created there. A path that cannot hold a state
// file (a directory, FIFO, device, socket, a path under a regular file) is
// an ErrUnusable error; Load never blocks on it and creates nothing. A
// symlink to a regular file is read through (Lock and Save refuse it).
func (s *Store) Load() (*State, error) {
	data, err := readRegular(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := checkDir(s.Path, false); err != nil {
			return nil, err
		}
		return New(s.BluePort, s.GreenPort), nil
	}
	if errors.Is(err, ErrUnusable) || errors.Is(err, ErrCorrupt) {
		return nil, err
	}
	if err != nil {
		return nil, pathErr(s.Path, "read", err)
	}
	return s.decode(data)
}

// Exists reports whether the state file is there.
func (s *Store) Exists() bool {
	_, err := os.Stat(s.Path)
	return err == nil
}

func (s *Store) decode(data []byte) (*State, error) {
	st, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v; it was left as it is: run `bgd reconcile` to rebuild it from what is running (the bad file is kept beside it)", ErrCorrupt, s.Path, err)
	}
	return st, nil
}

// Decode parses a state file strictly: unknown fields, duplicate keys, keys
// that match a field only case-insensitively, a missing or wrong
// active_version, bad ports or pids, or trailing data are errors.
// Timestamps the original Python tool wrote without a zone are read as UTC.
func Decode(data []byte) (*State, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("the file is empty")
	}
	data, err := normalize(data)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, errors.New("trailing data after the JSON object")
	}
	if !st.ActiveVersion.Valid() {
		return nil, fmt.Errorf("active_version is %q, want blue or green", st.ActiveVersion)
	}
	for _, p := range []int{st.BluePort, st.GreenPort} {
		if p < 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range", p)
		}
	}
	if err := validate(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Save writes st atomically: a temp file in the same directory, fsync,
// rename over the old file, fsync of the directory. rename(2) is atomic on
// POSIX file systems, so readers never see a torn file. A path that cannot
// hold a state file, or is a symlink, is refused with ErrUnusable before
// anything is created.
func (s *Store) Save(st *State) error {
	if err := checkStatePath(s.Path, true); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := fsx.WriteFileAtomic(s.Path, append(data, '\n'), 0o600); err != nil {
		if isUnusableErrno(err) {
			return unusable(s.Path, fmt.Sprintf("cannot be written (%v)", unwrapErrno(err)),
				"the previous state file is intact: make "+filepath.Dir(s.Path)+" writable, or "+chooseAnother)
		}
		return fmt.Errorf("save state: %w; the previous state file is intact: make %s writable (or free space), then retry", err, filepath.Dir(s.Path))
	}
	return nil
}

// Lock is a held exclusive lock on a state file.
type Lock struct {
	store *Store
	f     *os.File
}

// Lock takes the exclusive lock, waiting up to timeout (0: fail at once with
// a *LockedError naming the holder). The holder's pid and command are written
// into the lock file for that message. The lock is an flock(2), so it is
// released by the kernel if bgd dies.
func (s *Store) Lock(ctx context.Context, command string, timeout time.Duration) (*Lock, error) {
	// Check first, create after: a path that cannot hold a state file gets
	// no directory and no lock file.
	if err := checkStatePath(s.Path, true); err != nil {
		return nil, err
	}
	lockPath := s.Path + ".lock"
	if err := checkLockPath(lockPath); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o750); err != nil {
		if isUnusableErrno(err) {
			return nil, unusable(s.Path, fmt.Sprintf("cannot be created: its directory %s cannot be created (%v)", filepath.Dir(s.Path), unwrapErrno(err)),
				"create it yourself, or "+chooseAnother)
		}
		return nil, fmt.Errorf("create state directory %s: %w", filepath.Dir(s.Path), err)
	}
	// O_NOFOLLOW: a symlink planted after the check is refused (ELOOP),
	// never followed; O_NONBLOCK: a FIFO swapped in cannot block the open.
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o600)
	if err != nil {
		if isUnusableErrno(err) { // ELOOP included: a symlink planted after the check
			return nil, pathErr(lockPath, "created", err)
		}
		return nil, fmt.Errorf("lock state: %w: make %s writable, or choose another --state-file", err, filepath.Dir(s.Path))
	}
	if err := checkOpened(lockPath, f, true); err != nil {
		f.Close()
		return nil, err
	}
	if err := fsx.Flock(ctx, f, time.Now().Add(timeout)); err != nil {
		if errors.Is(err, fsx.ErrBusy) {
			holder := readHolder(f)
			f.Close()
			holder.Path = s.Path
			return nil, holder
		}
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	// The holder line only feeds the "locked by" message; the flock is the
	// lock, so the line is not worth an fsync on every command.
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d %s\n", os.Getpid(), command)
	}
	return &Lock{store: s, f: f}, nil
}

// RemoveStaleTemps deletes temp files a killed writer left behind. Every
// Save of this path runs under the lock, so while l is held, any temp file
// of the path belongs to a writer that is gone. The mutating workflows call
// it; the frequent health sweeps need not list the directory each time.
func (l *Lock) RemoveStaleTemps() {
	fsx.RemoveTemps(l.store.Path)
}

// readHolder reads the holder line from the open lock file (never by name:
// the name could have been replaced by something else since).
func readHolder(f *os.File) *LockedError {
	buf := make([]byte, 512)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	pidStr, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
	pid, _ := strconv.Atoi(pidStr)
	// The command reaches a terminal: no control characters from the file.
	cmd = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, cmd)
	return &LockedError{PID: pid, Command: cmd}
}

// Unlock releases the lock. Safe to call more than once.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	fsx.Unflock(l.f)
	l.f.Close()
	l.f = nil
}
