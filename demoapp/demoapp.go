// Package demoapp is the app behind `bgd demo-app`: the embedded default's
// slot and the test suite's real process. It serves /health (200 with
// {"ok": true, ...}, or 503 before --ready-after and after --fail-after) and
// / (one line naming colour and release; `/?delay=2s` holds that one answer
// 2 s, at most MaxDelay, to keep a request in flight), CountsPath (how many
// requests / got, copies of shadow traffic among them), and shuts down
// gracefully on SIGTERM so in-flight requests finish, unless --hard-stop.
//
// It can also play a bad release that still passes its health checks:
// from --bad-after on, --error-rate of the answers to every path but
// /health are 500s and each of those answers waits --latency more.
package demoapp

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bgd-dev/bgd/internal/serve"
)

// Options configure the app. Zero values are the defaults.
type Options struct {
	// Port to listen on. Required.
	Port int
	// Host is the address to listen on. Default "127.0.0.1"; "0.0.0.0"
	// serves every address, for load balancers on other hosts.
	Host string
	// Color and Release are reported by / and /health. Default "" each.
	Color, Release string
	// ReadyAfter: /health answers 503 until this long after start. Default 0.
	ReadyAfter time.Duration
	// FailAfter: /health answers 503 from this long after start. Default 0: never.
	FailAfter time.Duration
	// Delay is added to every / response (to hold requests in flight). Default 0.
	Delay time.Duration
	// HardStop: on SIGTERM (ctx ending) close every connection at once,
	// in-flight requests included, as an app without graceful shutdown
	// does. Default false: in-flight requests finish (up to 10 s).
	HardStop bool
	// ErrorRate is the fraction, 0 to 1, of answers to paths other than
	// /health that are 500s once BadAfter has passed. It is exact, not
	// random: the n-th such request (counted from BadAfter on) fails when
	// floor(n*ErrorRate) > floor((n-1)*ErrorRate), so any N consecutive
	// requests hold floor or ceil of N*ErrorRate failures (0.1: every
	// 10th). Default 0.
	ErrorRate float64
	// Latency is added to every answer to a path other than /health once
	// BadAfter has passed. Default 0.
	Latency time.Duration
	// BadAfter is when ErrorRate and Latency begin, after start. Default
	// 0: at once. /health stays healthy throughout: a bad release that
	// passes its health checks.
	BadAfter time.Duration
}

// check refuses options the app cannot honour, naming the flag.
func (o Options) check() error {
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("demo-app: --port %d is out of range", o.Port)
	}
	if !(o.ErrorRate >= 0 && o.ErrorRate <= 1) {
		return fmt.Errorf("demo-app: --error-rate %v is not a fraction from 0 to 1 (0.1: one request in 10 answers 500)", o.ErrorRate)
	}
	if o.Latency < 0 || o.BadAfter < 0 || o.Delay < 0 {
		return fmt.Errorf("demo-app: --latency %s, --bad-after %s and --delay %s may not be negative", o.Latency, o.BadAfter, o.Delay)
	}
	return nil
}

// failsNth reports whether the n-th bad request (from 1) answers 500 at
// rate: the exact spread described at Options.ErrorRate.
func failsNth(n uint64, rate float64) bool {
	if rate <= 0 {
		return false
	}
	if rate >= 1 {
		return true
	}
	return uint64(float64(n)*rate) > uint64(float64(n-1)*rate)
}

// MaxDelay caps the ?delay= of a request, so that no client can hold the
// app's connections for long.
const MaxDelay = 30 * time.Second

// requestDelay is the ?delay= of r: a Go duration, 0 to MaxDelay.
func requestDelay(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("delay")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxDelay {
		return 0, fmt.Errorf("delay=%q: want a duration from 0s to %s, e.g. 2s", v, MaxDelay)
	}
	return d, nil
}

// Handler returns the app's routes; started is the moment the app began.
func Handler(o Options, started time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		up := time.Since(started)
		ok := up >= o.ReadyAfter && (o.FailAfter == 0 || up < o.FailAfter)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Slot", o.Color)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "app": "demo", "color": o.Color, "release": o.Release})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "app": "demo", "color": o.Color, "release": o.Release})
	})
	var bad atomic.Uint64 // requests served since BadAfter
	var counts requestCounts
	mux.HandleFunc(CountsPath, counts.serve)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		counts.count(r, n)
		d, err := requestDelay(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fail := false
		if (o.ErrorRate > 0 || o.Latency > 0) && time.Since(started) >= o.BadAfter {
			d += o.Latency
			fail = failsNth(bad.Add(1), o.ErrorRate)
		}
		if d += o.Delay; d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done(): // the client left, or the app stops hard
				return
			}
		}
		w.Header().Set("X-Slot", o.Color)
		if fail {
			http.Error(w, fmt.Sprintf("demo app: color=%s release=%s: failing as told (--error-rate %v)", o.Color, o.Release, o.ErrorRate),
				http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "demo app: color=%s release=%s\n", o.Color, o.Release)
	})
	return mux
}

// Run serves until ctx is cancelled, then shuts down gracefully (in-flight
// requests finish, bounded by 10 s).
func Run(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cmp.Or(o.Host, "127.0.0.1"), strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("demo-app: %w", err)
	}
	srv := &http.Server{Handler: Handler(o, time.Now()), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	grace := 10 * time.Second
	if o.HardStop {
		grace = 0 // Shutdown's deadline has passed at once: srv.Close
	}
	return serve.Until(ctx, srv, ln, grace)
}
