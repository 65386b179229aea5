// Package lbtest holds what the load-balancer drivers' tests share: golden
// files of rendered configurations, a route refused for a missing
// capability, and a unix socket speaking a line protocol (HAProxy's runtime
// API). Only tests import it.
package lbtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// Route is the drivers' test route of service "app": active on its
// colour's default port (blue 5005, green 5006), the other colour standby,
// both on lb.LocalHost, changed by each of change in turn.
func Route(active config.Color, generation uint64, change ...func(*lb.Route)) lb.Route {
	r := lb.SampleRoute("app")
	if active != r.Active.Color {
		r.Active, r.Standby = r.Standby, r.Active
	}
	r.Generation = generation
	for _, f := range change {
		f(&r)
	}
	return r
}

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

// ServeLines serves the unix socket path until the test ends, the way
// HAProxy's runtime API does: each connection sends one command line, and
// handle answers it on c (r holds what the client sent after the line);
// then the connection is closed. Each connection has a 5 s deadline; a
// handler that never answers can wait for t.Context() to end.
func ServeLines(t testing.TB, path string, handle func(c net.Conn, r *bufio.Reader, cmd string)) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				if line, err := r.ReadString('\n'); err == nil {
					handle(c, r, strings.TrimSuffix(line, "\n"))
				}
			})
		}
	})
}
