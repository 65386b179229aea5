package state

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/fsx"
)

// within runs fn and fails the test if it has not returned after d: the
// operations under test must never block (the old Load blocked forever on
// a FIFO).
func within(t *testing.T, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %s: it blocks", what, d)
		return nil
	}
}

// tree lists every name under dir, to prove that nothing was created.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	sort.Strings(names)
	return names
}

// unusablePaths builds each kind of path that cannot hold a state file.
// readable: Load may still read it (only writing is impossible there).
type unusableCase struct {
	name     string
	path     string
	readable bool // Load succeeds (a missing file in an unwritable place)
	watch    string
}

func unusableCases(t *testing.T) []unusableCase {
	t.Helper()
	dir := t.TempDir()
	var cases []unusableCase
	add := func(name, path string, readable bool) {
		cases = append(cases, unusableCase{name: name, path: path, readable: readable, watch: dir})
	}

	d := filepath.Join(dir, "adir")
	if err := os.Mkdir(d, 0o750); err != nil {
		t.Fatal(err)
	}
	add("directory", d, false)

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A writer-less FIFO blocks a plain open for reading forever; if a
	// broken Load is stuck in it, this cleanup lets it go.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	add("FIFO", fifo, false)

	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	add("socket", sock, false)

	dev := filepath.Join(dir, "null")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o600, 1<<8|3); err == nil {
		add("character device", dev, false)
	} else {
		t.Logf("no device case: mknod: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	add("parent is a regular file", filepath.Join(file, "bg_state.json"), false)
	add("grandparent is a regular file", filepath.Join(file, "sub", "bg_state.json"), false)

	// An unwritable place. Root writes through any mode bits, so as root
	// use /sys, where even root may not create files.
	if os.Geteuid() == 0 {
		if fi, err := os.Stat("/sys/kernel"); err == nil && fi.IsDir() {
			cases = append(cases,
				unusableCase{name: "unwritable place (/sys)", path: "/sys/kernel/bgd-state-test.json", readable: true, watch: "/sys/kernel/bgd-state-test.json"},
				unusableCase{name: "unwritable place, missing dirs (/sys)", path: "/sys/kernel/bgd-state-test/sub/bg_state.json", readable: true, watch: "/sys/kernel/bgd-state-test"})
		}
	} else {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(ro, 0o700) })
		add("unwritable directory", filepath.Join(ro, "bg_state.json"), true)
		add("unwritable directory, missing dirs", filepath.Join(ro, "sub", "bg_state.json"), true)
	}
	return cases
}

// TestUnusableStatePath: a path that cannot hold a state file is refused
// by Load, Lock, Update and Save with ErrUnusable naming the path and what
// to do, at once, and nothing is created.
func TestUnusableStatePath(t *testing.T) {
	ctx := context.Background()
	for _, c := range unusableCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var before []string
			if c.watch != "" && !strings.HasPrefix(c.watch, "/sys/") {
				before = tree(t, c.watch)
			}
			s := &Store{Path: c.path, BluePort: 1, GreenPort: 2}
			ops := []struct {
				name string
				fn   func() error
			}{
				{"Load", func() error { _, err := s.Load(); return err }},
				{"Lock", func() error {
					l, err := s.Lock(ctx, "deploy", 0)
					l.Unlock()
					return err
				}},
				{"Update", func() error {
					return update(s, ctx, "deploy", 0, func(*State) error {
						t.Error("Update ran fn on an unusable path")
						return nil
					})
				}},
				{"Save", func() error { return s.Save(sample()) }},
			}
			for _, op := range ops {
				err := within(t, 3*time.Second, op.name, op.fn)
				if op.name == "Load" && c.readable {
					if err != nil {
						t.Errorf("Load = %v, want a new state (reading a missing file needs no write access)", err)
					}
					continue
				}
				if !errors.Is(err, ErrUnusable) {
					t.Errorf("%s = %v, want ErrUnusable", op.name, err)
					continue
				}
				for _, w := range []string{c.path, "--state-file"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s error %q does not name %q", op.name, err, w)
					}
				}
			}
			if strings.HasPrefix(c.watch, "/sys/") {
				if _, err := os.Lstat(c.watch); err == nil {
					t.Errorf("%s was created", c.watch)
				}
			} else if after := tree(t, c.watch); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("files were created:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// TestLoadDevZero: a state path that leads to an endless device fails at
// once instead of reading until memory runs out.
func TestLoadDevZero(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bg_state.json")
	if err := os.Symlink("/dev/zero", p); err != nil {
		t.Fatal(err)
	}
	s := &Store{Path: p}
	err := within(t, 3*time.Second, "Load", func() error { _, err := s.Load(); return err })
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "character device") {
		t.Errorf("Load of a link to /dev/zero = %v, want ErrUnusable naming a character device", err)
	}
}

// TestLoadHugeFile: a regular file larger than any state file is refused
// as corrupt without being read whole.
func TestLoadHugeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bg_state.json")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: a valid start, then 1 GiB of holes.
	f.WriteString(`{"active_version":"blue","deployment_history":[`)
	f.Truncate(1 << 30)
	f.Close()
	s := &Store{Path: p}
	err = within(t, 5*time.Second, "Load", func() error { _, err := s.Load(); return err })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "larger than 4 MiB") || !strings.Contains(err.Error(), p) {
		t.Errorf("Load of a 1 GiB file = %v, want ErrCorrupt saying it is larger than 4 MiB", err)
	}
	if fi, _ := os.Stat(p); fi.Size() != 1<<30 {
		t.Error("the huge file was changed")
	}
}

// TestLockFileSymlink: a <path>.lock that is a symlink (to /etc/passwd, say)
// is refused, and the file it points at is never truncated or written.
func TestLockFileSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "passwd")
	const content = "root:x:0:0:root:/root:/bin/bash\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Store{Path: filepath.Join(dir, "bg_state.json")}
	if err := os.Symlink(victim, s.Path+".lock"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Lock(context.Background(), "deploy", 0)
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), s.Path+".lock") {
		t.Errorf("Lock with a symlinked lock file = %v, want ErrUnusable naming the link", err)
	}
	err = update(s, context.Background(), "deploy", 0, func(*State) error { return nil })
	if !errors.Is(err, ErrUnusable) {
		t.Errorf("Update with a symlinked lock file = %v, want ErrUnusable", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != content {
		t.Errorf("the symlink's target was written: %q", got)
	}
	if s.Exists() {
		t.Error("a state file was created")
	}
}

// TestLockFileHardLink: a lock file that is another name of some file (a
// hard link to /etc/passwd) is refused too: bgd truncates and writes it.
func TestLockFileHardLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "passwd")
	const content = "root:x:0:0:root:/root:/bin/bash\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Store{Path: filepath.Join(dir, "bg_state.json")}
	if err := os.Link(victim, s.Path+".lock"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Lock(context.Background(), "deploy", 0)
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "hard links") {
		t.Errorf("Lock with a hard-linked lock file = %v, want ErrUnusable", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != content {
		t.Errorf("the other name's content was written: %q", got)
	}
}

// TestLockFileNotRegular: a lock path that is a FIFO or a directory is
// refused (an O_RDWR open of a FIFO succeeds, and flock works on it).
func TestLockFileNotRegular(t *testing.T) {
	for _, mk := range []struct {
		name string
		fn   func(string) error
		want string
	}{
		{"FIFO", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "named pipe"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "directory"},
	} {
		t.Run(mk.name, func(t *testing.T) {
			s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
			if err := mk.fn(s.Path + ".lock"); err != nil {
				t.Fatal(err)
			}
			err := within(t, 3*time.Second, "Lock", func() error {
				l, err := s.Lock(context.Background(), "deploy", 0)
				l.Unlock()
				return err
			})
			if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), mk.want) {
				t.Errorf("Lock = %v, want ErrUnusable naming %s", err, mk.want)
			}
		})
	}
}

// TestSymlinkedStateFile documents what bgd does with a state file that is
// a symlink: Load reads through it; Lock and Save refuse it (an
// atomic rename would replace the link, leaving its target stale, and two
// names would have two lock files); nothing is ever written to the target.
func TestSymlinkedStateFile(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	orig := sample()
	if err := (&Store{Path: real}).Save(orig); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(real)
	s := &Store{Path: filepath.Join(dir, "bg_state.json")}
	if err := os.Symlink(real, s.Path); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load()
	if err != nil || st.ActiveVersion != orig.ActiveVersion || st.Generation != orig.Generation {
		t.Errorf("Load through a symlink = %+v, %v; want the target's state", st, err)
	}
	if err := s.Save(New(1, 2)); !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Save to a symlink = %v, want ErrUnusable", err)
	}
	if _, err := s.Lock(context.Background(), "deploy", 0); !errors.Is(err, ErrUnusable) {
		t.Errorf("Lock of a symlinked state file = %v, want ErrUnusable", err)
	}
	if _, err := os.Lstat(s.Path + ".lock"); err == nil {
		t.Error("Lock created a lock file for a symlinked state file")
	}
	if fi, err := os.Lstat(s.Path); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the link was replaced")
	}
	if after, _ := os.ReadFile(real); string(after) != string(before) {
		t.Error("the link's target was written")
	}

	// Should a link appear after the checks, the rename replaces the
	// link, never its target: WriteFileAtomic on a symlink shows it.
	if err := fsx.WriteFileAtomic(s.Path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(s.Path); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("after WriteFileAtomic the path is %v, %v; want a regular file in place of the link", fi.Mode(), err)
	}
	if after, _ := os.ReadFile(real); string(after) != string(before) {
		t.Error("WriteFileAtomic wrote through the link into its target")
	}
}
