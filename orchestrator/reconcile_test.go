package orchestrator_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestReconcileKeepsAHugeCorruptFileAside: a corrupt state file far larger
// than any state is copied aside by streaming (not read into memory) and
// the state rebuilt.
func TestReconcileKeepsAHugeCorruptFileAside(t *testing.T) {
	o, store := newOrch(t, &fakeLB{})
	const size = 32 << 20 // 8x the largest state file Load reads
	f, err := os.Create(store.Path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("{garbage")
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rec, err := o.Reconcile(context.Background())
	if err != nil {
		t.Fatalf("reconcile of a huge corrupt file: %v", err)
	}
	fi, err := os.Stat(rec.KeptCorrupt)
	if err != nil || fi.Size() != size || filepath.Dir(rec.KeptCorrupt) != filepath.Dir(store.Path) {
		t.Fatalf("kept aside at %q: %v (size %v), want the whole file beside the state", rec.KeptCorrupt, err, fi)
	}
	if _, err := store.Load(); err != nil {
		t.Errorf("the rebuilt state does not load: %v", err)
	}
}
