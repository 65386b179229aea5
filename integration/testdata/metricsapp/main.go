// Command metricsapp is a slot app of the integration tests that has its
// own /metrics (Prometheus text), /monitoring and /_bgd/route, as an app
// behind bgd may: each names the app, its colour and the path, so a test
// tells the app's answer from the proxy's. /health answers 200. It listens
// on 127.0.0.1:$PORT and stops on SIGTERM.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

func main() {
	port, color := os.Getenv("PORT"), os.Getenv("BG_COLOR")
	if port == "" {
		fmt.Fprintln(os.Stderr, "metricsapp: PORT is not set")
		os.Exit(2)
	}
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, `{"ok":true,"color":%q}`, color) })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE metricsapp_requests_total counter\nmetricsapp_requests_total{color=%q} %d\n", color, served.Add(1))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(w, "metricsapp %s %s\n", color, r.URL.Path)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "metricsapp:", err)
		os.Exit(1)
	}
}
