package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// Micro benchmarks of the hot paths, in-process: they run only with -bench
// (go test -run '^$' -bench . ./integration/); make test only compiles them.

var benchProxies atomic.Int64

// BenchmarkProxyServeHTTP is one request through the builtin proxy's
// handler to a slot that answers at once (an httptest server), without the
// client side of a network round trip.
func BenchmarkProxyServeHTTP(b *testing.B) {
	slot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Slot", "blue")
		io.WriteString(w, "demo app: color=blue release=bench\n")
	}))
	defer slot.Close()
	_, portText, _ := net.SplitHostPort(slot.Listener.Addr().String())
	bluePort, _ := strconv.Atoi(portText)
	p := &builtin.Proxy{
		Service:   fmt.Sprintf("bench%d", benchProxies.Add(1)),
		Listen:    fmt.Sprintf("127.0.0.1:%d", freePort(b)),
		StatePath: filepath.Join(b.TempDir(), "bg_state.json"), // absent: blue on BluePort
		BluePort:  bluePort, GreenPort: freePort(b),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("proxy Run: %v", err)
		}
	}()
	route := &builtin.Balancer{Listen: p.Listen}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := route.Route(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the proxy never served its route")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK || rec.Header().Get("X-Slot") != "blue" {
			b.Fatalf("status %d, X-Slot %q: %s", rec.Code, rec.Header().Get("X-Slot"), rec.Body)
		}
	}
}

// BenchmarkListenerOf finds the process listening on a port from /proc, as
// bgd does before it starts a slot.
func BenchmarkListenerOf(b *testing.B) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(b)))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	b.Run("listening", func(b *testing.B) {
		for b.Loop() {
			if owner, ok := slots.ListenerOf(port); !ok || owner.PID != os.Getpid() {
				b.Fatalf("ListenerOf(%d) = %+v, %v; want this process", port, owner, ok)
			}
		}
	})
	free := freePort(b)
	b.Run("free", func(b *testing.B) {
		for b.Loop() {
			if _, ok := slots.ListenerOf(free); ok {
				b.Fatalf("ListenerOf(%d) found a listener", free)
			}
		}
	})
}

// BenchmarkStateDecode decodes a state file as bgd writes it, and the seed
// (Python) tool's, which needs normalising.
func BenchmarkStateDecode(b *testing.B) {
	store := &state.Store{Path: filepath.Join(b.TempDir(), "bg_state.json")}
	if err := store.Save(state.New(20001, 20002)); err != nil {
		b.Fatal(err)
	}
	saved, err := os.ReadFile(store.Path)
	if err != nil {
		b.Fatal(err)
	}
	seed, err := os.ReadFile("../state/testdata/python_seed.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"bgd", saved}, {"python_seed", seed}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := state.Decode(c.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
