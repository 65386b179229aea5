package fsx

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTempFileNotRedirected: a symlink planted under the very name the
// temp file gets is skipped (O_CREAT|O_EXCL|O_NOFOLLOW), never written
// through, and the write still succeeds under another name.
func TestTempFileNotRedirected(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "shadow")
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bg_state.json")
	planted := filepath.Join(dir, ".bg_state.json.tmp-1")
	if err := os.Symlink(victim, planted); err != nil {
		t.Fatal(err)
	}
	names := []string{"1", "1", "2"} // the planted name first, twice
	old := tempSuffix
	t.Cleanup(func() { tempSuffix = old })
	tempSuffix = func() string {
		n := names[0]
		if len(names) > 1 {
			names = names[1:]
		}
		return n
	}
	if err := WriteFileAtomic(path, []byte("new\n"), 0o600); err != nil {
		t.Fatalf("WriteFileAtomic with a planted temp name = %v, want success under another name", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "secret\n" {
		t.Errorf("the planted link's target was written: %q", got)
	}
	if fi, err := os.Lstat(planted); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the planted link was changed")
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "new\n" {
		t.Errorf("after WriteFileAtomic the file holds %q, %v", got, err)
	}
}

// TestWriteFileAtomicFailure: when the directory cannot be written, the
// error names the file and nothing is left behind.
func TestWriteFileAtomicFailure(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(notDir, "bg_state.json")
	err := WriteFileAtomic(target, []byte("{}"), 0o600)
	if err == nil || !strings.Contains(err.Error(), target) {
		t.Errorf("WriteFileAtomic under a file = %v, want an error naming %s", err, target)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after a failed write, want only the file", len(entries))
	}
}

// TestWriteFileAtomicModeAndDir: the file gets perm, and a missing
// directory is created.
func TestWriteFileAtomicModeAndDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "f.map")
	if err := WriteFileAtomic(path, []byte("a b\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", fi.Mode(), err)
	}
}

// TestRemoveTemps removes the temp files of one path only, whatever glob
// metacharacters its name holds.
func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a[1]*.json")
	stale := filepath.Join(dir, ".a[1]*.json.tmp-123")
	other := filepath.Join(dir, ".a1x.json.tmp-123")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	RemoveTemps(path)
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another path's temp file was removed: %v", err)
	}
}

// TestFlock: a second open file of the same lock waits, gives up with
// ErrBusy at its deadline or when its context ends, and gets the lock once
// the first holder lets go.
func TestFlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	ctx := context.Background()
	if err := Flock(ctx, a, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := Flock(ctx, b, time.Now()); !errors.Is(err, ErrBusy) {
		t.Errorf("Flock of a held lock, no wait = %v, want ErrBusy", err)
	}
	start := time.Now()
	if err := Flock(ctx, b, start.Add(30*time.Millisecond)); !errors.Is(err, ErrBusy) || time.Since(start) < 30*time.Millisecond {
		t.Errorf("Flock of a held lock with a deadline = %v after %s, want ErrBusy after 30ms", err, time.Since(start))
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := Flock(cctx, b, time.Time{}); !errors.Is(err, ErrBusy) {
		t.Errorf("Flock of a held lock until ctx ends = %v, want ErrBusy", err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(20 * time.Millisecond)
		Unflock(a)
	}()
	if err := Flock(ctx, b, time.Time{}); err != nil {
		t.Errorf("Flock after the holder let go = %v", err)
	}
	// The kernel's lock release is no Go synchronisation: wait for the
	// goroutine before the clean-up closes a.
	<-released
}
