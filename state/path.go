package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bgd-dev/bgd/internal/fsx"
)

// maxStateSize bounds what Load reads: a state file is a few KiB (the
// history is capped at MaxHistory entries), so anything larger is not one,
// and /dev/zero or a huge file must fail fast instead of filling memory.
const maxStateSize = 4 << 20

// chooseAnother ends the messages about a path that cannot hold a state file.
const chooseAnother = "choose another --state-file (BG_STATE_FILE) or state_dir in the configuration"

// unusable is an ErrUnusable error: what is wrong with path, and what to do.
func unusable(path, problem, next string) error {
	return fmt.Errorf("%w: %s %s: %s", ErrUnusable, path, problem, next)
}

// notRegular is the error for a state or lock path of the wrong type.
func notRegular(path string, m fs.FileMode) error {
	return unusable(path, "is "+fsx.Kind(m)+", not a regular file", "move it away if nothing needs it, or "+chooseAnother)
}

// isUnusableErrno tells the errors that say "this place cannot hold a
// file" (as opposed to a full disk or an I/O error, which may pass).
func isUnusableErrno(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOTDIR) ||
		errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENAMETOOLONG) ||
		errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.ENODEV)
}

// pathErr turns an error from a file system call on path into an
// ErrUnusable when the place cannot hold a state file.
func pathErr(path, doing string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOTDIR):
		if err := checkDir(path, false); err != nil {
			return err // names the ancestor that is not a directory
		}
		return unusable(path, "cannot exist: a parent of it is not a directory", chooseAnother)
	case errors.Is(err, syscall.ELOOP):
		return unusable(path, "is a symbolic link (or a loop of them), which bgd does not follow here", "remove the link, or "+chooseAnother)
	case isUnusableErrno(err):
		next := "make its directory writable, run bgd as a user that may write there (root), or " + chooseAnother
		if doing == "read" {
			next = "run bgd as a user that may read it (root), or " + chooseAnother
		}
		return unusable(path, fmt.Sprintf("cannot be %s (%v)", doing, unwrapErrno(err)), next)
	}
	return fmt.Errorf("%s %s: %w", doing, path, err)
}

// unwrapErrno gives the bare reason of a *PathError ("permission denied").
func unwrapErrno(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkDir checks that the directory of a state path exists or can be
// created: its nearest existing ancestor is a directory (through symlinks:
// a symlinked state_dir is fine), and, for a write, one bgd may write in.
// It creates nothing.
func checkDir(path string, write bool) error {
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case err == nil && !fi.IsDir():
			return unusable(path, fmt.Sprintf("cannot be created: %s is %s, not a directory", d, fsx.Kind(fi.Mode())), chooseAnother)
		case err == nil:
			if !write {
				return nil
			}
			// access(2) checks the real ids; bgd is not setuid, so they are
			// the ones the kernel checks on create. As root this passes
			// almost everywhere; a read-only mount says EROFS, and a place
			// like /sys is caught by the failing create, which is mapped to
			// ErrUnusable too.
			if err := syscall.Access(d, wOK|xOK); err != nil {
				return unusable(path, fmt.Sprintf("cannot be written: directory %s is not writable (%v)", d, err),
					"make it writable, run bgd as its owner, or "+chooseAnother)
			}
			return nil
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			// Look further up: the first existing ancestor decides.
		default:
			return pathErr(path, "reached", err)
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// access(2) modes.
const (
	wOK = 0x2
	xOK = 0x1
)

// checkStatePath checks, without creating or opening anything, that path
// can hold bgd's state file: it is missing or a regular file, and its
// directory exists or can be created. For a write (Lock, Save) the path
// must not be a symbolic link and the directory must be writable. For a
// read a symlink is followed to a regular file: reading through it is
// harmless, and Load opens what it finds without blocking anyway.
func checkStatePath(path string, write bool) error {
	fi, err := os.Lstat(path)
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if write {
			target, _ := os.Readlink(path)
			return unusable(path, fmt.Sprintf("is a symbolic link (to %s)", target),
				"bgd replaces its state file by an atomic rename, which would replace the link itself and leave its target stale; "+
					"set --state-file or state_dir to where the real file is, or remove the link")
		}
		fi, err = os.Stat(path)
	}
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return notRegular(path, fi.Mode())
	case err == nil:
		if write {
			return checkDir(path, true)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return checkDir(path, write)
	}
	return pathErr(path, "read", err)
}

// checkLockPath: the lock file is missing or a regular file, never a
// symlink (the holder line is written into it, so a link to /etc/passwd
// would have root overwrite that file).
func checkLockPath(lockPath string) error {
	fi, err := os.Lstat(lockPath)
	switch {
	case err == nil && fi.Mode()&fs.ModeSymlink != 0:
		target, _ := os.Readlink(lockPath)
		return unusable(lockPath, fmt.Sprintf("is a symbolic link (to %s); bgd writes into its lock file and will not follow a link", target),
			"remove the link if it is yours (nothing else should create it), or "+chooseAnother)
	case err == nil && !fi.Mode().IsRegular():
		return notRegular(lockPath, fi.Mode())
	case err == nil || errors.Is(err, fs.ErrNotExist):
		return nil
	}
	return pathErr(lockPath, "read", err)
}

// checkOpened refuses an opened file that is not a regular file with a
// single name: a FIFO, device or hard link swapped in after the checks.
func checkOpened(path string, f *os.File, oneLink bool) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return notRegular(path, fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && oneLink && st.Nlink > 1 {
		return unusable(path, fmt.Sprintf("has %d hard links: another name shares this file, and bgd writes into it", st.Nlink),
			"remove it if it is yours, or "+chooseAnother)
	}
	return nil
}

// readRegular reads a state file without ever blocking or filling memory
// (see fsx.ReadRegular). A missing file is fs.ErrNotExist, unwrapped.
func readRegular(path string) ([]byte, error) {
	data, err := fsx.ReadRegular(path, maxStateSize)
	var nr *fsx.NotRegularError
	var tl *fsx.TooLargeError
	switch {
	case errors.As(err, &nr):
		return nil, notRegular(path, nr.Mode)
	case errors.As(err, &tl):
		return nil, fmt.Errorf("%w: %s is larger than %d MiB, which no state file is; it was left as it is: run `bgd reconcile` to rebuild it, or %s",
			ErrCorrupt, path, maxStateSize>>20, chooseAnother)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	return data, err
}
