package serve

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// listen opens a loopback listener on a port the kernel picks (these tests
// never need to know it in advance).
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// slowServer answers every request after hold, and reports on started
// when a request has come in.
func slowServer(hold time.Duration, started chan<- struct{}) *http.Server {
	return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		time.Sleep(hold)
		io.WriteString(w, "done")
	})}
}

type result struct {
	body string
	err  error
}

func get(url string) <-chan result {
	c := make(chan result, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			c <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		c <- result{string(b), err}
	}()
	return c
}

// TestUntilLetsInFlightRequestsFinish: cancelling the context while a
// request is in flight stops new connections, lets the request finish
// within the grace, and returns nil.
func TestUntilLetsInFlightRequestsFinish(t *testing.T) {
	ln := listen(t)
	started := make(chan struct{}, 1)
	srv := slowServer(200*time.Millisecond, started)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Until(ctx, srv, ln, 5*time.Second) }()
	answer := get("http://" + ln.Addr().String() + "/")
	<-started
	cancel()
	if r := <-answer; r.err != nil || r.body != "done" {
		t.Errorf("request in flight at shutdown: %q, %v; want it answered", r.body, r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Until = %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Until did not return after its context ended")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts connections after shutdown")
	}
}

// TestUntilCutsOffAfterGrace: a request still running when the grace ends
// is cut off, and that is not an error.
func TestUntilCutsOffAfterGrace(t *testing.T) {
	ln := listen(t)
	started := make(chan struct{}, 1)
	srv := slowServer(3*time.Second, started)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Until(ctx, srv, ln, 50*time.Millisecond) }()
	answer := get("http://" + ln.Addr().String() + "/")
	<-started
	t0 := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Until = %v, want nil when the grace ran out", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("Until returned %s after cancel, want about the 50ms grace", d)
	}
	if r := <-answer; r.err == nil {
		t.Errorf("the request outliving the grace was answered %q, want it cut off", r.body)
	}
}

// TestUntilReturnsServeError: a listener that fails makes Until return
// Serve's error at once, without waiting for the context.
func TestUntilReturnsServeError(t *testing.T) {
	ln := listen(t)
	ln.Close()
	err := Until(context.Background(), &http.Server{}, ln, time.Second)
	if err == nil || err == http.ErrServerClosed {
		t.Errorf("Until on a closed listener = %v, want the accept error", err)
	}
}
