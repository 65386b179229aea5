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

// serving runs Until, with grace, on a loopback listener of a server
// that answers every request after hold; started gets a value when a
// request has come in, done Until's result.
func serving(t *testing.T, hold, grace time.Duration) (addr string, started <-chan struct{}, cancel func(), done <-chan error) {
	ln := listen(t)
	in := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		time.Sleep(hold)
		io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- Until(ctx, srv, ln, grace) }()
	return ln.Addr().String(), in, cancel, errc
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
	addr, started, cancel, done := serving(t, 200*time.Millisecond, 5*time.Second)
	answer := get("http://" + addr + "/")
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
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts connections after shutdown")
	}
}

// TestUntilCutsOffAfterGrace: a request still running when the grace ends
// is cut off, and that is not an error.
func TestUntilCutsOffAfterGrace(t *testing.T) {
	addr, started, cancel, done := serving(t, 3*time.Second, 50*time.Millisecond)
	answer := get("http://" + addr + "/")
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
