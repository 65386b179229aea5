package fsx

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// WriteFileAtomic replaces path with data so that readers see the old or the
// new content, never a mix, and the change survives a crash once it returns.
// A missing directory is created (0750).
//
// No write can be redirected by a planted link: the temp file is created
// with O_CREAT|O_EXCL|O_NOFOLLOW (an existing name, symlink or not, is
// never opened: another name is tried), and rename(2) replaces the
// directory entry at path, so if path is a symlink the link itself is
// replaced by the new file and its target is left untouched.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	prefix := tempPrefix(path)
	tmp, err := createTemp(dir, prefix)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create directory for %s: %w", path, err)
		}
		tmp, err = createTemp(dir, prefix)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: open dir for fsync: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync dir: %w", path, err)
	}
	return nil
}

// RemoveTemps deletes the temp files WriteFileAtomic of path left behind
// when its writer was killed. Call it only while holding whatever lock
// serialises the writers of path: a temp file of a live writer would go too.
func RemoveTemps(path string) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), globEscape(tempPrefix(path))+"*"))
	for _, p := range stale {
		os.Remove(p)
	}
}

// tempPrefix names the temp files of path: hidden, beside it.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// globEscape quotes the metacharacters of filepath.Match.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// tempSuffix makes the random part of a temp file's name; a test replaces
// it to make the name collide with a planted file.
var tempSuffix = func() string { return strconv.FormatUint(uint64(rand.Uint32()), 10) }

// createTemp is os.CreateTemp with the guarantee spelled out and O_NOFOLLOW
// added: O_CREAT|O_EXCL never opens an existing file, and fails with EEXIST
// on a symlink rather than following it (POSIX), so a name planted in the
// directory (a link to /etc/shadow) is skipped, never written through.
func createTemp(dir, prefix string) (*os.File, error) {
	for try := 0; ; try++ {
		name := filepath.Join(dir, prefix+tempSuffix())
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, fs.ErrExist) && try < 100 {
			continue
		}
		return f, err
	}
}
