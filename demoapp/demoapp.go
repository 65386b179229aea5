// Package demoapp is the app behind `bgd demo-app`: the embedded default's
// slot and the test suite's real process. It serves /health (200 with
// {"ok": true, ...}, or 503 before --ready-after and after --fail-after) and
// / (one line naming colour and release), and shuts down gracefully on
// SIGTERM so in-flight requests finish.
package demoapp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/bgd-dev/bgd/internal/serve"
)

// Options configure the app. Zero values are the defaults.
type Options struct {
	// Port to listen on, on all loopback addresses (127.0.0.1). Required.
	Port int
	// Color and Release are reported by / and /health. Default "" each.
	Color, Release string
	// ReadyAfter: /health answers 503 until this long after start. Default 0.
	ReadyAfter time.Duration
	// FailAfter: /health answers 503 from this long after start. Default 0: never.
	FailAfter time.Duration
	// Delay is added to every / response (to hold requests in flight). Default 0.
	Delay time.Duration
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if o.Delay > 0 {
			time.Sleep(o.Delay)
		}
		w.Header().Set("X-Slot", o.Color)
		fmt.Fprintf(w, "demo app: color=%s release=%s\n", o.Color, o.Release)
	})
	return mux
}

// Run serves until ctx is cancelled, then shuts down gracefully (in-flight
// requests finish, bounded by 10 s).
func Run(ctx context.Context, o Options) error {
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("demo-app: --port %d is out of range", o.Port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("demo-app: %w", err)
	}
	srv := &http.Server{Handler: Handler(o, time.Now()), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	return serve.Until(ctx, srv, ln, 10*time.Second)
}
