// Command bgd runs blue-green deployments from the load-balancer host.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(runMain()) }

// runMain runs the CLI with a context cancelled by SIGINT or SIGTERM, so that
// `bgd proxy` and `bgd demo-app` shut down gracefully.
func runMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args, os.Stdout, os.Stderr)
}
