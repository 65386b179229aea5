package slots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// redirectingSlot answers /health with a redirect to /target, a 200 page.
// It counts the requests for /target.
func redirectingSlot(t *testing.T, code int) (port int, targetHits *atomic.Int32) {
	t.Helper()
	targetHits = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			http.Redirect(w, r, "/target", code)
		case "/target":
			targetHits.Add(1)
			io.WriteString(w, "ok")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return serverPort(t, srv), targetHits
}

// A slot that answers its health path with a redirect is not healthy by
// default, whatever the redirect's target answers: the probe does not follow
// it. With expect_status set to the redirect's code it is healthy.
func TestProbeDoesNotFollowRedirects(t *testing.T) {
	for _, code := range []int{http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			port, hits := redirectingSlot(t, code)
			for _, tc := range []struct {
				name string
				c    Checker
			}{
				{"default client", Checker{Path: "/health"}},
				// A caller's client that follows redirects is not allowed to here.
				{"caller's client", Checker{Path: "/health", Client: &http.Client{}}},
			} {
				err := tc.c.Probe(context.Background(), "127.0.0.1", port)
				var pe *ProbeError
				if !errors.As(err, &pe) || !errors.Is(err, ErrNotHealthy) || pe.Status != code {
					t.Errorf("%s: Probe of a %d to a 200 page = %v, want not healthy with status %d", tc.name, code, err, code)
				}
				tc.c.Expect = code
				if err := tc.c.Probe(context.Background(), "127.0.0.1", port); err != nil {
					t.Errorf("%s: Probe with expect_status %d = %v, want healthy", tc.name, code, err)
				}
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the redirect target was fetched %d times, want never", n)
			}
		})
	}
}

// The probe reads at most probeBodyLimit of the answer: a slot that answers
// 200 with an endless body is judged at once and its connection closed, and
// one that trickles its body is judged within the request timeout.
func TestProbeBodyIsBounded(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 4<<10)
		if r.URL.Path == "/trickle" {
			buf = buf[:1]
		}
		for r.Context().Err() == nil {
			n, err := w.Write(buf)
			served.Add(int64(n))
			if err != nil {
				return
			}
			if r.URL.Path == "/trickle" {
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}
	}))
	t.Cleanup(srv.Close)
	start := time.Now()
	if err := (&Checker{Path: "/endless"}).Probe(context.Background(), "127.0.0.1", serverPort(t, srv)); err != nil {
		t.Errorf("endless 200: %v, want healthy", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("endless 200 took %s", d)
	}
	start = time.Now()
	if err := (&Checker{Path: "/trickle", RequestTimeout: 300 * time.Millisecond}).Probe(context.Background(), "127.0.0.1", serverPort(t, srv)); err != nil {
		t.Errorf("trickling 200: %v, want healthy", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("trickling 200 took %s, want about the 300ms request timeout", d)
	}
}

// probeChildEnv makes this test binary, started by
// TestProbeIgnoresProxyEnvironment, run one probe and print its result:
// ProxyFromEnvironment reads the environment once per process, so the
// environment under test is set on a fresh process.
const probeChildEnv = "BGD_PROBE_CHILD_PORT"

func init() {
	port, err := strconv.Atoi(os.Getenv(probeChildEnv))
	if err != nil {
		return
	}
	// 0.0.0.0 reaches this host's listeners, and unlike 127.0.0.1 or
	// localhost it is not exempt from HTTP_PROXY.
	err = (&Checker{Path: "/health"}).Probe(context.Background(), "0.0.0.0", port)
	fmt.Printf("probe: %v\n", err)
	os.Exit(0)
}

// HTTP_PROXY (and http_proxy, ALL_PROXY) in bgd's environment never reroute a
// health probe: the probe asks the slot itself.
func TestProbeIgnoresProxyEnvironment(t *testing.T) {
	slot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // the slot's truth
	}))
	t.Cleanup(slot.Close)
	var proxied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		io.WriteString(w, "all fine, says the proxy")
	}))
	t.Cleanup(proxy.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		probeChildEnv+"="+strconv.Itoa(serverPort(t, slot)),
		"HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "ALL_PROXY="+proxy.URL,
		"NO_PROXY=", "no_proxy=", "REQUEST_METHOD=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe child: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.Contains(got, "answered 503") {
		t.Errorf("probe with HTTP_PROXY set: %q, want the slot's own 503", got)
	}
	if n := proxied.Load(); n != 0 {
		t.Errorf("the probe went through HTTP_PROXY (%d requests)", n)
	}
}
