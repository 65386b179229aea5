// Package lbtest holds the checks the load-balancer drivers' tests share:
// golden files of rendered configurations, and a route refused for a
// missing capability. Only tests import it.
package lbtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/lb"
)

// Golden compares got with testdata/<name>.golden; with update it first
// rewrites the file from got (run the test with -update after changing a
// template, and read the diff).
func Golden(t testing.TB, name string, got []byte, update bool) {
	t.Helper()
	golden := filepath.Join("testdata", name+".golden")
	if update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered output differs from %s (run with -update if the change is meant):\n%s", golden, got)
	}
}

// Refuses checks that b's Flip and Render both refuse r with an
// *lb.UnsupportedError naming driver and feature, in a message that says so.
func Refuses(t testing.TB, b lb.Balancer, r lb.Route, driver string, feature lb.Feature) {
	t.Helper()
	for op, call := range map[string]func() error{
		"Flip":   func() error { return b.Flip(context.Background(), r) },
		"Render": func() error { _, err := b.Render(r); return err },
	} {
		err := call()
		var ue *lb.UnsupportedError
		if !errors.Is(err, lb.ErrUnsupported) || !errors.As(err, &ue) || ue.Driver != driver || ue.Feature != feature {
			t.Errorf("%s = %v, want the %s driver refusing %q", op, err, driver, feature)
		} else if !strings.Contains(err.Error(), driver+" driver does not support "+string(feature)) {
			t.Errorf("%s: message %q names neither driver nor feature", op, err)
		}
	}
}
