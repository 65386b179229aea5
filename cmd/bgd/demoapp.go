package main

import (
	"github.com/bgd-dev/bgd/demoapp"
	"github.com/urfave/cli/v2"
)

// demoAppCommand is made anew for every run, like the other commands
// (urfave/cli changes a command as it runs it).
func demoAppCommand() *cli.Command {
	var o demoapp.Options
	return &cli.Command{
		Name:   "demo-app",
		Usage:  "serve the demo app (the embedded default's slot)",
		Hidden: true,
		Before: checks(noArgs, func(c *cli.Context) error {
			if !c.IsSet("port") {
				return usagef("demo-app needs --port")
			}
			return nil
		}),
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Destination: &o.Port},
			&cli.StringFlag{Name: "color", Destination: &o.Color},
			&cli.StringFlag{Name: "release", Destination: &o.Release},
			&cli.DurationFlag{Name: "ready-after", Destination: &o.ReadyAfter, Usage: "answer 503 on /health until this long after start"},
			&cli.DurationFlag{Name: "fail-after", Destination: &o.FailAfter, Usage: "answer 503 on /health from this long after start"},
			&cli.DurationFlag{Name: "delay", Destination: &o.Delay, Usage: "hold every / request this long (one request: /?delay=2s)"},
			&cli.BoolFlag{Name: "hard-stop", Destination: &o.HardStop, Usage: "on SIGTERM close every connection at once, in-flight requests included"},
		},
		Action: func(c *cli.Context) error { return demoapp.Run(c.Context, o) },
	}
}
