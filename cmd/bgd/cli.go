package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:      "bgd",
		Usage:     "blue-green deployments from the load-balancer host",
		Writer:    stdout,
		ErrWriter: stderr,
		Commands:  []*cli.Command{demoAppCommand},
	}
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintln(stderr, "bgd:", err)
		return 1
	}
	return 0
}
