package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/internal/fsx"
)

// checkMapFile makes sure the map file exists on this host before anything
// changes: HAProxy reads it at every start, so a flip bgd cannot write there
// would be undone by the next reload.
func (b *Balancer) checkMapFile(backend string) error {
	fi, err := os.Stat(b.cfg.MapFile)
	if err != nil {
		return fmt.Errorf("%w: %v; HAProxy loads this file at start and bgd rewrites it after each flip, so it must exist on this host (create it with the line %q)",
			ErrMapFile, err, b.service+" "+backend)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrMapFile, b.cfg.MapFile)
	}
	return nil
}

// persist sets the service's line of the map file to value, keeping every
// other line (other services, comments) as it is, and writes the file
// atomically. Services sharing the file serialise on a lock of its
// directory, so none loses another's line.
func (b *Balancer) persist(ctx context.Context, value string) error {
	return b.persistKey(ctx, b.service, value)
}

// persistKey is persist for any key of the map file (the service's
// maintenance and preview entries too).
func (b *Balancer) persistKey(ctx context.Context, key, value string) error {
	unlock, err := lockDir(ctx, filepath.Dir(b.cfg.MapFile))
	if err != nil {
		return err
	}
	defer unlock()
	fi, err := os.Stat(b.cfg.MapFile)
	if err != nil {
		return fmt.Errorf("map file: %w", err)
	}
	old, err := os.ReadFile(b.cfg.MapFile)
	if err != nil {
		return fmt.Errorf("map file: %w", err)
	}
	data, changed := setMapLine(old, key, value)
	if !changed {
		return nil
	}
	if err := fsx.WriteFileAtomic(b.cfg.MapFile, data, fi.Mode().Perm()); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// Keep the owner HAProxy (or its admin) gave the file; only root may.
		os.Chown(b.cfg.MapFile, int(st.Uid), int(st.Gid))
	}
	return nil
}

// setMapLine returns a map file whose entries for key (first field) are
// replaced by one "key value" line, at the place of the first; the key is
// appended when absent. Comments, blank lines and other keys are kept.
// changed is false when the file already says exactly that.
func setMapLine(data []byte, key, value string) (out []byte, changed bool) {
	want := key + " " + value
	text := string(data)
	lines := strings.SplitAfter(text, "\n")
	var b strings.Builder
	found := false
	for _, l := range lines {
		if l == "" {
			continue
		}
		body := strings.TrimRight(l, "\r\n")
		fields := strings.Fields(body)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || fields[0] != key {
			b.WriteString(l)
			continue
		}
		if found {
			changed = true // a duplicate of key: HAProxy would keep its first
			continue
		}
		found = true
		if body != want {
			changed = true
		}
		b.WriteString(want + "\n")
	}
	if !found {
		if text != "" && !strings.HasSuffix(text, "\n") {
			b.WriteString("\n")
		}
		b.WriteString(want + "\n")
		changed = true
	}
	return []byte(b.String()), changed
}

// lockDir takes an exclusive flock on dir (not on the map file, which is
// replaced by rename), waiting for it as long as ctx allows.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := fsx.Flock(ctx, f, time.Time{}); err != nil {
		f.Close()
		if errors.Is(err, fsx.ErrBusy) {
			return nil, fmt.Errorf("lock %s: another bgd is rewriting a map file there: %w", dir, ctx.Err())
		}
		return nil, fmt.Errorf("lock %s: %w", dir, &fs.PathError{Op: "flock", Path: dir, Err: err})
	}
	return func() { fsx.Unflock(f); f.Close() }, nil
}
